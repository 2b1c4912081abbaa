"""The render stage: every input's templates rendered once, before any handler runs.

After this stage the inputs are data: a value that arrives from the flow holding ``{{ 7*7 }}``
stays that text, whatever runs it later (a batch, a transaction's step, a bulk write).  Inputs
the manifest names in ``execution.templates`` are left as written: ``sql`` fields (SQL text,
whose templates become bound ``$n`` parameters in :func:`pgactions.render.sqltext.bind_sql`) and
``deferred`` ones (a transaction's steps, rendered one by one with earlier steps' outputs).
"""

from __future__ import annotations

from typing import Any

import orjson

from pgactions.render.templating import render_value

__all__ = ["render_inputs"]

_SCAN_ABOVE = 64  # items in a list past which one look at its JSON text beats walking it


def render_inputs(inputs: dict[str, Any], context: dict[str, Any], kept: dict[str, str]) -> dict[str, Any]:
    """*inputs* with their templates rendered, except the fields named in *kept*."""
    return {name: value if name in kept else _render(value, context) for name, value in inputs.items()}


_SCALARS = (int, float, bool, type(None))


def _render(value: Any, context: dict[str, Any]) -> Any:
    kind = type(value)
    if kind is str:
        if "{{" not in value and "{%" not in value:
            return value  # the common case, without a call
    elif kind is list:
        if len(value) > _SCAN_ABOVE:
            if not _holds_template(value):
                return value  # thousands of rows from a spreadsheet seldom hold a template
        else:
            for item in value:
                if type(item) not in _SCALARS:
                    break
            else:
                return value[:]  # parameters such as [42, true]: nothing to render (a fresh list, as rendering makes)
    elif kind in _SCALARS:
        return value
    return render_value(value, context)


def _holds_template(value: Any) -> bool:
    try:
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return True  # cannot tell cheaply: walk it
    return b"{{" in text or b"{%" in text
