"""Sizes estimated *before* a value is made, wherever one step could make a big one: ``*``, ``**``,
``+``, ``%`` formatting, and the methods of text that grow their input (docs/templating.md, "Limits").

Each function refuses (through the budget) what would go over a limit; the value is then never
made, so a refusal costs nothing.  An estimate errs on the large side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from markupsafe import Markup

from pgactions.render.bounds import MAX_INT_BITS, Budget, read_items, too_many_bits

__all__ = ["add_estimate", "char_width", "guard_call", "join_estimate", "markup_factor", "mul_estimate", "number",
           "pad_estimate", "percent_estimate", "pow_estimate", "replace_estimate"]


def char_width(*texts: Any) -> int:
    """Bytes a character of these texts may take: 1 when all are ASCII (or not text), else 4."""
    return 1 if all(not isinstance(t, str) or t.isascii() for t in texts) else 4


def markup_factor(text: Any) -> int:
    """Markup escapes what is put into it: up to 5 characters for one (``&amp;``)."""
    return 5 if isinstance(text, Markup) else 1


def number(digits: str) -> int:
    """A width or precision written in a format, capped where it is already far over any limit."""
    return int(digits) if len(digits) < 19 else 10**19


# -- operators ------------------------------------------------------------------------------------


def mul_estimate(budget: Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() - 1 > MAX_INT_BITS:
            raise too_many_bits()
        return
    if isinstance(left, int):
        left, right = right, left
    if not isinstance(right, int) or right <= 0:
        return
    if isinstance(left, (str, bytes)):
        budget.check(len(left) * right * (1 if left.isascii() else 4))
    elif isinstance(left, (list, tuple)):
        budget.check(budget.weight(left) * right)


def pow_estimate(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0:
        bits = abs(left).bit_length()
        if bits > 1 and (bits - 1) * right + 1 > MAX_INT_BITS:  # |left| ≥ 2**(bits-1)
            raise too_many_bits()


def add_estimate(budget: Budget, left: Any, right: Any) -> None:
    if isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
        budget.check(len(left) + len(right) if left.isascii() and right.isascii() else
                     4 * (len(left) + len(right)))
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        budget.check(budget.weight(left) + budget.weight(right))


_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_LONG_NUMBER = re.compile(r"\d{4,}")


def percent_estimate(budget: Budget, fmt: str | bytes, args: Any) -> int:
    """About the length of ``fmt % args`` (printf-style), before making it."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    factor = markup_factor(fmt)
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
        for digits in (width, precision):
            if digits and digits != "*":
                total += number(digits)
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


# -- methods of text that grow their input --------------------------------------------------------

_LINE_BREAKS = ("\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def pad_estimate(s: Any, width: int, fillchar: Any = " ", /) -> int:
    return max(len(s), width) * char_width(s, fillchar)


def _zfill_estimate(s: Any, width: int, /) -> int:
    return max(len(s), width) * char_width(s)


def _expandtabs_estimate(s: Any, tabsize: int = 8) -> int:
    tab = "\t" if isinstance(s, str) else b"\t"
    return (len(s) + s.count(tab) * max(tabsize, 0)) * char_width(s)


def replace_estimate(s: Any, old: Any, new: Any, count: int = -1, /) -> int:
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return (len(s) + hits * max(len(new) - len(old), 0)) * char_width(s, new)


def _parts_estimate(s: Any, parts: int) -> int:
    """*s* cut into *parts* strings: each a new object (about 64 bytes) holding its piece."""
    return parts * 64 + len(s) * char_width(s)


def _split_estimate(s: Any, sep: Any = None, maxsplit: int = -1) -> int:
    parts = s.count(sep) + 1 if sep else len(s) // 2 + 1
    if maxsplit >= 0:
        parts = min(parts, maxsplit + 1)
    return _parts_estimate(s, parts)


def _splitlines_estimate(s: Any, keepends: bool = False) -> int:
    breaks = _LINE_BREAKS if isinstance(s, str) else (b"\n", b"\r")
    return _parts_estimate(s, sum(s.count(b) for b in breaks) + 1)


def _translate_estimate(s: Any, table: Any, /) -> int:
    values = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
    longest = max((len(v) if isinstance(v, (str, bytes)) else 1 for v in values), default=1)
    return len(s) * max(longest, 1) * 4


def _encode_estimate(s: Any, encoding: str = "utf-8", errors: str = "strict") -> int:
    plain = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-16", "utf-32", "ascii", "latin-1")
    return len(s) * (4 if plain else 10)


def _hex_estimate(s: Any, sep: Any = None, bytes_per_sep: int = 1) -> int:
    return len(s) * 3


def join_estimate(budget: Budget, sep: str | bytes, parts: list[Any] | tuple[Any, ...]) -> int:
    """About the length of ``sep.join(parts)`` (``join`` as a method and as a filter)."""
    return (sum(budget.text_weight(p) for p in parts) + len(sep) * max(len(parts) - 1, 0) * char_width(sep)
            + 8 * len(parts))


# Methods of str (and bytes, and Markup) that can make a value much larger than their input; each
# estimate takes the method's own arguments (and fails as the method would on wrong ones).
_TEXT_METHODS: dict[str, Callable[..., int]] = {
    "center": pad_estimate, "ljust": pad_estimate, "rjust": pad_estimate, "zfill": _zfill_estimate,
    "expandtabs": _expandtabs_estimate, "replace": replace_estimate, "split": _split_estimate,
    "rsplit": _split_estimate, "splitlines": _splitlines_estimate, "translate": _translate_estimate,
    "encode": _encode_estimate, "hex": _hex_estimate,
}
# Keyword arguments Jinja adds to calls of its own callables (not the method's).
_CALL_MARKERS = ("_loop_vars", "_block_vars")


# -- calls ----------------------------------------------------------------------------------------


def guard_call(budget: Budget, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call that would make a value over the limits; may return new *args* (an
    iterable read within the budget)."""
    owner = getattr(func, "__self__", None)
    if owner is None:
        return args
    name = getattr(func, "__name__", "")
    plain_kwargs = {k: v for k, v in kwargs.items() if k not in _CALL_MARKERS} if kwargs else kwargs
    if isinstance(owner, (str, bytes)):
        return _guard_text_method(budget, owner, name, args, plain_kwargs)
    if name == "strftime" and args and isinstance(args[0], str):
        budget.check(16 * len(args[0]) + 64)
    elif name == "to_bytes":
        length = args[0] if args else plain_kwargs.get("length", 1)
        if isinstance(length, int):
            budget.check(length)
    elif name == "fromkeys" and args:
        keys = read_items(budget, args[0])
        if isinstance(keys, (list, tuple)):
            budget.check(len(keys) * (24 + (budget.weight(args[1]) if len(args) > 1 else 0)))
        return (keys, *args[1:])
    return args


def _guard_text_method(budget: Budget, owner: str | bytes, name: str, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if name == "join" and len(args) == 1 and not kwargs:
        parts = read_items(budget, args[0])
        if isinstance(parts, (list, tuple)):
            budget.check(join_estimate(budget, owner, parts) * markup_factor(owner))
        return (parts,)
    estimate = _TEXT_METHODS.get(name)
    if estimate is not None:
        try:
            size = estimate(owner, *args, **kwargs)
        except (TypeError, ValueError, AttributeError):
            return args  # the call itself will say what is wrong with its arguments
        budget.check(size * markup_factor(owner))
    return args
