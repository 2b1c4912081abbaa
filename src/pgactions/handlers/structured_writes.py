"""Update Rows and Delete Rows without SQL: a table, the new values (``set``) and ``where``
conditions; built with SQLAlchemy Core from the table's real columns, every value bound.

With ``query`` the action runs the user's SQL instead (:func:`run_sql`).  A structured statement
without conditions would touch every row of the table: that takes ``allowAllRows: true``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pgactions.db.output import Output
from pgactions.handlers.base import Call
from pgactions.handlers.sql import run_sql
from pgactions.handlers.table_write import DIALECT, bound_values, table_info, typed_values
from pgactions.render.filters import is_empty, where_clause
from pgactions.spec.errors import ActionError

__all__ = ["run_delete_rows", "run_update_rows"]


def run_update_rows(call: Call) -> Output:
    inputs = call.inputs
    if _sql_mode(inputs, ("set", "where", "allowAllRows", "returning")):
        return run_sql(call)
    if not inputs.get("set"):
        raise ActionError("INVALID_INPUT", "give the new values in set (or an UPDATE statement in query)",
                          extra={"field": "set"})
    info = table_info(call.session, inputs["table"], inputs.get("schema"))
    info.check_columns(list(inputs["set"]), "set")
    table = info.sa_table()
    stmt = sa.update(table).values(bound_values(table, typed_values(info, inputs["set"])))
    return _with_conditions(call, info, table, stmt)


def run_delete_rows(call: Call) -> Output:
    inputs = call.inputs
    if _sql_mode(inputs, ("where", "allowAllRows", "returning")):
        return run_sql(call)
    info = table_info(call.session, inputs["table"], inputs.get("schema"))
    table = info.sa_table()
    return _with_conditions(call, info, table, sa.delete(table))


def _sql_mode(inputs: dict[str, Any], structured_fields: tuple[str, ...]) -> bool:
    """SQL mode with ``query``; structured mode with ``table``; never both."""
    if "query" in inputs:
        mixed = [f for f in ("table", "schema", *structured_fields) if inputs.get(f) not in (None, False)]
        if mixed:
            raise ActionError("INVALID_INPUT", f"give either query (SQL mode) or table (structured mode), not "
                                               f"both: remove {', '.join(mixed)} or query", extra={"field": mixed[0]})
        return True
    if "table" not in inputs:
        raise ActionError("INVALID_INPUT", "give a table (structured mode) or a query (SQL mode)",
                          extra={"field": "table"})
    return False


def _with_conditions(call: Call, info: Any, table: sa.Table, stmt: Any) -> Output:
    inputs = call.inputs
    where = inputs.get("where")
    if is_empty(where):
        if not inputs.get("allowAllRows"):
            raise ActionError("INVALID_INPUT", f"no where conditions: this would change every row of "
                                               f"{info.display}. Add conditions, or set allowAllRows to true "
                                               "if that is what you want", extra={"field": "where"})
    else:
        stmt = stmt.where(where_clause(table, info.sql_types, where))
    returning = bool(inputs.get("returning"))
    if returning:
        stmt = stmt.returning(*table.c)
    compiled = stmt.compile(dialect=DIALECT)
    cur = call.session.conn.execute(str(compiled), compiled.params)
    # Returned rows are read in chunks under the output cap, like Query Rows'.
    rows = call.session.read_rows(cur)
    return Output({"rowCount": rows.row_count}, rows if returning else None)
