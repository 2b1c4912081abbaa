"""Functions and procedures: list, read, create, delete, and call them (RPC).

A routine is found in the catalog by name (and by its argument types when several share the
name); everything sent back to the server about it is the server's own spelling (``regprocedure``
text, ``format_type``), or identifiers quoted by psycopg, and every argument value is bound, cast
to its declared type.  Call Function builds ``SELECT fn(…)``, ``SELECT * FROM fn(…)`` or
``CALL proc(…)`` from what the routine returns, fills OUT parameters of a procedure with NULL as
PostgreSQL requires, and reads the result sets of returned refcursors (inside one transaction, as
cursors live only that long).
"""

from __future__ import annotations

from typing import Any

import orjson
import pglast
from psycopg import sql as psql

from pgactions.db.output import Output, Rows
from pgactions.db.session import Session
from pgactions.handlers.base import Call
from pgactions.handlers.catalog import fetch
from pgactions.render.templating import quote_identifier
from pgactions.render.values import bind_value
from pgactions.spec.errors import ActionError

__all__ = ["run_call_function", "run_create_function", "run_delete_function", "run_get_function",
           "run_list_functions"]

_ROUTINES_SQL = """
SELECT p.oid::int8 AS oid, p.proname AS name, n.nspname AS schema,
       CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END AS kind,
       p.oid::regprocedure::text AS signature,
       pg_get_function_result(p.oid) AS "returns",
       array_position(current_schemas(true), n.nspname::text) AS path_position, p.proretset AS "returnsSet",
       rt.typname AS return_typname, l.lanname AS language,
       CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END AS volatility,
       p.pronargdefaults AS defaults, obj_description(p.oid, 'pg_proc') AS comment,
       ARRAY(SELECT coalesce(a.name, '') FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]), p.proargmodes,
             p.proargnames) WITH ORDINALITY a(type, mode, name, n) ORDER BY a.n) AS arg_names,
       ARRAY(SELECT coalesce(a.mode, 'i')::text FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
             p.proargmodes, p.proargnames) WITH ORDINALITY a(type, mode, name, n) ORDER BY a.n) AS arg_modes,
       ARRAY(SELECT format_type(a.type, NULL) FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
             p.proargmodes, p.proargnames) WITH ORDINALITY a(type, mode, name, n) ORDER BY a.n) AS arg_types,
       ARRAY(SELECT t.typname::text FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY
             a(type, n) JOIN pg_type t ON t.oid = a.type ORDER BY a.n) AS arg_typnames
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
JOIN pg_type rt ON rt.oid = p.prorettype
WHERE p.prokind IN ('f', 'p')
  AND (%(name)s::text IS NULL OR p.proname = %(name)s)
  AND (%(oid)s::oid IS NULL OR p.oid = %(oid)s)
  AND (CASE WHEN %(schema)s::text IS NOT NULL THEN n.nspname = %(schema)s
            WHEN %(oid)s::oid IS NOT NULL THEN true
            ELSE n.nspname = ANY(current_schemas(true)) END)
ORDER BY array_position(current_schemas(true), n.nspname::text), n.nspname, p.proname, p.oid
"""
_MODES = {"i": "IN", "o": "OUT", "b": "INOUT", "v": "VARIADIC", "t": "TABLE"}
_PASSED = ("IN", "INOUT", "VARIADIC")


def _routines(session: Session, name: str | None, schema: str | None, oid: int | None = None) -> list[dict[str, Any]]:
    rows = fetch(session, _ROUTINES_SQL, {"name": name, "schema": schema, "oid": oid})
    for row in rows:
        row["arguments"] = [{"name": n or None, "mode": _MODES.get(m, m), "type": t}
                            for n, m, t in zip(row["arg_names"], row["arg_modes"], row["arg_types"])]
    return rows


def _public(routine: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "schema", "kind", "signature", "arguments", "returns", "returnsSet", "language", "volatility",
            "comment")
    return {k: routine[k] for k in keys}


def run_list_functions(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    routines = [_public(r) for r in _routines(session, inputs.get("name"), inputs.get("schema") or _current(session))]
    return Output({"functions": routines, "count": len(routines)})


def _current(session: Session) -> str:
    return str(session.conn.execute("SELECT current_schema()").fetchone()[0])  # type: ignore[index]


def _find(session: Session, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The routines *inputs* name: by name (and schema), narrowed by argumentTypes when given."""
    name, schema, types = inputs["name"], inputs.get("schema"), inputs.get("argumentTypes")
    if types is not None:
        # The server parses the signature (regprocedure input), never our SQL text.
        # quote_identifier refuses a name PostgreSQL would truncate to another routine's name.
        target = quote_identifier(*([schema] if schema else []), name)
        row = session.conn.execute("SELECT to_regprocedure(%s)::oid::int8", [f"{target}({', '.join(types)})"]).fetchone()
        found = _routines(session, None, schema, row[0]) if row and row[0] else []
    else:
        found = _routines(session, name, schema)
    if not found:
        args = f"({', '.join(types)})" if types is not None else ""
        raise ActionError("UNDEFINED_FUNCTION", f"no function or procedure {name}{args} "
                                                f"{'in schema ' + repr(schema) if schema else 'on the search path'}",
                          extra={"field": "name"})
    return found


def _one(session: Session, inputs: dict[str, Any], candidates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = candidates if candidates is not None else _find(session, inputs)
    if len(found) > 1:
        raise ActionError("INVALID_INPUT", f"{len(found)} routines are called {inputs['name']}: "
                                           f"{'; '.join(r['signature'] for r in found)}. Give argumentTypes to pick one",
                          extra={"field": "argumentTypes", "signatures": [r["signature"] for r in found]})
    return found[0]


def run_get_function(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    routine = _one(session, inputs)
    definition = session.conn.execute("SELECT pg_get_functiondef(%s::oid)", [routine["oid"]]).fetchone()
    return Output({**_public(routine), "definition": definition[0] if definition else None})


def run_create_function(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    text = inputs["definition"]
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        raise ActionError("SYNTAX_ERROR", f"the definition does not parse: {exc}", extra={"field": "definition"}) from None
    if len(statements) != 1 or type(statements[0].stmt).__name__ != "CreateFunctionStmt":
        raise ActionError("INVALID_INPUT", "the definition must be one CREATE [OR REPLACE] FUNCTION or PROCEDURE "
                                           "statement", extra={"field": "definition"})
    node: Any = statements[0].stmt
    parts = [str(getattr(p, "sval", "")) for p in node.funcname]
    session.conn.execute(text.encode())  # a definition has no parameters: sent as the user wrote it
    return Output({"success": True, "name": parts[-1], "schema": parts[0] if len(parts) > 1 else None,
                          "kind": "procedure" if node.is_procedure else "function", "replace": bool(node.replace)})


def run_delete_function(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    routine = _one(session, inputs)
    # DROP ROUTINE takes functions and procedures; the signature is the server's own regprocedure text.
    cascade = " CASCADE" if inputs.get("cascade") else ""
    session.conn.execute(f"DROP ROUTINE {routine['signature']}{cascade}".encode())
    return Output({"success": True, "dropped": routine["signature"]})


def run_call_function(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    session.touched_session = True  # a routine may change session settings (set_config …)
    arguments = inputs.get("arguments", {})
    candidates = _find(session, inputs)
    if inputs.get("argumentTypes") is None:
        candidates = _first_on_path([r for r in candidates if _accepts(r, arguments)])
    if not candidates:
        raise ActionError("UNDEFINED_FUNCTION", f"no routine {inputs['name']} takes these arguments "
                                                f"({_describe(arguments)})", extra={"field": "arguments"})
    cast = True
    if len(candidates) > 1 and len({_shape(r) for r in candidates}) == 1:
        # Overloads that return alike (lower(text) / lower(anyrange) …): the server picks one from
        # the values, as it would for SQL written by hand.
        candidates, cast = candidates[:1], False
    routine = _one(session, inputs, candidates)
    statement, params = _call_statement(session, routine, arguments, cast)
    cursors_expected = "refcursor" in routine["arg_typnames"] or routine["return_typname"] == "refcursor"
    # Returned cursors live until the transaction ends: the action runs in one (it writes, as far
    # as the runtime knows), so they are read before it commits.
    return _call(session, routine, statement, params, read_cursors=cursors_expected)


def _first_on_path(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As PostgreSQL resolves an unqualified name: the routines of the first schema on the search
    path (pg_catalog implicitly first) that has one taking these arguments."""
    if not candidates:
        return candidates
    first = min(r["path_position"] or 0 for r in candidates)
    return [r for r in candidates if (r["path_position"] or 0) == first]


def _shape(routine: dict[str, Any]) -> tuple[Any, ...]:
    """What a call returns and how arguments are passed: equal shapes need no choosing."""
    return (routine["kind"], routine["returnsSet"], routine["return_typname"] == "record",
            tuple((a["name"], a["mode"]) for a in routine["arguments"]))


def _describe(arguments: Any) -> str:
    if isinstance(arguments, dict):
        return ", ".join(arguments) or "none"
    return f"{len(arguments)} positional"


def _accepts(routine: dict[str, Any], arguments: Any) -> bool:
    """Whether *arguments* (named or positional) fit the routine's parameters, defaults included."""
    passed = [a for a in routine["arguments"] if a["mode"] in _PASSED]
    required = len(passed) - routine["defaults"]
    if isinstance(arguments, list):
        return required <= len(arguments) <= len(passed)
    names = {a["name"] for a in passed}
    return set(arguments) <= names and all(a["name"] in arguments for a in passed[:required])


def _call_statement(session: Session, routine: dict[str, Any], arguments: Any,
                    cast: bool = True) -> tuple[psql.Composed, list[Any]]:
    procedure = routine["kind"] == "procedure"
    parts: list[psql.Composable] = []
    params: list[Any] = []
    positional = list(arguments) if isinstance(arguments, list) else None
    for arg in routine["arguments"]:
        if arg["mode"] == "TABLE" or (arg["mode"] == "OUT" and not procedure):
            continue
        type_sql = psql.SQL(arg["type"])  # the server's own format_type text
        if arg["mode"] == "OUT":  # a procedure's OUT parameter is given as NULL
            value: Any = None
            given = True
        elif positional is not None:
            given = bool(positional)
            value = positional.pop(0) if positional else None
        else:
            given = arg["name"] in arguments
            value = arguments.get(arg["name"])
        if not given:
            continue  # left to its default
        params.append(bind_value(value, json_column=arg["type"] in ("json", "jsonb")))
        placeholder = psql.SQL("%s::{}").format(type_sql) if cast else psql.SQL("%s")
        if positional is None and arg["name"]:
            parts.append(psql.SQL("{} => {}").format(psql.Identifier(arg["name"]), placeholder))
        else:
            parts.append(placeholder)
    target = psql.SQL("{}.{}").format(psql.Identifier(routine["schema"]), psql.Identifier(routine["name"]))
    call = psql.SQL("{}({})").format(target, psql.SQL(", ").join(parts))
    if procedure:
        return psql.SQL("CALL {}").format(call), params
    rows_of = routine["returnsSet"] or routine["return_typname"] == "record" or any(
        a["mode"] in ("OUT", "INOUT", "TABLE") for a in routine["arguments"])
    if rows_of:
        return psql.SQL("SELECT * FROM {}").format(call), params
    return psql.SQL("SELECT {} AS result").format(call), params


def _call(session: Session, routine: dict[str, Any], statement: psql.Composed, params: list[Any],
          read_cursors: bool = False) -> Output:
    result = session.run_statement(session.conn.cursor(), statement.as_string(session.conn), params)
    out: dict[str, Any] = {}
    if routine["returnsSet"] and routine["kind"] != "procedure":
        out["rowCount"] = result.count
        rows: Rows | None = result
    else:
        rows = None
        first = result.parsed()[:1]
        if routine["kind"] != "procedure" and result.columns == ["result"]:
            out["result"] = first[0]["result"] if first else None
        else:
            out["out"] = first[0] if first else {}
    if read_cursors:
        out["cursors"] = _fetch_cursors(session, result)
    return Output(out, rows)


def _fetch_cursors(session: Session, result: Rows) -> dict[str, Any]:
    """The rows of every refcursor the call returned (a refcursor's value is the cursor's name),
    streamed through the output budget like any result."""
    open_cursors = {row["name"] for row in session.query("SELECT name FROM pg_cursors")}
    found: dict[str, Any] = {}
    for row in result.parsed():
        for value in row.values():
            if isinstance(value, str) and value in open_cursors and value not in found:
                fetch_all = psql.SQL("FETCH ALL FROM {}").format(psql.Identifier(value)).as_string(session.conn)
                found[value] = orjson.Fragment(session.run_statement(session.conn.cursor(), fetch_all, None).as_array())
    return found
