"""The template environment: Jinja's immutable sandbox, with every way a template computes
something measured against its budget (docs/templating.md, "The sandbox" and "Limits").

How the bounds are wired into the sandbox:
- ``call_binop`` (``*``, ``**``, ``+``, ``%``), ``call`` (every function and method call) and
  ``wrap_str_format`` (``str.format``) are the sandbox's own hooks;
- every filter is wrapped (render/bounded_filters.py; marked ``pass_context``, so none is folded
  at compile time);
- ``finalize`` sees every ``{{ }}`` output of a text template before it is turned into text;
- before code generation the template's tree is rewritten (render/tree_rewrite.py) so that what
  Jinja builds inline passes through internal filters that measure it.
A template that only names a value (``{{ trigger.email }}``) uses none of these and pays nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, SecurityError
from markupsafe import EscapeFormatter, Markup

from pgactions.render.bounded_filters import PRE_FILTERS, REPLACED_FILTERS, bounded_filter
from pgactions.render.bounds import RENDERING, Budget, current_budget, text_size
from pgactions.render.estimates import add_estimate, guard_call, mul_estimate, number, percent_estimate, pow_estimate
from pgactions.render.identifiers import identifier_filter
from pgactions.render.tree_rewrite import INLINE_FILTERS, MeasureInline

__all__ = ["ENV"]


class _LimitedFormatter(SandboxedFormatter):
    """``str.format`` for templates: each field is measured before it is formatted."""

    def __init__(self, env: Any, budget: Budget, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._budget, self._made = budget, 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a", "s"):
            self._budget.check(self._budget.text_weight(value) * (1 if conversion == "s" else 4))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = self._budget
        widths = sum(number(d) for d in re.findall(r"\d+", format_spec))
        budget.check(self._made + budget.text_weight(value) + widths + 16 * len(format_spec))
        out = super().format_field(value, format_spec)
        self._made += text_size(out)
        return out


class _LimitedEscapeFormatter(_LimitedFormatter, EscapeFormatter):
    pass


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every way a template computes something measured."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.tick()
        if operator == "*":
            mul_estimate(budget, left, right)
        elif operator == "**":
            pow_estimate(left, right)
        elif operator == "+":
            add_estimate(budget, left, right)
        elif operator == "%" and isinstance(left, (str, bytes)):
            budget.check(percent_estimate(budget, left, right))
        result = self.binop_table[operator](left, right)
        if result is left or result is right:
            return result
        return budget.made(result)

    def call(self, context: Context, func: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.tick()
        if not self.is_safe_callable(func):
            raise SecurityError(f"{func!r} is not safely callable")
        args = guard_call(budget, func, args, kwargs)
        result = context.call(func, *args, **kwargs)
        if result is getattr(func, "__self__", None):
            return result
        return budget.made(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` / ``format_map`` through :class:`_LimitedFormatter` (as Jinja's own,
        which this replaces, but measured)."""
        if not callable(value) or getattr(value, "__name__", None) not in ("format", "format_map"):
            return None
        owner = getattr(value, "__self__", None)
        if not isinstance(owner, str):
            return None
        budget = current_budget()
        formatter: _LimitedFormatter
        if isinstance(owner, Markup):
            formatter = _LimitedEscapeFormatter(self, budget, escape=owner.escape)
        else:
            formatter = _LimitedFormatter(self, budget)
        text_type = type(owner)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return text_type(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        MeasureInline(self).visit(source)
        return super()._generate(source, name, filename, defer_init)


def _finalize(value: Any) -> Any:
    """Every ``{{ }}`` of a text template, just before it becomes text: charged (and at least the
    8 bytes of its place in the output), so what a template writes is bounded by the total."""
    budget = getattr(RENDERING, "budget", None) or current_budget()
    kind = type(value)
    if kind is str:
        size = text_size(value) + 8
    elif kind is int:
        size = 10 + value.bit_length() * 3 // 10
    else:
        size = budget.text_weight(value) + 8
    budget.charge(size)
    budget.steps += 1
    if not budget.steps & 255:
        budget.tick()
    return value


def _make_environment() -> _BoundedEnvironment:
    env = _BoundedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                              finalize=_finalize)
    for name in ("range", "lipsum", "cycler", "joiner", "namespace"):
        env.globals.pop(name, None)
    env.filters["identifier"] = identifier_filter
    env.filters.update(REPLACED_FILTERS)
    env.filters = {name: bounded_filter(func, PRE_FILTERS.get(name)) for name, func in env.filters.items()}
    env.filters.update(INLINE_FILTERS)
    return env


#: The one environment every template is compiled in.
ENV = _make_environment()
