"""The records API: PostgREST's URL grammar translated onto the existing actions.

Pure translation, no HTTP framework: a request's parts (target, query parameters, ``Prefer``
header, JSON body) become a :class:`RecordCall` — an action id and its inputs, plus how to shape
the action's output into PostgREST's answer (:func:`shape_response`).  No SQL is built here: the
filters become the structured ``where`` list that Find Rows, Update Rows and Delete Rows take,
and their values stay the text PostgREST sends (the actions cast each value to its column's
type, so ``age=gte.18`` compares with an integer column).

How the app uses it::

    call = table_read(target, params, prefer)           # raises ActionError (INVALID_INPUT → 422)
    try:
        output = runtime.run(call.action_id, profile, call.inputs).data
        count = None
        if call.count_call is not None and count_needed(call, output):
            try:
                count = runtime.run(call.count_call.action_id, profile, call.count_call.inputs).data
            except ActionError as exc:                   # too many rows to count this way
                if exc.code != "RESULT_TOO_LARGE":
                    raise
    except ActionError as exc:
        raise column_error_to_invalid(exc, call) from None
    status, headers, body = shape_response(call, output, count)

Every refusal is ``ActionError("INVALID_INPUT", …, extra={"field": <query parameter or header>})``
naming the parameter, operator or column at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgactions.spec.errors import ActionError

__all__ = [
    "COUNT_LIMIT", "FIND_ROWS_MAX", "MAX_GROUP_DEPTH", "RESERVED_PARAMS", "SINGLE_OBJECT", "RecordCall", "Target", "column_error_to_invalid", "count_needed",
    "list_functions", "list_schemas", "list_tables", "parse_filters", "parse_order", "parse_prefer",
    "parse_select", "parse_target", "rpc", "shape_response", "table_delete", "table_insert", "table_metadata",
    "table_read", "table_update",
]

# Query parameters that are not filters.
RESERVED_PARAMS = frozenset({"select", "order", "limit", "offset", "allowAllRows", "columns", "on_conflict"})
# Find Rows' largest limit: a read without ?limit= asks for up to this many rows (the output cap
# still applies), and a count_call reads at most this many.
FIND_ROWS_MAX = 1_000_000
COUNT_LIMIT = FIND_ROWS_MAX
SINGLE_OBJECT = "application/vnd.pgrst.object+json"
# or(…)/and(…) nested deeper than this are refused (each level is a recursion, here and in the action).
MAX_GROUP_DEPTH = 32

# PostgREST operator → the actions' operator.
_OPERATORS = {"eq": "eq", "neq": "ne", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte", "like": "like",
              "ilike": "ilike", "in": "in", "is": "is", "cs": "contains"}
# PostgREST operators the actions have no equivalent for.
_UNSUPPORTED_OPERATORS = frozenset({"match", "imatch", "fts", "plfts", "phfts", "wfts", "cd", "ov", "sl", "sr",
                                    "nxr", "nxl", "adj", "isdistinct"})
# NOT (x op v) is (x negated-op v) in SQL's three-valued logic too (NULL stays NULL).
_NEGATED = {"eq": "ne", "ne": "eq", "gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt",
            "is null": "is not null", "is not null": "is null"}
_IS_VALUES: dict[str, Any] = {"null": None, "true": True, "false": False, "unknown": None, "not_null": "not_null"}
_PREFERENCES = {"return": {"minimal", "representation", "headers-only"},
                "count": {"exact", "planned", "estimated"},
                "resolution": {"merge-duplicates", "ignore-duplicates"},
                "missing": {"default", "null"}, "handling": {"lenient", "strict"},
                "tx": {"commit", "rollback"}}


def _invalid(field: str, message: str) -> ActionError:
    return ActionError("INVALID_INPUT", message, extra={"field": field})


# --------------------------------------------------------------------------------------------
# The call


@dataclass(frozen=True)
class Target:
    """``schema.name`` from the URL; ``schema`` None: the connection's search path."""

    schema: str | None
    name: str

    def inputs(self, key: str = "table") -> dict[str, Any]:
        return {key: self.name, **({"schema": self.schema} if self.schema else {})}


@dataclass
class RecordCall:
    """One action to run, and how its output becomes the HTTP answer.

    ``kind``: where the body comes from — ``rows`` (output["rows"], a JSON array), ``row`` (Insert
    Row's output["row"], answered as a one-row array), ``single`` (exactly one of output["rows"],
    answered as an object), ``function`` (Call Function's rows, result or OUT parameters),
    ``field`` (output[body_field]: tables, schemas, functions), ``object`` (the whole output),
    ``count`` (a count_call: output["rowCount"] is the total).
    ``read_only``: the request is a read (GET) and must not write.  ``count_call``: a second call
    the app runs after this one, only when :func:`count_needed` says so, for ``count=exact``.
    """

    action_id: str
    inputs: dict[str, Any]
    read_only: bool
    kind: str = "rows"
    method: str = "GET"
    return_representation: bool = False
    count_exact: bool = False
    body_field: str | None = None
    count_call: RecordCall | None = None
    preference_applied: list[str] = field(default_factory=list)
    # action input path ("where/0", "orderBy/1", "select") → the query parameter it came from
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def success_status(self) -> int:
        if self.method == "POST" and self.kind != "function":
            return 201
        if self.method in ("PATCH", "DELETE") and not self.return_representation:
            return 204
        return 200

    def param_for(self, action_field: str | None) -> str | None:
        """The query parameter an action's input path (e.g. ``where/0/column``) came from."""
        if not action_field:
            return None
        best = None
        for prefix, param in self.fields.items():
            if (action_field == prefix or action_field.startswith(prefix + "/")) and (
                    best is None or len(prefix) > len(best[0])):
                best = (prefix, param)
        return best[1] if best else None


# --------------------------------------------------------------------------------------------
# Lexing: names, quoted values, top-level commas


def _unquote(text: str) -> str:
    """``"a\\"b"`` → ``a"b`` (PostgREST's quoted values: backslash escapes)."""
    inner, out, i = text[1:-1], [], 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner):
            i += 1
        out.append(inner[i])
        i += 1
    return "".join(out)


def _is_quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == '"' and text[-1] == '"'


def _split_top(text: str, field: str, sep: str = ",") -> list[str]:
    """Split on *sep* outside double quotes, parentheses and braces."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
            if depth < 0:
                raise _invalid(field, f"{field}: unbalanced parentheses in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise _invalid(field, f"{field}: unclosed double quote in {text!r}")
    if depth:
        raise _invalid(field, f"{field}: unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return parts


def _take_name(text: str, field: str) -> tuple[str, str]:
    """A leading column name (plain, or double-quoted with "" or \\" inside) and the rest after its dot."""
    if text.startswith('"'):
        i, out = 1, []
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                if text[i + 1:i + 2] == '"':
                    out.append('"')
                    i += 2
                    continue
                break
            out.append(ch)
            i += 1
        else:
            raise _invalid(field, f"{field}: unclosed double quote in {text!r}")
        name, rest = "".join(out), text[i + 1:]
        if rest and not rest.startswith("."):
            raise _invalid(field, f"{field}: expected '.' after the quoted name {name!r}")
        return _checked_name(name, field, quoted=True), rest[1:]
    name, _, rest = text.partition(".")
    return _checked_name(name, field), rest


def _checked_name(name: str, field: str, quoted: bool = False) -> str:
    if not name:
        raise _invalid(field, f"{field}: a column name is empty")
    if quoted:
        return name
    if "->" in name:
        raise _invalid(field, f"{field}: JSON paths ({name!r}) are not supported; filter on the whole column")
    if "::" in name:
        raise _invalid(field, f"{field}: casts ({name!r}) are not supported")
    if any(ch in name for ch in '(),:"'):
        raise _invalid(field, f"{field}: {name!r} is not a column name (quote a name holding one of ( ) , : \")")
    return name


def _name(text: str, field: str) -> str:
    """A whole column name (nothing after it)."""
    text = text.strip()
    if _is_quoted(text):
        name, rest = _take_name(text, field)
        if rest:
            raise _invalid(field, f"{field}: unexpected {rest!r} after {name!r}")
        return name
    if "." in text:
        raise _invalid(field, f"{field}: {text!r}: columns of embedded resources are not supported "
                              "(quote a name holding a dot: \"a.b\")")
    return _checked_name(text, field)


# --------------------------------------------------------------------------------------------
# Parsers


def parse_target(text: str, field: str = "table") -> Target:
    """``schema.table``, ``table`` (the connection's search path), ``"my.schema"."my.table"``.

    Names are exact (case-sensitive, nothing folded); a part holding a dot or a quote is written
    in double quotes, with ``""`` for a quote inside.  Empty parts are refused."""
    parts: list[str] = []
    i = 0
    while True:
        if i < len(text) and text[i] == '"':
            j, out = i + 1, []
            while j < len(text):
                if text[j] == '"':
                    if text[j + 1:j + 2] == '"':
                        out.append('"')
                        j += 2
                        continue
                    break
                out.append(text[j])
                j += 1
            else:
                raise _invalid(field, f"{field}: unclosed double quote in {text!r}")
            parts.append("".join(out))
            i = j + 1
            if i < len(text) and text[i] != ".":
                raise _invalid(field, f"{field}: expected '.' after a quoted name in {text!r}")
        else:
            j = text.find(".", i)
            j = len(text) if j < 0 else j
            part = text[i:j]
            if '"' in part:
                raise _invalid(field, f"{field}: a quote inside an unquoted name in {text!r}")
            parts.append(part)
            i = j
        if i >= len(text):
            break
        i += 1  # the dot
        if i >= len(text):
            parts.append("")
            break
    if any(not p for p in parts):
        raise _invalid(field, f"{field}: {text!r} has an empty name; write schema.name or name")
    if len(parts) > 2:
        raise _invalid(field, f"{field}: {text!r} has {len(parts)} parts; write schema.name or name "
                              "(quote a name holding a dot: \"my.table\")")
    return Target(parts[0], parts[1]) if len(parts) == 2 else Target(None, parts[0])


def parse_select(text: str, field: str = "select") -> list[str] | None:
    """``a,b,"my col"`` → the column names; ``*`` (or nothing) → None, all columns."""
    if text.strip() in ("", "*"):
        return None
    columns: list[str] = []
    for raw in _split_top(text, field):
        item = raw.strip()
        if item == "*":
            raise _invalid(field, f"{field}: * cannot be combined with columns; give * alone or only columns")
        if not item:
            raise _invalid(field, f"{field}: an empty column in {text!r}")
        if not _is_quoted(item):
            if "(" in item:
                raise _invalid(field, f"{field}: {item!r}: embedded resources are not supported")
            if "::" in item:
                raise _invalid(field, f"{field}: {item!r}: casts are not supported")
            if ":" in item:
                raise _invalid(field, f"{field}: {item!r}: aliases are not supported")
        name = _name(item, field)
        if name in columns:
            raise _invalid(field, f"{field}: the column {name!r} is given twice")
        columns.append(name)
    return columns


def parse_order(text: str, field: str = "order") -> list[dict[str, Any]]:
    """``a.desc.nullslast,b`` → Find Rows' orderBy."""
    keys: list[dict[str, Any]] = []
    for raw in _split_top(text, field):
        item = raw.strip()
        if not item:
            raise _invalid(field, f"{field}: an empty sort key in {text!r}")
        if not _is_quoted(item.partition(".")[0]) and not item.startswith('"') and "(" in item:
            raise _invalid(field, f"{field}: {item!r}: ordering by embedded resources is not supported")
        name, rest = _take_name(item, field)
        key: dict[str, Any] = {"column": name}
        modifiers = rest.split(".") if rest else []
        if modifiers and modifiers[0] in ("asc", "desc"):
            key["direction"] = modifiers.pop(0)
        if modifiers and modifiers[0] in ("nullsfirst", "nullslast"):
            key["nulls"] = modifiers.pop(0)[5:]
        if modifiers:
            raise _invalid(field, f"{field}: {item!r}: unknown modifier {modifiers[0]!r}; use asc, desc, "
                                  "nullsfirst, nullslast")
        keys.append(key)
    return keys


def parse_filters(query_params: Iterable[tuple[str, str]],
                  reserved: Iterable[str] = RESERVED_PARAMS) -> list[dict[str, Any]]:
    """The filters among *query_params* → the actions' structured ``where`` list (all must hold)."""
    return _filters(query_params, frozenset(reserved))[0]


def _filters(query_params: Iterable[tuple[str, str]],
             reserved: frozenset[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    where: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    for key, value in query_params:
        if key in reserved:
            continue
        fields[f"where/{len(where)}"] = key
        where.append(_filter(key, value))
    return where, fields


def _filter(key: str, value: str) -> dict[str, Any]:
    negate, group = False, key
    if group.startswith("not."):
        negate, group = True, group[4:]
    if group in ("or", "and"):
        node = _group(group, value, key)
        return _negate(node, key) if negate else node
    if group.endswith((".or", ".and")) and not _is_quoted(key):
        raise _invalid(key, f"{key}: filters on embedded resources are not supported")
    column = _name(key, key)
    return _condition(column, value, key, in_tree=False)


def _group(kind: str, value: str, field: str, depth: int = 1) -> dict[str, Any]:
    """``(a.eq.1,b.gt.2,and(c.lt.3,d.is.null))`` → {"or"|"and": [...]}."""
    if depth > MAX_GROUP_DEPTH:
        raise _invalid(field, f"{field}: groups nested deeper than {MAX_GROUP_DEPTH} levels")
    if not (value.startswith("(") and value.endswith(")")):
        raise _invalid(field, f"{field}: expected a parenthesized list, e.g. {kind}=(a.eq.1,b.gt.2)")
    items = []
    for raw in _split_top(value[1:-1], field):
        item = raw.strip()
        if not item:
            raise _invalid(field, f"{field}: an empty condition in {value!r}")
        match = re.fullmatch(r"(not\.)?(and|or)(\(.*\))", item, flags=re.S)
        if match:
            node = _group(match.group(2), match.group(3), field, depth + 1)
            items.append(_negate(node, field) if match.group(1) else node)
            continue
        column, rest = _take_name(item, field)
        if not rest:
            raise _invalid(field, f"{field}: {item!r} needs column.operator.value")
        items.append(_condition(column, rest, field, in_tree=True))
    return {kind: items}


def _condition(column: str, expr: str, field: str, in_tree: bool) -> dict[str, Any]:
    op, dot, value = expr.partition(".")
    negate = False
    if op == "not":
        negate = True
        op, dot, value = value.partition(".")
    if "(" in op and op.split("(")[0] in _OPERATORS:
        raise _invalid(field, f"{field}: the modifier in {op!r} (any/all) is not supported")
    if op in _UNSUPPORTED_OPERATORS:
        raise _invalid(field, f"{field}: the operator {op!r} is not supported; supported: "
                              f"{', '.join(_OPERATORS)}")
    if op not in _OPERATORS:
        raise _invalid(field, f"{field}: unknown operator {op!r}; supported: {', '.join(_OPERATORS)} "
                              "(each may follow not.)")
    if not dot:
        raise _invalid(field, f"{field}: the operator {op!r} needs a value ({op}.value)")
    if in_tree and _is_quoted(value) and op != "in":
        value = _unquote(value)
    node: dict[str, Any]
    if op == "in":
        node = {"column": column, "operator": "in", "value": _in_list(value, field)}
    elif op == "is":
        word = value.lower()
        if word not in _IS_VALUES:
            raise _invalid(field, f"{field}: is takes null, not_null, true, false or unknown, not {value!r}")
        if _IS_VALUES[word] is None:
            node = {"column": column, "operator": "is null"}
        elif _IS_VALUES[word] == "not_null":
            node = {"column": column, "operator": "is not null"}
        else:
            node = {"column": column, "operator": "is", "value": _IS_VALUES[word]}
    elif op in ("like", "ilike"):
        node = {"column": column, "operator": op, "value": value.replace("*", "%")}
    else:
        node = {"column": column, "operator": _OPERATORS[op], "value": value}
    return _negate(node, field) if negate else node


def _in_list(value: str, field: str) -> list[str]:
    if not (value.startswith("(") and value.endswith(")")):
        raise _invalid(field, f"{field}: in takes a parenthesized list, e.g. in.(a,b,\"c,d\")")
    inner = value[1:-1]
    if inner == "":
        return []
    return [_unquote(v) if _is_quoted(v) else v for v in _split_top(inner, field)]


def _always(column: str) -> dict[str, Any]:
    return {"or": [{"column": column, "operator": "is null"}, {"column": column, "operator": "is not null"}]}


def _negate(node: dict[str, Any], field: str) -> dict[str, Any]:
    """NOT node, with the actions' operators (De Morgan for groups)."""
    if "or" in node:
        return {"and": [_negate(n, field) for n in node["or"]]}
    if "and" in node:
        return {"or": [_negate(n, field) for n in node["and"]]}
    column, op = node["column"], node["operator"]
    if op in _NEGATED:
        return {**node, "operator": _NEGATED[op]}
    if op == "is":  # IS NOT TRUE: false or null
        return {"or": [{"column": column, "operator": "is", "value": not node["value"]},
                       {"column": column, "operator": "is null"}]}
    if op == "in":  # NOT (x = ANY(list)): x differs from each
        values = node["value"]
        if not values:
            return _always(column)
        if len(values) == 1:
            return {"column": column, "operator": "ne", "value": values[0]}
        return {"and": [{"column": column, "operator": "ne", "value": v} for v in values]}
    postgrest = {"contains": "cs"}.get(op, op)
    raise _invalid(field, f"{field}: not.{postgrest} is not supported (the actions have no negated {postgrest})")


def parse_prefer(values: str | Iterable[str] | None) -> dict[str, str]:
    """``Prefer`` header value(s) → {"return": "representation", "count": "exact", …}.

    Unknown preferences are ignored, as PostgREST does, unless ``handling=strict`` is among them."""
    if values is None:
        return {}
    texts = [values] if isinstance(values, str) else list(values)
    prefs: dict[str, str] = {}
    unknown: list[str] = []
    for text in texts:
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            key, _, val = item.partition("=")
            key, val = key.strip().lower(), val.strip()
            if key == "max-affected" and val.isdigit():
                prefs[key] = val
            elif val in _PREFERENCES.get(key, ()):
                prefs[key] = val
            else:
                unknown.append(item)
    if unknown and prefs.get("handling") == "strict":
        raise _invalid("Prefer", f"Prefer: unknown or invalid preference(s): {', '.join(unknown)}")
    return prefs


def _prefs(prefer: str | Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    return dict(prefer) if isinstance(prefer, Mapping) else parse_prefer(prefer)


def _nonnegative(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    text = params[name].strip()
    if not text.isdigit():
        raise _invalid(name, f"{name}: {params[name]!r} is not a whole number ≥ 0")
    return int(text)


def _single(params: list[tuple[str, str]], names: Iterable[str]) -> dict[str, str]:
    """The reserved parameters, each given at most once."""
    found: dict[str, str] = {}
    for key, value in params:
        if key in names:
            if key in found:
                raise _invalid(key, f"{key}: given more than once")
            found[key] = value
    return found


def _allow_all(params: dict[str, str]) -> bool:
    value = params.get("allowAllRows")
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise _invalid("allowAllRows", "allowAllRows: use true or false")
    return value.lower() == "true"


# --------------------------------------------------------------------------------------------
# Routes → calls


def table_read(target: Target | str, params: Iterable[tuple[str, str]],
               prefer: str | Iterable[str] | Mapping[str, str] | None = None, *,
               accept: str | None = None, max_rows: int | None = None) -> RecordCall:
    """``GET /tables/{schema}.{table}?select=&order=&limit=&offset=&<filters>`` → Find Rows.

    Without ``limit`` every row is asked for (up to *max_rows*, the service's cap, else Find Rows'
    maximum; the output cap still applies).  ``Prefer: count=exact`` adds a ``count_call``.
    ``accept`` ``application/vnd.pgrst.object+json`` asks for one row as an object."""
    target = parse_target(target) if isinstance(target, str) else target
    params = list(params)
    reserved = _single(params, RESERVED_PARAMS)
    for name in ("columns", "on_conflict", "allowAllRows"):
        if name in reserved:
            raise _invalid(name, f"{name}: does not apply to reading rows")
    prefs = _prefs(prefer)
    where, fields = _filters(params, RESERVED_PARAMS)
    inputs: dict[str, Any] = target.inputs()
    select = parse_select(reserved["select"]) if "select" in reserved else None
    if select:
        inputs["select"] = select
        fields["select"] = "select"
    if where:
        inputs["where"] = where
    if "order" in reserved:
        inputs["orderBy"] = parse_order(reserved["order"])
        fields["orderBy"] = "order"
    cap = min(max_rows, FIND_ROWS_MAX) if max_rows is not None else FIND_ROWS_MAX
    limit = _nonnegative(reserved, "limit")
    offset = _nonnegative(reserved, "offset") or 0
    single = bool(accept) and SINGLE_OBJECT in (accept or "")
    inputs["limit"] = 2 if single else (cap if limit is None else min(limit, cap))
    if offset:
        inputs["offset"] = offset
    call = RecordCall("find_rows", inputs, read_only=True, kind="single" if single else "rows", fields=fields)
    if prefs.get("count") == "exact" and not single:
        call.count_exact = True
        call.preference_applied.append("count=exact")
        call.count_call = _count_call(target, select, where, inputs.get("orderBy"))
    return call


def _count_call(target: Target, select: list[str] | None, where: list[dict[str, Any]],
                order: list[dict[str, Any]] | None) -> RecordCall:
    """Find Rows has no count: the count reads the matching rows' narrowest known column (one the
    request names, else all of them) and takes rowCount, up to COUNT_LIMIT rows."""
    column = (select[0] if select else None) or _first_column(where) or (order[0]["column"] if order else None)
    inputs: dict[str, Any] = {**target.inputs(), "limit": COUNT_LIMIT}
    if column:
        inputs["select"] = [column]
    if where:
        inputs["where"] = where
    return RecordCall("find_rows", inputs, read_only=True, kind="count")


def _first_column(where: list[dict[str, Any]]) -> str | None:
    for node in where:
        if "column" in node:
            return str(node["column"])
        found = _first_column(node.get("or") or node.get("and") or [])
        if found:
            return found
    return None


def _write_params(params: list[tuple[str, str]], allowed: Iterable[str]) -> dict[str, str]:
    reserved = _single(params, RESERVED_PARAMS)
    for name in reserved:
        if name not in allowed:
            raise _invalid(name, f"{name}: is not supported on this request")
    if "select" in reserved and parse_select(reserved["select"]) is not None:
        raise _invalid("select", "select: on writes only * (the whole rows) is supported")
    return reserved


def _write_prefs(call: RecordCall, prefs: dict[str, str]) -> None:
    if prefs.get("return") == "representation":
        call.return_representation = True
        call.inputs["returning"] = True
        call.preference_applied.append("return=representation")
    if prefs.get("count") == "exact":
        call.count_exact = True
        call.preference_applied.append("count=exact")
    if prefs.get("tx") == "rollback":
        call.inputs["dryRun"] = True
        call.preference_applied.append("tx=rollback")
    if "max-affected" in prefs and prefs.get("handling") == "strict":
        call.inputs["maxAffectedRows"] = int(prefs["max-affected"])
        call.preference_applied.append(f"max-affected={prefs['max-affected']}")


def table_insert(target: Target | str, body: Any,
                 prefer: str | Iterable[str] | Mapping[str, str] | None = None,
                 params: Iterable[tuple[str, str]] = ()) -> RecordCall:
    """``POST /tables/{schema}.{table}`` with one object or an array of objects → Insert Row /
    Insert Rows; ``Prefer: resolution=merge-duplicates`` (or ``ignore-duplicates``) → Upsert Rows
    (``?on_conflict=a,b``: the unique key; default the primary key).  ``?columns=a,b`` keeps only
    these keys of the body.  A key a row leaves out gets the column's default."""
    target = parse_target(target) if isinstance(target, str) else target
    params = list(params)
    reserved = _write_params(params, ("select", "columns", "on_conflict"))
    filters = [key for key, _ in params if key not in RESERVED_PARAMS]
    if filters:
        raise _invalid(filters[0], f"{filters[0]}: filters do not apply to POST (inserting rows)")
    prefs = _prefs(prefer)
    rows = body if isinstance(body, list) else [body]
    for index, row in enumerate(rows):
        where_ = "body" if not isinstance(body, list) else f"body/{index}"
        if not isinstance(row, dict):
            raise _invalid(where_, "the body must be a JSON object or an array of objects")
        if not row:
            raise _invalid(where_, f"{where_}: an empty object; give at least one column (a row of only "
                                   "defaults is not supported)")
    if "columns" in reserved:
        wanted = parse_select(reserved["columns"], "columns")
        if wanted is not None:
            rows = [{k: v for k, v in row.items() if k in wanted} for row in rows]
    resolution = prefs.get("resolution")
    inputs: dict[str, Any] = target.inputs()
    fields = {"rows": "body", "columns": "body"}
    if resolution:
        action = "upsert_rows"
        inputs["rows"] = rows
        inputs["onConflict"] = "update" if resolution == "merge-duplicates" else "skip"
        if "on_conflict" in reserved:
            conflict = parse_select(reserved["on_conflict"], "on_conflict")
            if not conflict:
                raise _invalid("on_conflict", "on_conflict: give the unique key's columns, e.g. on_conflict=email")
            inputs["conflictColumns"] = conflict
            fields["conflictColumns"] = "on_conflict"
        kind = "rows"
    elif "on_conflict" in reserved:
        raise _invalid("on_conflict", "on_conflict: needs Prefer: resolution=merge-duplicates or ignore-duplicates")
    elif isinstance(body, dict):
        action, kind = "insert_row", "row"
        inputs["columns"] = rows[0]
    else:
        action, kind = "insert_rows", "rows"
        inputs["rows"] = rows
    call = RecordCall(action, inputs, read_only=False, kind=kind, method="POST", fields=fields)
    if resolution:
        call.preference_applied.append(f"resolution={resolution}")
    _write_prefs(call, prefs)
    if action == "insert_row":
        call.inputs.pop("returning", None)  # Insert Row always returns the row
    return call


def table_update(target: Target | str, body: Any, params: Iterable[tuple[str, str]],
                 prefer: str | Iterable[str] | Mapping[str, str] | None = None) -> RecordCall:
    """``PATCH /tables/{schema}.{table}?<filters>`` with an object of new values → structured
    Update Rows.  No filter: refused unless ``?allowAllRows=true``."""
    target = parse_target(target) if isinstance(target, str) else target
    params = list(params)
    reserved = _write_params(params, ("select", "allowAllRows"))
    if not isinstance(body, dict) or not body:
        raise _invalid("body", "the body must be a JSON object of the columns to change, with at least one")
    where, fields = _filters(params, RESERVED_PARAMS)
    allow_all = _allow_all(reserved)
    if not where and not allow_all:
        raise _invalid("allowAllRows", "PATCH without a filter would change every row; add a filter "
                                       "(e.g. ?id=eq.5) or ?allowAllRows=true if that is intended")
    inputs: dict[str, Any] = {**target.inputs(), "set": body}
    inputs["where" if where else "allowAllRows"] = where if where else True
    fields["set"] = "body"
    call = RecordCall("update_rows", inputs, read_only=False, kind="rows", method="PATCH", fields=fields)
    _write_prefs(call, _prefs(prefer))
    return call


def table_delete(target: Target | str, params: Iterable[tuple[str, str]],
                 prefer: str | Iterable[str] | Mapping[str, str] | None = None) -> RecordCall:
    """``DELETE /tables/{schema}.{table}?<filters>`` → structured Delete Rows.  No filter: refused
    unless ``?allowAllRows=true``."""
    target = parse_target(target) if isinstance(target, str) else target
    params = list(params)
    reserved = _write_params(params, ("select", "allowAllRows"))
    where, fields = _filters(params, RESERVED_PARAMS)
    allow_all = _allow_all(reserved)
    if not where and not allow_all:
        raise _invalid("allowAllRows", "DELETE without a filter would delete every row; add a filter "
                                       "(e.g. ?id=eq.5) or ?allowAllRows=true if that is intended")
    inputs: dict[str, Any] = target.inputs()
    inputs["where" if where else "allowAllRows"] = where if where else True
    call = RecordCall("delete_rows", inputs, read_only=False, kind="rows", method="DELETE", fields=fields)
    _write_prefs(call, _prefs(prefer))
    return call


def rpc(target: Target | str, arguments: Any, method: str = "POST") -> RecordCall:
    """``POST /rpc/{schema}.{function}`` with an object of named arguments (or ``GET`` with them
    as query parameters, a list of pairs; read-only) → Call Function."""
    target = parse_target(target, "function") if isinstance(target, str) else target
    method = method.upper()
    if method == "GET":
        pairs = list(arguments.items()) if isinstance(arguments, Mapping) else list(arguments or ())
        named: dict[str, Any] = {}
        for key, value in pairs:
            if key in named:
                raise _invalid(key, f"{key}: given more than once (variadic arguments are not supported)")
            named[key] = value
        arguments = named
    elif arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise _invalid("body", "the body must be a JSON object of named arguments")
    for name in ("select", "order", "limit", "offset"):
        if method == "GET" and name in arguments:
            raise _invalid(name, f"{name}: shaping a function's result is not supported; {name} would be "
                                 "passed as an argument")
    inputs = {**target.inputs("name"), "arguments": arguments}
    return RecordCall("call_function", inputs, read_only=method == "GET", kind="function", method=method,
                      fields={"arguments": "body" if method != "GET" else "arguments"})


def list_tables(schema: str | None = None) -> RecordCall:
    """``GET .../tables`` (``?schema=``) → List Tables; the body is the array of tables."""
    return RecordCall("list_tables", {"schema": schema} if schema else {}, read_only=True, kind="field",
                      body_field="tables")


def list_schemas(include_system: bool = False) -> RecordCall:
    """``GET .../schemas`` → List Schemas; the body is the array of schemas."""
    return RecordCall("list_schemas", {"includeSystem": True} if include_system else {}, read_only=True,
                      kind="field", body_field="schemas")


def list_functions(schema: str | None = None, name: str | None = None) -> RecordCall:
    """``GET .../functions`` (``?schema=&name=``) → List Functions; the body is the array of functions."""
    inputs = {k: v for k, v in (("schema", schema), ("name", name)) if v}
    return RecordCall("list_functions", inputs, read_only=True, kind="field", body_field="functions")


def table_metadata(target: Target | str) -> RecordCall:
    """``GET .../tables/{schema}.{table}/metadata`` → Get Table Metadata; the body is its output."""
    target = parse_target(target) if isinstance(target, str) else target
    return RecordCall("get_table_metadata", target.inputs(), read_only=True, kind="object")


# --------------------------------------------------------------------------------------------
# Answers


def count_needed(call: RecordCall, output: Mapping[str, Any]) -> bool:
    """Whether the app must run ``call.count_call``: not when the page itself shows the total
    (fewer rows than the limit, and some rows or no offset)."""
    if call.count_call is None:
        return False
    rows = len(output.get("rows") or [])
    limit = call.inputs.get("limit", FIND_ROWS_MAX)
    offset = call.inputs.get("offset", 0)
    return not (rows < limit and (rows > 0 or offset == 0))


def _content_range(offset: int, returned: int, total: int | None) -> str:
    span = f"{offset}-{offset + returned - 1}" if returned else "*"
    return f"{span}/{'*' if total is None else total}"


def shape_response(call: RecordCall, output: Mapping[str, Any],
                   count_output: Mapping[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
    """The action's output → (HTTP status, headers, body).  A body of None means no body.

    Reads: 200 with the rows as a JSON array and ``Content-Range: 0-49/*`` (``/1234`` with
    ``count=exact``; 206 when that total holds more rows than the page).  POST: 201, with the
    rows only for ``return=representation``.  PATCH/DELETE: 204, or 200 with the rows for
    ``return=representation``.  ``single``: the one row as an object; no row → NOT_FOUND, several
    → MULTIPLE_ROWS (raised)."""
    headers: dict[str, str] = {}
    if call.preference_applied:
        headers["Preference-Applied"] = ", ".join(call.preference_applied)
    kind = call.kind
    if kind == "field":
        return 200, headers, list(output.get(call.body_field or "", []))
    if kind == "object":
        return 200, headers, dict(output)
    if kind == "function":
        if "rows" in output:
            return 200, headers, list(output["rows"])
        if "out" in output:
            return 200, headers, output["out"]
        return 200, headers, output.get("result")
    if kind == "single":
        rows = list(output.get("rows") or [])
        if not rows:
            raise ActionError("NOT_FOUND", "no row matches the filters (one row was asked for as an object)")
        if len(rows) > 1:
            raise ActionError("MULTIPLE_ROWS", "more than one row matches the filters (one row was asked for "
                                               "as an object)")
        return 200, headers, rows[0]
    if call.method == "GET":
        rows = list(output.get("rows") or [])
        offset = call.inputs.get("offset", 0)
        total = _total(call, output, count_output)
        headers["Content-Range"] = _content_range(offset, len(rows), total)
        partial = total is not None and offset + len(rows) < total
        return (206 if partial else 200), headers, rows
    # writes
    if kind == "row":
        rows = [output["row"]] if output.get("row") is not None else []
    else:
        rows = list(output.get("rows") or [])
    affected = int(output.get("rowCount", len(rows)))
    if call.count_exact:
        headers["Content-Range"] = _content_range(0, len(rows) if call.return_representation else 0, affected)
    if call.return_representation:
        return call.success_status, headers, rows
    return call.success_status, headers, None


def _total(call: RecordCall, output: Mapping[str, Any], count_output: Mapping[str, Any] | None) -> int | None:
    if not call.count_exact:
        return None
    if count_output is not None:
        counted = int(count_output.get("rowCount", 0))
        return None if counted >= COUNT_LIMIT else counted
    if call.count_call is not None and not count_needed(call, output):
        return int(call.inputs.get("offset", 0)) + len(output.get("rows") or [])
    return None


def column_error_to_invalid(exc: ActionError, call: RecordCall | None = None) -> ActionError:
    """UNDEFINED_COLUMN from a records call → INVALID_INPUT (422) with the same detail (which names
    the column), its field the query parameter it came from.  Other errors are returned as they are."""
    if exc.code != "UNDEFINED_COLUMN":
        return exc
    payload = exc.payload
    action_field = payload.get("field")
    param = call.param_for(action_field) if call is not None else None
    extra = {k: v for k, v in payload.items()
             if k not in ("code", "message", "cause", "fix", "retryable", "sqlstate", "detail", "position")}
    extra["field"] = param or action_field or "select"
    detail = str(payload.get("detail") or payload.get("message"))
    if param and action_field:
        # the action's own path (where/0/column) means nothing to the caller: name the parameter
        detail = f"{param}: {detail.removeprefix(f'{action_field}: ')}"
    return ActionError("INVALID_INPUT", detail, sqlstate=payload.get("sqlstate"), extra=extra)

