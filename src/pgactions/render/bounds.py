"""The limits of one template and the budget that enforces them (docs/templating.md, "Limits").

Each string holding a template gets a :class:`Budget`: the largest value it may make, the total
of all it makes, the largest integer, and a deadline.  The hooks of the sandbox (render/sandbox.py),
the estimates (render/estimates.py) and the wrapped filters (render/bounded_filters.py) spend it;
going over is :class:`TemplateLimitError`, which names the limit.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MappingView
from itertools import chain
from typing import Any

from jinja2.runtime import Undefined

from pgactions.spec.errors import ActionError

__all__ = ["MAX_INT_BITS", "MAX_SECONDS", "MAX_TOTAL_FACTOR", "MAX_VALUE_BYTES", "RENDERING", "Budget",
           "TemplateLimitError", "bounded", "budgeted", "current_budget", "read_items", "text_size",
           "too_many_bits"]

#: The largest value a template may make, in bytes (about the memory it takes; for text, its
#: length in bytes for ASCII).  The default is the runtime's default output cap
#: (``Limits.max_result_bytes``).  ``render_value(..., max_bytes=...)`` may set another.
MAX_VALUE_BYTES = 10 * 1024 * 1024
#: All the values one template makes may add up to this many times ``max_bytes``.
MAX_TOTAL_FACTOR = 4
#: The largest integer a template may make: 4,096 bits (about 1,233 decimal digits).
MAX_INT_BITS = 4096
#: The time one template may take.  ``render_value(..., max_seconds=...)`` may set another.
MAX_SECONDS = 0.5

_EMPTY = sys.getsizeof("")
_sizeof = sys.getsizeof


def text_size(text: str) -> int:
    """The bytes the characters of *text* take (1 to 4 each, as Python stores it)."""
    return _sizeof(text) - _EMPTY


class TemplateLimitError(ActionError):
    """A template went over one of its limits (*limit* is size, total, number, time, depth or memory)."""

    def __init__(self, limit: str, reason: str) -> None:
        super().__init__("TEMPLATE_ERROR", reason, extra={"limit": limit})
        self.limit, self.reason = limit, reason


def too_many_bits() -> TemplateLimitError:
    return TemplateLimitError("number", f"a number it makes would be larger than {MAX_INT_BITS:,} bits "
                                        "(the size limit for a template number)")


# Text that JSON and repr write as it is (anything else may become an escape).
_PLAIN_TEXT = re.compile(r"[^\x20-\x7e]|[\"\\<>&']")
# What is measured item by item (dict views too: their text is the whole dict's).
_CONTAINERS = (list, tuple, dict, set, frozenset, MappingView)


def _escaped_text(text: str) -> int:
    if not text.isascii():
        return 12 * len(text) + 2
    if _PLAIN_TEXT.search(text) is None:
        return len(text) + 2
    return 6 * len(text) + 2


class Budget:
    """What one template (one string holding ``{{ }}``) may still spend: bytes and time."""

    __slots__ = ("max_bytes", "max_total", "seconds", "deadline", "total", "steps", "weights", "escaped")

    def __init__(self, max_bytes: int, seconds: float) -> None:
        self.max_bytes, self.max_total, self.seconds = max_bytes, max_bytes * MAX_TOTAL_FACTOR, seconds
        self.deadline = time.monotonic() + seconds
        self.total = 0  # bytes of the values made so far
        self.steps = 0  # loop steps and outputs, to look at the clock every so many of them
        # id → (container, weight): each container walked once (made on first use)
        self.weights: dict[int, tuple[Any, int]] | None = None
        self.escaped: dict[int, tuple[Any, int]] | None = None

    # -- spending

    def too_big(self) -> TemplateLimitError:
        return TemplateLimitError("size", f"a value it makes would be larger than {self.max_bytes:,} bytes "
                                          "(the size limit for a template value)")

    def over_total(self) -> TemplateLimitError:
        return TemplateLimitError("total", f"the values it makes add up to more than {self.max_total:,} bytes "
                                           "(the total size limit for a template)")

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError("time", f"it ran for more than {self.seconds:g} s "
                                             "(the time limit for a template)")

    def check(self, size: int) -> None:
        """Refuse to make a value of about *size* bytes (an estimate made before making it)."""
        if size > self.max_bytes:
            raise self.too_big()
        if self.total + size > self.max_total:
            raise self.over_total()

    def charge(self, size: int) -> None:
        """Account for a value of *size* bytes that was made."""
        if size > self.max_bytes:
            raise self.too_big()
        self.total += size
        if self.total > self.max_total:
            raise self.over_total()

    def made(self, value: Any) -> Any:
        """Account for a value the template just made; return it."""
        kind = type(value)
        if kind is str:
            self.charge(_sizeof(value) - _EMPTY)
        elif kind is int:
            bits = value.bit_length()
            if bits > MAX_INT_BITS:
                raise too_many_bits()
            self.charge(8 + (bits >> 3))
        elif kind is not bool and kind is not float and value is not None:
            self.charge(self.weight(value))
        return value

    # -- sizes

    def weight(self, value: Any) -> int:
        """About the bytes *value* holds, counting a shared part each time it appears (so a list
        holding the same big list twice weighs twice as much: that is what turning it into text,
        comparing or hashing it costs).  Over ``max_bytes`` is refused on the way."""
        kind = type(value)
        if kind is str:
            return _sizeof(value) - _EMPTY
        if kind is int or kind is bool:
            return 8 + (value.bit_length() >> 3)
        if kind is float or value is None:
            return 8
        if isinstance(value, _CONTAINERS):
            if self.weights is None:
                self.weights = {}
            return self._walk(value, self.weights, self.weight)
        if isinstance(value, str):
            return _sizeof(value) - _EMPTY
        if isinstance(value, (bytes, bytearray)):
            return len(value)
        if isinstance(value, int):
            return 8 + (value.bit_length() >> 3)
        return 16

    def escaped_weight(self, value: Any) -> int:
        """Like :meth:`weight`, but with text as JSON or ``repr`` could write it (escapes: up to 6
        characters for one, 12 for one outside the BMP)."""
        if isinstance(value, str):
            return _escaped_text(value)
        if isinstance(value, _CONTAINERS):
            if self.escaped is None:
                self.escaped = {}
            return self._walk(value, self.escaped, self.escaped_weight)
        return self.weight(value)

    def _walk(self, value: Any, memo: dict[int, tuple[Any, int]], measure: Callable[[Any], int]) -> int:
        hit = memo.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        limit = self.max_bytes
        escaped = memo is self.escaped
        total = 64
        # A dict entry costs 16 (its key's place and its value's), a list item 8; leaves are
        # measured inline (this runs over every item of the data a template builds or hands on).
        plain = _PLAIN_TEXT.search
        for item in chain.from_iterable(value.items()) if isinstance(value, dict) else value:
            kind = type(item)
            if kind is str:
                if not escaped:
                    total += 8 + _sizeof(item) - _EMPTY
                elif item.isascii() and plain(item) is None:
                    total += 10 + len(item)
                else:
                    total += 8 + _escaped_text(item)
            elif kind is int:
                total += 16 + (item.bit_length() >> 3)
            elif kind is float or kind is bool or item is None:
                total += 16
            elif kind is dict or kind is list or kind is tuple:
                total += 8 + self._walk(item, memo, measure)
            else:
                total += 8 + measure(item)
            if total > limit:
                raise self.too_big()
        memo[id(value)] = (value, total)
        return total

    def text_weight(self, value: Any) -> int:
        """About the bytes of ``str(value)``: text as it is, containers as their repr."""
        if isinstance(value, str):
            return _sizeof(value) - _EMPTY
        if isinstance(value, _CONTAINERS):
            return self.escaped_weight(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return 2 + value.bit_length() * 3 // 10
        return self.weight(value) + 24  # floats, dates, None …: a few characters

    def text(self, value: Any) -> str:
        """``str(value)`` for an estimate, refused first when it would be too long."""
        if isinstance(value, str):
            return value
        self.check(self.text_weight(value))
        return str(value)


# -- the budget of this thread's template ---------------------------------------------------------

#: ``RENDERING.budget``: the budget of the template this thread is rendering (None between renders).
RENDERING = threading.local()


def current_budget() -> Budget:
    """The budget of the template this thread is rendering.  Outside a render (a direct use of
    ``ENV``) every operation gets a fresh default budget: the size limits still hold."""
    budget: Budget | None = getattr(RENDERING, "budget", None)
    return budget if budget is not None else Budget(MAX_VALUE_BYTES, MAX_SECONDS)


def budgeted(run: Callable[..., Any], max_bytes: int, max_seconds: float, *args: Any) -> Any:
    """``run(*args)`` with a budget of its own (the previous one back afterwards: renders nest)."""
    previous = getattr(RENDERING, "budget", None)
    RENDERING.budget = Budget(max_bytes, max_seconds)
    try:
        return run(*args)
    finally:
        RENDERING.budget = previous


# -- reading iterables within the budget ----------------------------------------------------------


def bounded(budget: Budget, iterable: Iterable[Any], per_item: int = 8) -> Iterator[Any]:
    """Iterate *iterable*, charging *per_item* bytes a step and looking at the clock every 1,024."""
    if per_item and isinstance(iterable, str) and not iterable.isascii():
        per_item += 72  # each character becomes a new string object (when something may keep it)
    # Spent inline, not through charge(): this runs once per loop step, and per_item is no value's
    # size, so the size limit does not apply to it.
    for item in iterable:
        budget.total += per_item
        if budget.total > budget.max_total:
            raise budget.over_total()
        budget.steps += 1
        if not budget.steps & 1023:
            budget.tick()
        yield item


def read_items(budget: Budget, iterable: Any) -> Any:
    """*iterable* as a list or tuple, made within the budget (lists and tuples are used as they are)."""
    if type(iterable) is list or type(iterable) is tuple:
        return iterable
    if isinstance(iterable, str):
        budget.check(len(iterable) * (8 if iterable.isascii() else 80))
        return list(iterable)
    if isinstance(iterable, Undefined):
        return iterable  # let the filter raise its own error
    return list(bounded(budget, iterable))
