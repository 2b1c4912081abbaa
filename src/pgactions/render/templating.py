"""Sandboxed ``{{ template }}`` rendering of input values: the public API of templates.

Rules (docs/templating.md):
- A string that is exactly one ``{{ expression }}`` keeps the expression's type: ``{{trigger.ids}}``
  stays a list, ``{{trigger.age}}`` an int, ``{{now}}`` a timezone-aware datetime.
- Any other string containing ``{{`` is rendered to text.
- Undefined values are errors (TEMPLATE_ERROR naming the missing path), never silently empty.
- The environment is immutable-sandboxed: no access to Python internals, files or the process
  environment; ``range`` and the other generator globals are removed.
- What a template may compute is bounded (docs/templating.md, "Limits"): every value it makes is
  measured, the values it makes add up to a total, numbers have a bit limit, and it has a time
  budget.  Going over any of them is TEMPLATE_ERROR naming the limit, as are deep recursion and
  running out of memory.

Where the parts live (all under render/):
- bounds.py: the limits and the budget of one template;
- estimates.py: sizes estimated before ``*``, ``**``, ``+``, ``%`` and text methods make a value;
- bounded_filters.py: Jinja's filters, each checked before and measured after it runs;
- tree_rewrite.py: literals, ``~``, slices and loops measured (the template's tree rewritten);
- sandbox.py: the environment (``ENV``) and the sandbox hooks that spend the budget;
- identifiers.py: ``quote_identifier`` and the ``identifier`` filter;
- template_errors.py: what a failed template is reported as (excerpts.py: text cut for messages).
A template that only names a value (``{{ trigger.email }}``) uses none of the limits' hooks and pays
nothing: its value is the host's own object, returned as it is.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.parser import Parser
from jinja2.runtime import Undefined

from pgactions.render.bounds import (
    MAX_INT_BITS,
    MAX_SECONDS,
    MAX_TOTAL_FACTOR,
    MAX_VALUE_BYTES,
    TemplateLimitError,
    budgeted,
    text_size,
)
from pgactions.render.identifiers import SQLIdentifier, quote_identifier
from pgactions.render.sandbox import ENV
from pgactions.render.template_errors import template_error

__all__ = ["ENV", "MAX_INT_BITS", "MAX_SECONDS", "MAX_TOTAL_FACTOR", "MAX_VALUE_BYTES", "SQLIdentifier",
           "TemplateLimitError", "quote_identifier", "render_expression", "render_value"]

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
# An expression holding none of these only names a value: it cannot compute anything.
_HOOKED = (nodes.Call, nodes.Filter, nodes.BinExpr, nodes.List, nodes.Tuple, nodes.Dict, nodes.Concat,
           nodes.Slice)


# -- compiling (cached) ---------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _compile_expression(expr: str) -> tuple[Any, bool]:
    """The compiled ``{{ expr }}`` and whether it can compute anything (a bare path cannot)."""
    parser = Parser(ENV, expr, state="variable")
    body = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    body.set_environment(ENV)
    computes = isinstance(body, _HOOKED) or any(True for _ in body.find_all(_HOOKED))
    template = ENV.from_string(nodes.Template([nodes.Assign(nodes.Name("result", "store"), body, lineno=1)],
                                              lineno=1))
    return template, computes


@lru_cache(maxsize=1024)
def _compile_template(source: str) -> Any:
    return ENV.from_string(source)


@lru_cache(maxsize=1024)
def _whole_expression(value: str) -> str | None:
    """The body of a value that is exactly one ``{{ expression }}``, else None."""
    whole = _WHOLE_EXPRESSION.match(value)
    if whole and "{{" not in whole.group("expr") and "{%" not in value:
        return whole.group("expr")
    return None


# -- running --------------------------------------------------------------------------------------


def _checked_limits(max_bytes: int, max_seconds: float) -> None:
    if not (isinstance(max_bytes, int) and max_bytes > 0):
        raise ValueError(f"max_bytes must be a positive number of bytes, not {max_bytes!r}")
    if not (isinstance(max_seconds, (int, float)) and 0 < max_seconds < math.inf):
        raise ValueError(f"max_seconds must be a positive, finite number of seconds, not {max_seconds!r}")


def _evaluate(template: Any, context: dict[str, Any]) -> Any:
    ctx = template.new_context(context)
    for _ in template.root_render_func(ctx):
        pass
    return ctx.vars["result"]


def _render_text(template: Any, context: dict[str, Any], max_bytes: int) -> str:
    # The output is bounded before it is joined: each {{ }} is charged by the environment's
    # finalize, the literal text inside loops by the loop, and the rest is the template's own text.
    text = "".join(template.root_render_func(template.new_context(context)))
    if text_size(text) > max_bytes:
        raise TemplateLimitError("size", f"the template's result would be larger than {max_bytes:,} bytes "
                                         "(the size limit for a template value)")
    return text


# -- the API --------------------------------------------------------------------------------------
# The limits are checked only when a caller sets them (`is not`: the defaults need no check, and
# this is every call's path).


def render_expression(expr: str, context: dict[str, Any], max_bytes: int = MAX_VALUE_BYTES,
                      max_seconds: float = MAX_SECONDS) -> Any:
    """Evaluate one ``{{ }}`` expression body, keeping the value's type, within the limits."""
    if max_bytes is not MAX_VALUE_BYTES or max_seconds is not MAX_SECONDS:
        _checked_limits(max_bytes, max_seconds)
    try:
        template, computes = _compile_expression(expr)
        if computes:
            result = budgeted(_evaluate, max_bytes, max_seconds, template, context)
        else:
            result = _evaluate(template, context)  # a bare path: nothing to measure
        if isinstance(result, Undefined):
            result._fail_with_undefined_error()
        return result
    except Exception as exc:
        raise template_error(exc, "{{" + expr + "}}", context) from None


def render_value(value: Any, context: dict[str, Any], max_bytes: int = MAX_VALUE_BYTES,
                 max_seconds: float = MAX_SECONDS) -> Any:
    """Render templates found in *value* (recursing into lists and objects).

    Each string holding a template may take *max_seconds* and make values of up to *max_bytes*
    (adding up to ``MAX_TOTAL_FACTOR`` times that); going over is TEMPLATE_ERROR naming the limit.
    """
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        expr = _whole_expression(value)
        if expr is not None:
            return render_expression(expr, context, max_bytes, max_seconds)
        if max_bytes is not MAX_VALUE_BYTES or max_seconds is not MAX_SECONDS:
            _checked_limits(max_bytes, max_seconds)
        try:
            return budgeted(_render_text, max_bytes, max_seconds, _compile_template(value), context, max_bytes)
        except Exception as exc:
            raise template_error(exc, value, context) from None
    if isinstance(value, (list, dict)):
        return _render_container(value, context, max_bytes, max_seconds)
    return value


def _render_container(value: list[Any] | dict[str, Any], context: dict[str, Any], max_bytes: int,
                      max_seconds: float) -> Any:
    # Apart from render_value: its comprehensions' closure cells would cost every call of it.
    if isinstance(value, list):
        return [render_value(v, context, max_bytes, max_seconds) for v in value]
    return {k: render_value(v, context, max_bytes, max_seconds) for k, v in value.items()}
