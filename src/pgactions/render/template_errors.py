"""What a failed template is reported as: always TEMPLATE_ERROR (or the ActionError a filter raised
itself), naming the template; a missing value names its path, a limit names the limit."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import SecurityError

from pgactions.render.bounds import TemplateLimitError
from pgactions.render.excerpts import shown
from pgactions.render.sandbox import ENV
from pgactions.spec.errors import ActionError

__all__ = ["template_error"]


def template_error(exc: BaseException, source: str, context: dict[str, Any]) -> ActionError:
    """The error to report for *exc*, raised while rendering the template *source*.

    Whatever a sandboxed template raises is the template's failure (a filter given a value of the
    wrong type may raise AttributeError or AssertionError as well as TypeError)."""
    if isinstance(exc, TemplateLimitError):
        return _stopped(source, exc.limit, exc.reason)
    if isinstance(exc, ActionError):
        return exc  # raised on purpose (the identifier filter, quote_identifier): already says why
    if isinstance(exc, RecursionError):
        return _stopped(source, "depth", "it nests or recurses too deeply")
    if isinstance(exc, MemoryError):
        return _stopped(source, "memory", "it ran out of memory")
    if isinstance(exc, TemplateSyntaxError):
        return ActionError("TEMPLATE_ERROR", f"invalid template {shown(source)}: {exc.message}")
    if isinstance(exc, SecurityError):
        return ActionError("TEMPLATE_ERROR", f"template {shown(source)} is not allowed: {exc}")
    if isinstance(exc, UndefinedError):
        missing = _first_missing_path(source, context)
        if missing:
            return ActionError("TEMPLATE_ERROR", f"{missing} is not defined (in template {shown(source)})",
                               extra={"path": missing})
    return ActionError("TEMPLATE_ERROR", f"template {shown(source)} failed: {shown(str(exc), 300)[1:-1]}")


def _stopped(source: str, limit: str, reason: str) -> ActionError:
    return ActionError("TEMPLATE_ERROR", f"template {shown(source)} was stopped: {reason}",
                       extra={"limit": limit})


def _first_missing_path(source: str, context: dict[str, Any]) -> str | None:
    """Walk the template's variable paths (a.b[0].c) and name the first that does not resolve."""
    try:
        tree = ENV.parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        path = _path_of(node)
        if path is None:
            continue
        current: Any = context
        walked: list[str] = []
        for step in path:
            walked.append(step if isinstance(step, str) else f"[{step}]")
            try:
                current = current[step]
            except (KeyError, IndexError, TypeError):
                return ".".join(walked).replace(".[", "[")
    return None


def _path_of(node: nodes.Node) -> list[Any] | None:
    if isinstance(node, nodes.Name):
        return [node.name]
    if isinstance(node, nodes.Getattr):
        base = _path_of(node.node)
        return None if base is None else [*base, node.attr]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _path_of(node.node)
        return None if base is None else [*base, node.arg.value]
    return None
