"""Sandboxed ``{{ template }}`` rendering of input values.

Rules (docs/templating.md):
- A string that is exactly one ``{{ expression }}`` keeps the expression's type: ``{{trigger.ids}}``
  stays a list, ``{{trigger.age}}`` an int, ``{{now}}`` a timezone-aware datetime.
- Any other string containing ``{{`` is rendered to text.
- Undefined values are errors (TEMPLATE_ERROR naming the missing path), never silently empty.
- The environment is immutable-sandboxed: no access to Python internals, files or the process
  environment; ``range`` and the other generator globals are removed.
- What a template may compute is bounded (docs/templating.md, "Limits"): every value it makes is
  measured (estimated *before* it is made wherever one operation could make a big one: ``**``,
  ``*``, ``%``, ``~``, string methods, filters), the values it makes add up to a total, numbers
  have a bit limit, and it has a time budget checked at each call, operator, filter, output and
  loop step.  Going over any of them is TEMPLATE_ERROR naming the limit, as are deep recursion
  and running out of memory.

How the bounds are wired into Jinja's sandbox:
- ``call_binop`` (``*``, ``**``, ``+``, ``%``), ``call`` (every function and method call) and
  ``wrap_str_format`` (``str.format``) are the sandbox's own hooks;
- every filter is wrapped (and marked ``pass_context``, so none is folded at compile time);
- ``finalize`` sees every ``{{ }}`` output of a text template before it is turned into text;
- before code generation the template's tree is rewritten so that list/tuple/dict literals,
  ``~``, slices and ``{% for %}`` iterables pass through internal filters that measure them.
A template that only names a value (``{{ trigger.email }}``) uses none of these and pays nothing:
its value is the host's own object, returned as it is.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView
from functools import lru_cache, update_wrapper
from itertools import chain
from typing import Any

from jinja2 import (
    StrictUndefined,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    pass_context,
    pass_environment,
)
from jinja2.filters import make_attrgetter
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, SecurityError
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup
from sqlalchemy.dialects import postgresql

from pgactions.spec.errors import ActionError

__all__ = ["ENV", "MAX_INT_BITS", "MAX_SECONDS", "MAX_TOTAL_FACTOR", "MAX_VALUE_BYTES", "SQLIdentifier",
           "TemplateLimitError", "quote_identifier", "render_expression", "render_value"]

# -- limits ---------------------------------------------------------------------------------------

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

# Filters that do Python-level work per word or per element take at most this much input (at
# these sizes each takes well under 0.2 s): wordwrap, urlize, title, pprint.
_SLOW_FILTER_BYTES = 128 * 1024
# sort, unique, groupby and dictsort take at most this many items.
_MAX_SORT_ITEMS = 100_000
# striptags copies the text once per tag: (tags x length) byte copies at most.
_MAX_STRIPTAGS_WORK = 2 * 10**9

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
# numeric_dollar: a dialect whose placeholders are $n does not double "%" in names (the pyformat
# default does, so table "50%" would be named "50%%" in SQL sent without parameters).
_PREPARER = postgresql.dialect(paramstyle="numeric_dollar").identifier_preparer
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_EMPTY = sys.getsizeof("")
_sizeof = sys.getsizeof


# -- identifiers ----------------------------------------------------------------------------------


def quote_identifier(*parts: str) -> str:
    """``"schema"."table"``: each part quoted by PostgreSQL's rules (SQLAlchemy's preparer).

    A part holding a NUL character, or longer than 63 bytes in UTF-8, is INVALID_INPUT: PostgreSQL
    cannot store the first and silently cuts the second to 63 bytes, which could name another table.
    """
    for part in parts:
        if "\x00" in part:
            raise ActionError("INVALID_INPUT", f"the name {_shown(part)} contains a NUL character, "
                                               "which a PostgreSQL name cannot hold")
        if len(part) > _MAX_IDENTIFIER_BYTES // 4:  # shorter ones are at most 60 bytes in UTF-8
            encoded = part.encode("utf-8", "surrogatepass")
            if len(encoded) > _MAX_IDENTIFIER_BYTES:
                cut = encoded[:_MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")
                raise ActionError(
                    "INVALID_INPUT",
                    f"the name {_shown(part)} is {len(encoded)} bytes long; PostgreSQL names are at most "
                    f"{_MAX_IDENTIFIER_BYTES} bytes (PostgreSQL would cut it to {cut!r}, which may name "
                    "something else)")
    return ".".join(_PREPARER.quote_identifier(p) for p in parts)


class SQLIdentifier(str):
    """An identifier already quoted by PostgreSQL's rules; only the ``identifier`` filter makes one."""


def _identifier_filter(value: Any) -> SQLIdentifier:
    """``{{ name | identifier }}``: quote a name (or a list of names, joined by dots) for SQL text."""
    parts = value if isinstance(value, (list, tuple)) else [value]
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ActionError("TEMPLATE_ERROR", "the identifier filter takes a non-empty name or list of names")
    return SQLIdentifier(quote_identifier(*parts))


def _shown(text: str, limit: int = 100) -> str:
    """*text* for an error message: repr'd, cut after *limit* characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} characters)"


# -- the budget of one template -------------------------------------------------------------------


class TemplateLimitError(ActionError):
    """A template went over one of its limits (*limit* is size, total, number, time, depth or memory)."""

    def __init__(self, limit: str, reason: str) -> None:
        super().__init__("TEMPLATE_ERROR", reason, extra={"limit": limit})
        self.limit, self.reason = limit, reason


class _Budget:
    """What one template (one string holding ``{{ }}``) may still spend: bytes and time."""

    __slots__ = ("max_bytes", "max_total", "seconds", "deadline", "total", "steps", "weights", "escaped")

    def __init__(self, max_bytes: int, seconds: float) -> None:
        self.max_bytes, self.max_total, self.seconds = max_bytes, max_bytes * MAX_TOTAL_FACTOR, seconds
        self.deadline = time.monotonic() + seconds
        self.total = 0  # bytes of the values made so far
        self.steps = 0  # loop steps, to look at the clock every 1,024 of them
        # id → (container, weight): each container walked once (made on first use)
        self.weights: dict[int, tuple[Any, int]] | None = None
        self.escaped: dict[int, tuple[Any, int]] | None = None

    # errors
    def too_big(self) -> TemplateLimitError:
        return TemplateLimitError("size", f"a value it makes would be larger than {self.max_bytes:,} bytes "
                                          "(the size limit for a template value)")

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

    def over_total(self) -> TemplateLimitError:
        return TemplateLimitError("total", f"the values it makes add up to more than {self.max_total:,} bytes "
                                           "(the total size limit for a template)")

    def charge(self, size: int) -> None:
        if size > self.max_bytes:
            raise self.too_big()
        self.total += size
        if self.total > self.max_total:
            raise self.over_total()

    def made(self, value: Any) -> Any:
        """Account for a value the template just made; return it."""
        kind = type(value)
        if kind is str:
            size = _sizeof(value) - _EMPTY
            if size > self.max_bytes:
                raise self.too_big()
            self.total += size
            if self.total > self.max_total:
                raise self.over_total()
        elif kind is int:
            bits = value.bit_length()
            if bits > MAX_INT_BITS:
                raise _too_many_bits()
            self.charge(8 + (bits >> 3))
        elif kind is not bool and kind is not float and value is not None:
            self.charge(self.weight(value))
        return value

    # sizes
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


def _too_many_bits() -> TemplateLimitError:
    return TemplateLimitError("number", f"a number it makes would be larger than {MAX_INT_BITS:,} bits "
                                        "(the size limit for a template number)")


_PLAIN_TEXT = re.compile(r"[^\x20-\x7e]|[\"\\<>&']")


def _escaped_text(text: str) -> int:
    if not text.isascii():
        return 12 * len(text) + 2
    if _PLAIN_TEXT.search(text) is None:
        return len(text) + 2
    return 6 * len(text) + 2


# What is measured item by item (dict views too: their text is the whole dict's).
_CONTAINERS = (list, tuple, dict, set, frozenset, MappingView)

_LOCAL = threading.local()


def _budget() -> _Budget:
    """The budget of the template this thread is rendering.  Outside a render (a direct use of
    ``ENV``) every operation gets a fresh default budget: the size limits still hold."""
    budget: _Budget | None = getattr(_LOCAL, "budget", None)
    return budget if budget is not None else _Budget(MAX_VALUE_BYTES, MAX_SECONDS)


def _bounded(budget: _Budget, iterable: Iterable[Any], per_item: int = 8) -> Iterator[Any]:
    """Iterate *iterable*, charging *per_item* bytes a step and looking at the clock every 1,024."""
    if per_item and isinstance(iterable, str) and not iterable.isascii():
        per_item += 72  # each character becomes a new string object (when something may keep it)
    for item in iterable:
        budget.total += per_item
        if budget.total > budget.max_total:
            raise budget.over_total()
        budget.steps += 1
        if not budget.steps & 1023:
            budget.tick()
        yield item


def _items(budget: _Budget, iterable: Any) -> Any:
    """*iterable* as a list or tuple, made within the budget (lists and tuples are used as they are)."""
    if type(iterable) is list or type(iterable) is tuple:
        return iterable
    if isinstance(iterable, str):
        budget.check(len(iterable) * (8 if iterable.isascii() else 80))
        return list(iterable)
    if isinstance(iterable, Undefined):
        return iterable  # let the filter raise its own error
    return list(_bounded(budget, iterable))


# -- operators, calls, str.format -----------------------------------------------------------------


def _mul_estimate(budget: _Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() - 1 > MAX_INT_BITS:
            raise _too_many_bits()
        return
    if isinstance(left, int):
        left, right = right, left
    if not isinstance(right, int) or right <= 0:
        return
    if isinstance(left, (str, bytes)):
        budget.check(len(left) * right * (1 if left.isascii() else 4))
    elif isinstance(left, (list, tuple)):
        budget.check(budget.weight(left) * right)


def _pow_estimate(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0:
        bits = abs(left).bit_length()
        if bits > 1 and (bits - 1) * right + 1 > MAX_INT_BITS:  # |left| ≥ 2**(bits-1)
            raise _too_many_bits()


def _add_estimate(budget: _Budget, left: Any, right: Any) -> None:
    if isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
        budget.check(len(left) + len(right) if left.isascii() and right.isascii() else
                     4 * (len(left) + len(right)))
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        budget.check(budget.weight(left) + budget.weight(right))


_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_LONG_NUMBER = re.compile(r"\d{4,}")


def _number(digits: str) -> int:
    return int(digits) if len(digits) < 19 else 10**19


def _percent_estimate(budget: _Budget, fmt: str | bytes, args: Any) -> int:
    """About the length of ``fmt % args`` (printf-style), before making it."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    factor = 5 if isinstance(fmt, Markup) else 1  # Markup escapes what it inserts
    size = len(text) * (1 if text.isascii() else 4)
    if isinstance(args, tuple):
        inserted = sum(budget.text_weight(a) for a in args)
        if "*" not in text and _LONG_NUMBER.search(text) is None:
            quick = size + factor * inserted + text.count("%") * 999  # widths are at most 999
            if quick <= budget.max_bytes:
                return quick
    elif isinstance(args, Mapping):
        inserted = 0
    else:
        inserted = budget.text_weight(args)
    total = size + factor * inserted
    stars = "*" in text
    for count, match in enumerate(_PERCENT_SPEC.finditer(text)):
        name, width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        for number in (width, precision):
            if number and number != "*":
                total += _number(number)
        if isinstance(args, Mapping):
            total += factor * budget.text_weight(args if name is None else args.get(name))
        if total > budget.max_bytes:
            return total
        if not count & 1023:
            budget.tick()
    if stars and isinstance(args, tuple):
        total += sum(abs(a) for a in args if isinstance(a, int) and a.bit_length() < 63)
        total += sum(10**19 for a in args if isinstance(a, int) and a.bit_length() >= 63)
    return total


def _char_width(*texts: Any) -> int:
    return 1 if all(not isinstance(t, str) or t.isascii() for t in texts) else 4


_LINE_BREAKS = ("\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _est_pad(s: Any, width: int, fillchar: Any = " ", /) -> int:
    return max(len(s), width) * _char_width(s, fillchar)


def _est_zfill(s: Any, width: int, /) -> int:
    return max(len(s), width) * _char_width(s)


def _est_expandtabs(s: Any, tabsize: int = 8) -> int:
    tab = "\t" if isinstance(s, str) else b"\t"
    return (len(s) + s.count(tab) * max(tabsize, 0)) * _char_width(s)


def _est_replace(s: Any, old: Any, new: Any, count: int = -1, /) -> int:
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return (len(s) + hits * max(len(new) - len(old), 0)) * _char_width(s, new)


def _est_split(s: Any, sep: Any = None, maxsplit: int = -1) -> int:
    parts = s.count(sep) + 1 if sep else len(s) // 2 + 1
    if maxsplit >= 0:
        parts = min(parts, maxsplit + 1)
    return parts * 64 + len(s) * _char_width(s)


def _est_splitlines(s: Any, keepends: bool = False) -> int:
    breaks = _LINE_BREAKS if isinstance(s, str) else (b"\n", b"\r")
    parts = sum(s.count(b) for b in breaks) + 1
    return parts * 64 + len(s) * _char_width(s)


def _est_translate(s: Any, table: Any, /) -> int:
    values = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
    longest = max((len(v) if isinstance(v, (str, bytes)) else 1 for v in values), default=1)
    return len(s) * max(longest, 1) * 4


def _est_encode(s: Any, encoding: str = "utf-8", errors: str = "strict") -> int:
    plain = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-16", "utf-32", "ascii", "latin-1")
    return len(s) * (4 if plain else 10)


def _est_hex(s: Any, sep: Any = None, bytes_per_sep: int = 1) -> int:
    return len(s) * 3


# Methods of str (and bytes, and Markup) that can make a value much larger than their input.
_TEXT_METHODS: dict[str, Callable[..., int]] = {
    "center": _est_pad, "ljust": _est_pad, "rjust": _est_pad, "zfill": _est_zfill,
    "expandtabs": _est_expandtabs, "replace": _est_replace, "split": _est_split, "rsplit": _est_split,
    "splitlines": _est_splitlines, "translate": _est_translate, "encode": _est_encode, "hex": _est_hex,
}
_CALL_MARKERS = ("_loop_vars", "_block_vars")


def _guard_call(budget: _Budget, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call that would make a value over the limits; may return new *args* (an
    iterable read within the budget)."""
    owner = getattr(func, "__self__", None)
    if owner is None:
        return args
    name = getattr(func, "__name__", "")
    plain_kwargs = {k: v for k, v in kwargs.items() if k not in _CALL_MARKERS} if kwargs else kwargs
    if isinstance(owner, (str, bytes)):
        if name == "join" and len(args) == 1 and not plain_kwargs:
            parts = _items(budget, args[0])
            if isinstance(parts, (list, tuple)):
                size = sum(budget.text_weight(p) for p in parts) + len(owner) * max(len(parts) - 1, 0) \
                    * _char_width(owner) + 8 * len(parts)
                budget.check(size * (5 if isinstance(owner, Markup) else 1))
            return (parts,)
        estimate = _TEXT_METHODS.get(name)
        if estimate is not None:
            try:
                size = estimate(owner, *args, **plain_kwargs)
            except (TypeError, ValueError, AttributeError):
                return args  # the call itself will say what is wrong with its arguments
            budget.check(size * (5 if isinstance(owner, Markup) else 1))
        return args
    if name == "strftime" and args and isinstance(args[0], str):
        budget.check(16 * len(args[0]) + 64)
    elif name == "to_bytes":
        length = args[0] if args else plain_kwargs.get("length", 1)
        if isinstance(length, int):
            budget.check(length)
    elif name == "fromkeys" and args:
        keys = _items(budget, args[0])
        if isinstance(keys, (list, tuple)):
            budget.check(len(keys) * (24 + (budget.weight(args[1]) if len(args) > 1 else 0)))
        return (keys, *args[1:])
    return args


class _LimitedFormatter(SandboxedFormatter):
    """``str.format`` for templates: each field is measured before it is formatted."""

    def __init__(self, env: Any, budget: _Budget, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._budget, self._made = budget, 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a", "s"):
            self._budget.check(self._budget.text_weight(value) * (1 if conversion == "s" else 4))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = self._budget
        widths = sum(_number(d) for d in re.findall(r"\d+", format_spec))
        budget.check(self._made + budget.text_weight(value) + widths + 16 * len(format_spec))
        out = super().format_field(value, format_spec)
        self._made += _sizeof(out) - _EMPTY
        return out


class _LimitedEscapeFormatter(_LimitedFormatter, EscapeFormatter):
    pass


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every way a template computes something measured."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        if operator == "*":
            _mul_estimate(budget, left, right)
        elif operator == "**":
            _pow_estimate(left, right)
        elif operator == "+":
            _add_estimate(budget, left, right)
        elif operator == "%" and isinstance(left, (str, bytes)):
            budget.check(_percent_estimate(budget, left, right))
        result = self.binop_table[operator](left, right)
        if result is left or result is right:
            return result
        return budget.made(result)

    def call(self, context: Context, func: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if not self.is_safe_callable(func):
            raise SecurityError(f"{func!r} is not safely callable")
        args = _guard_call(budget, func, args, kwargs)
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
        budget = _budget()
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
        _Guard(self).visit(source)
        return super()._generate(source, name, filename, defer_init)


class _Guard(NodeTransformer):
    """Rewrites a template's tree so that what Jinja builds inline is measured too: list, tuple and
    dict literals, ``~``, slices, and each ``{% for %}`` loop's iterable."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def _through(self, node: Any, name: str, *args: Any) -> nodes.Expr:
        wrapped = nodes.Filter(node, name, [nodes.Const(a) for a in args], [], None, None, lineno=node.lineno)
        wrapped.set_environment(self.env)
        return wrapped

    def _constant(self, node: Any) -> bool:
        try:
            node.as_const(nodes.EvalContext(self.env))
        except Exception:  # Impossible, or an error to report at run time
            return False
        return True

    def _literal(self, node: Any) -> Any:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load" or self._constant(node):
            return node
        return self._through(node, "_pgactions_made")

    visit_List = visit_Tuple = visit_Dict = _literal

    def visit_Concat(self, node: nodes.Concat) -> Any:
        self.generic_visit(node)
        if self._constant(node):
            return node
        return self._through(nodes.Tuple(node.nodes, "load", lineno=node.lineno), "_pgactions_concat")

    def visit_Getitem(self, node: nodes.Getitem) -> Any:
        self.generic_visit(node)
        if node.ctx == "load" and isinstance(node.arg, nodes.Slice):
            return self._through(node, "_pgactions_made")
        return node

    def visit_For(self, node: nodes.For) -> Any:
        self.generic_visit(node)
        # Each step may write the loop body's literal text into a buffer (a macro, {% set %}), and
        # a body that uses `loop` may make Jinja hold all the items (loop.length): charge them.
        text = sum(len(data.data) for child in node.body for data in child.find_all(nodes.TemplateData))
        uses_loop = any(name.name == "loop" for child in node.body for name in child.find_all(nodes.Name))
        node.iter = self._through(node.iter, "_pgactions_loop", text + (8 if uses_loop else 0))
        return node


# -- filters --------------------------------------------------------------------------------------


def _pre_center(b: _Budget, value: Any, width: int = 80) -> Any:
    text = b.text(value)
    b.check(max(len(text), width) * _char_width(text))
    return value


def _pre_indent(b: _Budget, value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
    text = b.text(value)
    step = len(width) if isinstance(width, str) else width
    b.check((len(text) + (text.count("\n") + 1) * max(step, 0)) * _char_width(text, width))
    return value


def _slow(b: _Budget, name: str, text: str) -> None:
    if len(text) > _SLOW_FILTER_BYTES:
        raise TemplateLimitError("size", f"the {name} filter takes at most {_SLOW_FILTER_BYTES:,} characters "
                                         f"(this text has {len(text):,})")


def _pre_wordwrap(b: _Budget, value: Any, width: int = 79, break_long_words: bool = True,
                  wrapstring: str | None = None, break_on_hyphens: bool = True) -> Any:
    text = b.text(value)
    _slow(b, "wordwrap", text)
    wrap = "\n" if wrapstring is None else b.text(wrapstring)
    lines = len(text) // max(width, 1) + text.count("\n") + 1
    b.check((len(text) + lines * len(wrap)) * _char_width(text, wrap))
    return value


def _pre_format(b: _Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    b.check(_percent_estimate(b, b.text(value), kwargs or args))
    return value


def _pre_replace(b: _Budget, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
    text = b.text(value)
    b.check(_est_replace(text, b.text(old), b.text(new), -1 if count is None else count))
    return value


def _pre_join(b: _Budget, value: Any, d: Any = "", attribute: Any = None) -> Any:
    items = _items(b, value)
    if isinstance(items, (list, tuple)):
        sep = b.text(d)
        b.check(sum(b.text_weight(i) for i in items) + len(sep) * max(len(items) - 1, 0) * _char_width(sep)
                + 8 * len(items))
    return items


def _pre_list(b: _Budget, value: Any) -> Any:
    return _items(b, value)


def _pre_lazy(b: _Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    """map, select, reject, …: read the input step by step within the budget."""
    if isinstance(value, Undefined):
        return value
    return _bounded(b, value)


def _pre_sorting(b: _Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    items = _items(b, value)
    if isinstance(items, (list, tuple)) and len(items) > _MAX_SORT_ITEMS:
        raise TemplateLimitError("size", f"sort, unique and groupby take at most {_MAX_SORT_ITEMS:,} items "
                                         f"(this has {len(items):,})")
    return items


def _pre_dictsort(b: _Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(value, Mapping) and len(value) > _MAX_SORT_ITEMS:
        raise TemplateLimitError("size", f"dictsort takes at most {_MAX_SORT_ITEMS:,} items "
                                         f"(this has {len(value):,})")
    return value


def _pre_batch(b: _Budget, value: Any, linecount: int, fill_with: Any = None) -> Any:
    if fill_with is not None:
        b.check(linecount * (8 + b.weight(fill_with)))
    return _pre_lazy(b, value)


def _pre_slice(b: _Budget, value: Any, slices: int, fill_with: Any = None) -> Any:
    b.check(slices * (64 + (8 + b.weight(fill_with) if fill_with is not None else 0)))
    return _items(b, value)


def _pre_reverse(b: _Budget, value: Any) -> Any:
    return value if isinstance(value, (str, list, tuple, dict)) else _items(b, value)


def _depth(value: Any, limit: int = 1000) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, tuple, dict)) and level <= limit:
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _pre_tojson(b: _Budget, value: Any, indent: int | str | None = None) -> Any:
    size = b.escaped_weight(value)
    if indent:
        step = len(indent) if isinstance(indent, str) else int(indent)
        size += (b.weight(value) // 16 + 1) * (step * _depth(value) + 1)
    b.check(size)
    return value


def _pre_pprint(b: _Budget, value: Any) -> Any:
    if b.weight(value) > _SLOW_FILTER_BYTES:
        raise TemplateLimitError("size", f"the pprint filter takes values of at most {_SLOW_FILTER_BYTES:,} bytes")
    b.check(2 * b.escaped_weight(value))
    return value


def _pre_urlencode(b: _Budget, value: Any) -> Any:
    if isinstance(value, str):
        b.check(len(value) * (3 if value.isascii() else 12))
    else:
        b.check(12 * b.weight(value))
    return value


def _pre_urlize(b: _Budget, value: Any, trim_url_limit: int | None = None, nofollow: bool = False,
                target: str | None = None, rel: str | None = None, extra_schemes: Any = None) -> Any:
    text = b.text(value)
    _slow(b, "urlize", text)
    per_link = 48 + sum(len(b.text(x)) for x in (target, rel) if x)
    b.check(12 * len(text) + (len(text) // 2 + 1) * per_link)
    return value


def _pre_xmlattr(b: _Budget, value: Any, autospace: bool = True) -> Any:
    b.check(b.escaped_weight(value) + 16 * (len(value) if isinstance(value, Mapping) else 0))
    return value


def _pre_escape(b: _Budget, value: Any, /) -> Any:
    text = b.text(value)
    b.check(len(text) * _char_width(text) + 4 * sum(text.count(c) for c in "&<>\"'"))
    return value


def _pre_text(b: _Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    """Filters that turn their input into text (string, upper, trim, …): refuse a huge repr."""
    b.text(value)
    return value


def _pre_title(b: _Budget, value: Any) -> Any:
    _slow(b, "title", b.text(value))
    return value


def _pre_striptags(b: _Budget, value: Any) -> Any:
    text = b.text(value)
    if (text.count("<") + 1) * len(text) > _MAX_STRIPTAGS_WORK:
        raise TemplateLimitError("size", "the striptags filter would take too long on this text "
                                         f"({text.count('<'):,} tags in {len(text):,} characters)")
    return value


_PRE_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _pre_center, "indent": _pre_indent, "wordwrap": _pre_wordwrap, "format": _pre_format,
    "replace": _pre_replace, "join": _pre_join, "list": _pre_list, "batch": _pre_batch, "slice": _pre_slice,
    "reverse": _pre_reverse, "tojson": _pre_tojson, "pprint": _pre_pprint, "urlencode": _pre_urlencode,
    "urlize": _pre_urlize, "xmlattr": _pre_xmlattr, "e": _pre_escape, "escape": _pre_escape,
    "forceescape": _pre_escape, "title": _pre_title, "striptags": _pre_striptags, "dictsort": _pre_dictsort,
    **{name: _pre_sorting for name in ("sort", "unique", "groupby")},
    **{name: _pre_lazy for name in ("map", "select", "reject", "selectattr", "rejectattr", "min", "max")},
    **{name: _pre_text for name in ("string", "safe", "lower", "upper", "capitalize", "trim", "truncate",
                                    "wordcount")},
}


def _binds(signature: inspect.Signature, *args: Any, **kwargs: Any) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _wrap_filter(func: Callable[..., Any], pre: Callable[..., Any] | None) -> Callable[..., Any]:
    """*func* measured: its input checked by *pre* (which may hand back the input read within the
    budget), its result accounted for.  Marked pass_context, so never folded at compile time."""
    pass_arg = _PassArg.from_obj(func)
    try:
        signature: inspect.Signature | None = inspect.signature(func) if pre is not None else None
    except ValueError:  # a builtin without one: a failing check then always refuses
        signature = None
    lead = () if pass_arg is None else (None,)

    @pass_context
    def wrapper(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = getattr(_LOCAL, "budget", None) or _budget()
        if time.monotonic() > budget.deadline:
            budget.tick()
        if pre is not None:
            try:
                value = pre(budget, value, *args, **kwargs)
            except TypeError:
                if signature is None or _binds(signature, *lead, value, *args, **kwargs):
                    raise  # the arguments fit the filter but not the check: the filter must not run
                # else: wrong arguments, the filter fails with its own message before doing anything
        if pass_arg is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        if result is value:
            return result
        return budget.made(result)

    wrapper.__name__, wrapper.__doc__ = getattr(func, "__name__", "filter"), func.__doc__
    return wrapper


_WORD = re.compile(r"\w+")
_NOT_WORD = re.compile(r"\W")


def _do_wordcount(s: Any) -> int:
    """Jinja's wordcount, counted 64 K characters at a time (Jinja lists every word at once)."""
    text, start, count = str(s), 0, 0
    budget = _budget()
    while start < len(text):
        stop = _NOT_WORD.search(text, min(start + 65536, len(text)))  # never cut a word in two
        end = stop.start() if stop else len(text)
        count += len(_WORD.findall(text, start, end))
        start = end + 1 if stop else end
        budget.tick()
    return count


@pass_environment
def _do_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's sum; lists and tuples are concatenated in one pass (sum() would copy each time)."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    if not isinstance(start, (list, tuple)):
        return sum(iterable, start)
    budget = _budget()
    parts = _items(budget, iterable)
    for part in parts:
        if type(part) is not type(start):
            raise TypeError(f'can only concatenate {type(start).__name__} (not "{type(part).__name__}") '
                            f"to {type(start).__name__}")
    budget.check(budget.weight(start) + sum(budget.weight(p) for p in parts))
    joined = chain(start, *parts)
    return list(joined) if isinstance(start, list) else tuple(joined)


@pass_context
def _made_filter(context: Context, value: Any) -> Any:
    return _budget().made(value)


@pass_context
def _concat_filter(context: Context, parts: tuple[Any, ...]) -> str:
    budget = _budget()
    budget.tick()
    budget.check(sum(budget.text_weight(p) for p in parts))
    return budget.made("".join([p if isinstance(p, str) else str(p) for p in parts]))


@pass_context
def _loop_filter(context: Context, iterable: Any, per_step: int = 0) -> Any:
    if isinstance(iterable, Undefined):
        return iterable
    return _bounded(_budget(), iterable, per_step)


def _finalize(value: Any) -> Any:
    """Every ``{{ }}`` of a text template, just before it becomes text: charged (and at least the
    8 bytes of its place in the output), so what a template writes is bounded by the total."""
    budget = getattr(_LOCAL, "budget", None) or _budget()
    kind = type(value)
    if kind is str:
        size = _sizeof(value) - _EMPTY + 8
    elif kind is int:
        size = 10 + value.bit_length() * 3 // 10
    else:
        size = budget.text_weight(value) + 8
    if size > budget.max_bytes:
        raise budget.too_big()
    budget.total += size
    if budget.total > budget.max_total:
        raise budget.over_total()
    budget.steps += 1
    if not budget.steps & 255:
        budget.tick()
    return value


def _make_environment() -> _BoundedEnvironment:
    env = _BoundedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                              finalize=_finalize)
    for name in ("range", "lipsum", "cycler", "joiner", "namespace"):
        env.globals.pop(name, None)
    env.filters["identifier"] = _identifier_filter
    env.filters["wordcount"] = _do_wordcount
    env.filters["sum"] = _do_sum
    env.filters = {name: _wrap_filter(func, _PRE_FILTERS.get(name)) for name, func in env.filters.items()}
    env.filters.update(_pgactions_made=_made_filter, _pgactions_concat=_concat_filter,
                       _pgactions_loop=_loop_filter)
    return env


ENV = _make_environment()


# -- rendering ------------------------------------------------------------------------------------

_HOOKED = (nodes.Call, nodes.Filter, nodes.BinExpr, nodes.List, nodes.Tuple, nodes.Dict, nodes.Concat,
           nodes.Slice)


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
    # The output is bounded before it is joined: each {{ }} is charged by _finalize, the literal
    # text inside loops by the loop, and the rest is the template's own text.
    text = "".join(template.root_render_func(template.new_context(context)))
    if _sizeof(text) - _EMPTY > max_bytes:
        raise _result_too_big(max_bytes)
    return text


def _result_too_big(max_bytes: int) -> TemplateLimitError:
    return TemplateLimitError("size", f"the template's result would be larger than {max_bytes:,} bytes "
                                      "(the size limit for a template value)")


def _budgeted(run: Callable[..., Any], max_bytes: int, max_seconds: float, *args: Any) -> Any:
    previous = getattr(_LOCAL, "budget", None)
    _LOCAL.budget = _Budget(max_bytes, max_seconds)
    try:
        return run(*args)
    finally:
        _LOCAL.budget = previous


# Whatever a sandboxed template raises is the template's failure (a filter given a value of the
# wrong type may raise AttributeError or AssertionError as well as TypeError).
_TEMPLATE_FAILURES = (Exception,)


def render_expression(expr: str, context: dict[str, Any], max_bytes: int = MAX_VALUE_BYTES,
                      max_seconds: float = MAX_SECONDS) -> Any:
    """Evaluate one ``{{ }}`` expression body, keeping the value's type, within the limits."""
    if max_bytes is not MAX_VALUE_BYTES or max_seconds is not MAX_SECONDS:
        _checked_limits(max_bytes, max_seconds)
    try:
        template, computes = _compile_expression(expr)
        if computes:
            result = _budgeted(_evaluate, max_bytes, max_seconds, template, context)
        else:
            result = _evaluate(template, context)
        if isinstance(result, Undefined):
            result._fail_with_undefined_error()
        return result
    except ActionError as exc:
        raise _limit_error(exc, "{{" + expr + "}}") from None
    except _TEMPLATE_FAILURES as exc:
        raise _template_error(exc, "{{" + expr + "}}", context) from None


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
            return _budgeted(_render_text, max_bytes, max_seconds, _compile_template(value), context, max_bytes)
        except ActionError as exc:
            raise _limit_error(exc, value) from None
        except _TEMPLATE_FAILURES as exc:
            raise _template_error(exc, value, context) from None
    if isinstance(value, (list, dict)):
        return _render_container(value, context, max_bytes, max_seconds)
    return value


def _render_container(value: list[Any] | dict[str, Any], context: dict[str, Any], max_bytes: int,
                      max_seconds: float) -> Any:
    # Apart from render_value: its comprehensions' closure cells would cost every call of it.
    if isinstance(value, list):
        return [render_value(v, context, max_bytes, max_seconds) for v in value]
    return {k: render_value(v, context, max_bytes, max_seconds) for k, v in value.items()}


def _limit_error(exc: ActionError, source: str) -> ActionError:
    """A limit error names the template it stopped; any other ActionError passes unchanged."""
    if isinstance(exc, TemplateLimitError):
        return ActionError("TEMPLATE_ERROR", f"template {_shown(source)} was stopped: {exc.reason}",
                           extra={"limit": exc.limit})
    return exc


def _template_error(exc: BaseException, source: str, context: dict[str, Any]) -> ActionError:
    shown = _shown(source)
    if isinstance(exc, RecursionError):
        return ActionError("TEMPLATE_ERROR", f"template {shown} was stopped: it nests or recurses too deeply",
                           extra={"limit": "depth"})
    if isinstance(exc, MemoryError):
        return ActionError("TEMPLATE_ERROR", f"template {shown} was stopped: it ran out of memory",
                           extra={"limit": "memory"})
    if isinstance(exc, TemplateSyntaxError):
        return ActionError("TEMPLATE_ERROR", f"invalid template {shown}: {exc.message}")
    if isinstance(exc, SecurityError):
        return ActionError("TEMPLATE_ERROR", f"template {shown} is not allowed: {exc}")
    if isinstance(exc, UndefinedError):
        missing = _first_missing_path(source, context)
        if missing:
            return ActionError("TEMPLATE_ERROR", f"{missing} is not defined (in template {shown})",
                               extra={"path": missing})
    return ActionError("TEMPLATE_ERROR", f"template {shown} failed: {_shown(str(exc), 300)[1:-1]}")


def _first_missing_path(source: str, context: dict[str, Any]) -> str | None:
    """Walk the template's variable paths (a.b[0].c) and name the first that does not resolve."""
    try:
        tree = ENV.parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        chain_ = _path_of(node)
        if chain_ is None:
            continue
        current: Any = context
        walked: list[str] = []
        for step in chain_:
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

