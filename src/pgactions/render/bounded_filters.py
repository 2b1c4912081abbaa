"""Jinja's filters, bounded: each checks its input before it runs (estimating what it would make)
and has its result measured after (docs/templating.md, "Limits").

A filter that could make a big value from a small input has a check here (``_pre_*``); a filter
that does slow Python-level work per word or item takes a bounded input; every filter's result is
charged to the template's budget by :func:`bounded_filter`.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

from jinja2 import pass_context, pass_environment
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, Undefined
from jinja2.utils import _PassArg

from pgactions.render.bounds import RENDERING, Budget, TemplateLimitError, bounded, current_budget, read_items
from pgactions.render.estimates import (
    char_width,
    join_estimate,
    pad_estimate,
    percent_estimate,
    replace_estimate,
)

__all__ = ["PRE_FILTERS", "REPLACED_FILTERS", "bounded_filter"]

# Filters that do Python-level work per word or per element take at most this much input (at
# these sizes each takes well under 0.2 s): wordwrap, urlize, title, pprint.
_SLOW_FILTER_BYTES = 128 * 1024
# sort, unique, groupby and dictsort take at most this many items.
_MAX_SORT_ITEMS = 100_000
# striptags copies the text once per tag: (tags x length) byte copies at most.
_MAX_STRIPTAGS_WORK = 2 * 10**9


# -- checks before a filter runs ------------------------------------------------------------------
# Each takes the budget and the filter's own arguments, and returns the input to give the filter
# (the same one, or an iterable read within the budget).


def _pre_center(b: Budget, value: Any, width: int = 80) -> Any:
    b.check(pad_estimate(b.text(value), width))
    return value


def _pre_indent(b: Budget, value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
    text = b.text(value)
    step = len(width) if isinstance(width, str) else width
    b.check((len(text) + (text.count("\n") + 1) * max(step, 0)) * char_width(text, width))
    return value


def _slow(name: str, text: str) -> None:
    if len(text) > _SLOW_FILTER_BYTES:
        raise TemplateLimitError("size", f"the {name} filter takes at most {_SLOW_FILTER_BYTES:,} characters "
                                         f"(this text has {len(text):,})")


def _pre_wordwrap(b: Budget, value: Any, width: int = 79, break_long_words: bool = True,
                  wrapstring: str | None = None, break_on_hyphens: bool = True) -> Any:
    text = b.text(value)
    _slow("wordwrap", text)
    wrap = "\n" if wrapstring is None else b.text(wrapstring)
    lines = len(text) // max(width, 1) + text.count("\n") + 1
    b.check((len(text) + lines * len(wrap)) * char_width(text, wrap))
    return value


def _pre_format(b: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    b.check(percent_estimate(b, b.text(value), kwargs or args))
    return value


def _pre_replace(b: Budget, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
    text = b.text(value)
    b.check(replace_estimate(text, b.text(old), b.text(new), -1 if count is None else count))
    return value


def _pre_join(b: Budget, value: Any, d: Any = "", attribute: Any = None) -> Any:
    items = read_items(b, value)
    if isinstance(items, (list, tuple)):
        b.check(join_estimate(b, b.text(d), items))
    return items


def _pre_list(b: Budget, value: Any) -> Any:
    return read_items(b, value)


def _pre_lazy(b: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    """map, select, reject, …: read the input step by step within the budget."""
    if isinstance(value, Undefined):
        return value
    return bounded(b, value)


def _pre_sorting(b: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    items = read_items(b, value)
    if isinstance(items, (list, tuple)) and len(items) > _MAX_SORT_ITEMS:
        raise TemplateLimitError("size", f"sort, unique and groupby take at most {_MAX_SORT_ITEMS:,} items "
                                         f"(this has {len(items):,})")
    return items


def _pre_dictsort(b: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(value, Mapping) and len(value) > _MAX_SORT_ITEMS:
        raise TemplateLimitError("size", f"dictsort takes at most {_MAX_SORT_ITEMS:,} items "
                                         f"(this has {len(value):,})")
    return value


def _pre_batch(b: Budget, value: Any, linecount: int, fill_with: Any = None) -> Any:
    if fill_with is not None:
        b.check(linecount * (8 + b.weight(fill_with)))
    return _pre_lazy(b, value)


def _pre_slice(b: Budget, value: Any, slices: int, fill_with: Any = None) -> Any:
    b.check(slices * (64 + (8 + b.weight(fill_with) if fill_with is not None else 0)))
    return read_items(b, value)


def _pre_reverse(b: Budget, value: Any) -> Any:
    return value if isinstance(value, (str, list, tuple, dict)) else read_items(b, value)


def _depth(value: Any, limit: int = 1000) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, tuple, dict)) and level <= limit:
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _pre_tojson(b: Budget, value: Any, indent: int | str | None = None) -> Any:
    size = b.escaped_weight(value)
    if indent:
        step = len(indent) if isinstance(indent, str) else int(indent)
        size += (b.weight(value) // 16 + 1) * (step * _depth(value) + 1)
    b.check(size)
    return value


def _pre_pprint(b: Budget, value: Any) -> Any:
    if b.weight(value) > _SLOW_FILTER_BYTES:
        raise TemplateLimitError("size", f"the pprint filter takes values of at most {_SLOW_FILTER_BYTES:,} bytes")
    b.check(2 * b.escaped_weight(value))
    return value


def _pre_urlencode(b: Budget, value: Any) -> Any:
    if isinstance(value, str):
        b.check(len(value) * (3 if value.isascii() else 12))
    else:
        b.check(12 * b.weight(value))
    return value


def _pre_urlize(b: Budget, value: Any, trim_url_limit: int | None = None, nofollow: bool = False,
                target: str | None = None, rel: str | None = None, extra_schemes: Any = None) -> Any:
    text = b.text(value)
    _slow("urlize", text)
    per_link = 48 + sum(len(b.text(x)) for x in (target, rel) if x)
    b.check(12 * len(text) + (len(text) // 2 + 1) * per_link)
    return value


def _pre_xmlattr(b: Budget, value: Any, autospace: bool = True) -> Any:
    b.check(b.escaped_weight(value) + 16 * (len(value) if isinstance(value, Mapping) else 0))
    return value


def _pre_escape(b: Budget, value: Any, /) -> Any:
    text = b.text(value)
    b.check(len(text) * char_width(text) + 4 * sum(text.count(c) for c in "&<>\"'"))
    return value


def _pre_text(b: Budget, value: Any, *args: Any, **kwargs: Any) -> Any:
    """Filters that turn their input into text (string, upper, trim, …): refuse a huge repr."""
    b.text(value)
    return value


def _pre_title(b: Budget, value: Any) -> Any:
    _slow("title", b.text(value))
    return value


def _pre_striptags(b: Budget, value: Any) -> Any:
    text = b.text(value)
    if (text.count("<") + 1) * len(text) > _MAX_STRIPTAGS_WORK:
        raise TemplateLimitError("size", "the striptags filter would take too long on this text "
                                         f"({text.count('<'):,} tags in {len(text):,} characters)")
    return value


#: The check each filter runs before it (by the filter's name); the others only have their result measured.
PRE_FILTERS: dict[str, Callable[..., Any]] = {
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


# -- filters replaced by bounded versions ---------------------------------------------------------

_WORD = re.compile(r"\w+")
_NOT_WORD = re.compile(r"\W")


def _do_wordcount(s: Any) -> int:
    """Jinja's wordcount, counted 64 K characters at a time (Jinja lists every word at once)."""
    text, start, count = str(s), 0, 0
    budget = current_budget()
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
    budget = current_budget()
    parts = read_items(budget, iterable)
    for part in parts:
        if type(part) is not type(start):
            raise TypeError(f'can only concatenate {type(start).__name__} (not "{type(part).__name__}") '
                            f"to {type(start).__name__}")
    budget.check(budget.weight(start) + sum(budget.weight(p) for p in parts))
    joined = chain(start, *parts)
    return list(joined) if isinstance(start, list) else tuple(joined)


#: Jinja filters whose own implementation cannot be bounded from outside: these replace them.
REPLACED_FILTERS: dict[str, Callable[..., Any]] = {"wordcount": _do_wordcount, "sum": _do_sum}


# -- the wrapper ----------------------------------------------------------------------------------


def _binds(signature: inspect.Signature, *args: Any, **kwargs: Any) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def bounded_filter(func: Callable[..., Any], pre: Callable[..., Any] | None) -> Callable[..., Any]:
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
        budget = getattr(RENDERING, "budget", None) or current_budget()
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
