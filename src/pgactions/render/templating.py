"""Sandboxed ``{{ template }}`` rendering of input values.

Rules (docs/templating.md):
- A string that is exactly one ``{{ expression }}`` keeps the expression's type: ``{{trigger.ids}}``
  stays a list, ``{{trigger.age}}`` an int, ``{{now}}`` a timezone-aware datetime.
- Any other string containing ``{{`` is rendered to text.
- Undefined values are errors (TEMPLATE_ERROR naming the missing path), never silently empty.
- The environment is immutable-sandboxed: no access to Python internals, files or the process
  environment; ``range`` and the other generator globals are removed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from sqlalchemy.dialects import postgresql

from pgactions.spec.errors import ActionError

__all__ = ["ENV", "SQLIdentifier", "quote_identifier", "render_expression", "render_value"]

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
_PREPARER = postgresql.dialect().identifier_preparer


def quote_identifier(*parts: str) -> str:
    """``"schema"."table"``: each part quoted by PostgreSQL's rules (SQLAlchemy's preparer)."""
    return ".".join(_PREPARER.quote_identifier(p) for p in parts)


class SQLIdentifier(str):
    """An identifier already quoted by PostgreSQL's rules; only the ``identifier`` filter makes one."""


def _identifier_filter(value: Any) -> SQLIdentifier:
    """``{{ name | identifier }}``: quote a name (or a list of names, joined by dots) for SQL text."""
    parts = value if isinstance(value, (list, tuple)) else [value]
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ActionError("TEMPLATE_ERROR", "the identifier filter takes a non-empty name or list of names")
    return SQLIdentifier(quote_identifier(*parts))


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                        keep_trailing_newline=True)
    for name in ("range", "lipsum", "cycler", "joiner", "namespace"):
        env.globals.pop(name, None)
    env.filters["identifier"] = _identifier_filter
    return env


ENV = _make_environment()


@lru_cache(maxsize=1024)
def _compile_expression(expr: str) -> Any:
    return ENV.compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=1024)
def _compile_template(source: str) -> Any:
    return ENV.from_string(source)


def render_expression(expr: str, context: dict[str, Any]) -> Any:
    """Evaluate one ``{{ }}`` expression body, keeping the value's type."""
    try:
        result = _compile_expression(expr)(**context)
        if isinstance(result, Undefined):
            result._fail_with_undefined_error()
        return result
    except ActionError:
        raise
    except (UndefinedError, TemplateSyntaxError, SecurityError, TypeError, ValueError,
            ArithmeticError, LookupError) as exc:
        raise _template_error(exc, "{{" + expr + "}}", context) from None


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render templates found in *value* (recursing into lists and objects)."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        whole = _WHOLE_EXPRESSION.match(value)
        if whole and "{{" not in whole.group("expr") and "{%" not in value:
            return render_expression(whole.group("expr"), context)
        try:
            return _compile_template(value).render(**context)
        except ActionError:
            raise
        except (UndefinedError, TemplateSyntaxError, SecurityError, TypeError, ValueError,
                ArithmeticError, LookupError) as exc:
            raise _template_error(exc, value, context) from None
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def _template_error(exc: Exception, source: str, context: dict[str, Any]) -> ActionError:
    if isinstance(exc, TemplateSyntaxError):
        return ActionError("TEMPLATE_ERROR", f"invalid template {source!r}: {exc.message}")
    if isinstance(exc, SecurityError):
        return ActionError("TEMPLATE_ERROR", f"template {source!r} is not allowed: {exc}")
    if isinstance(exc, UndefinedError):
        missing = _first_missing_path(source, context)
        if missing:
            return ActionError("TEMPLATE_ERROR", f"{missing} is not defined (in template {source!r})",
                               extra={"path": missing})
    return ActionError("TEMPLATE_ERROR", f"template {source!r} failed: {exc}")


def _first_missing_path(source: str, context: dict[str, Any]) -> str | None:
    """Walk the template's variable paths (a.b[0].c) and name the first that does not resolve."""
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError:
        return None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        chain = _path_of(node)
        if chain is None:
            continue
        current: Any = context
        walked: list[str] = []
        for step in chain:
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
