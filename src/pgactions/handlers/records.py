"""Find Rows and Get Row: records by structured filters, without writing SQL.

The SELECT is built with SQLAlchemy Core from the table's real columns (quoted by SQLAlchemy,
values bound) and compiled with ``$n`` placeholders, so it runs through the same streaming,
conversion and 10 MB cap as Query Rows, in a read-only session.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pgactions.db.output import Output, Rows
from pgactions.db.session import Session
from pgactions.handlers.base import Call
from pgactions.handlers.table_write import DIALECT, TableInfo, table_info
from pgactions.render.filters import where_clause
from pgactions.spec.errors import ActionError

__all__ = ["run_find_rows", "run_get_row"]

_POSITIONAL = postgresql.psycopg.dialect(paramstyle="numeric_dollar")


def run_find_rows(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    info = table_info(session, inputs["table"], inputs.get("schema"))
    stmt, table = _select(info, inputs, inputs.get("where") or [])
    for index, order in enumerate(inputs.get("orderBy") or []):
        info.check_columns([order["column"]], f"orderBy/{index}/column")
        column = table.c[order["column"]]
        ordered = column.desc() if order.get("direction", "asc") == "desc" else column.asc()
        nulls = order.get("nulls")
        stmt = stmt.order_by(ordered.nulls_first() if nulls == "first" else ordered.nulls_last() if nulls == "last" else ordered)
    stmt = stmt.limit(inputs.get("limit", 100)).offset(inputs.get("offset", 0))
    rows = _stream_select(session, stmt, info.all_names)
    return Output({"rowCount": rows.count}, rows)


def run_get_row(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    info = table_info(session, inputs["table"], inputs.get("schema"))
    key = inputs.get("key") or {}
    where = inputs.get("where") or []
    if not key and not where:
        raise ActionError("INVALID_INPUT", "give the row's key (e.g. {\"id\": 5}) or where conditions",
                          extra={"field": "key"})
    conditions = [{"column": c, "operator": "eq", "value": v} for c, v in key.items()] + list(where)
    stmt, _table = _select(info, inputs, conditions, field="key" if key and not where else "where")
    stmt = stmt.limit(2)
    rows = _stream_select(session, stmt, info.all_names)
    described = ", ".join(f"{c} = {v!r}" for c, v in key.items()) or "the where conditions"
    if rows.count == 0:
        raise ActionError("NOT_FOUND", f"no row of {info.display} has {described}", extra={"table": info.display})
    if rows.count > 1:
        raise ActionError("MULTIPLE_ROWS", f"more than one row of {info.display} has {described}",
                          extra={"table": info.display})
    return Output({"row": rows.first()})


def _select(info: TableInfo, inputs: dict[str, Any], where: Any, field: str = "where") -> tuple[Any, sa.Table]:
    table = info.sa_table()
    wanted = inputs.get("select")
    if wanted:
        info.check_columns(wanted, "select")
    stmt = sa.select(*(table.c[c] for c in wanted)) if wanted else sa.select(table)
    if where:
        stmt = stmt.where(where_clause(table, info.sql_types, where, field))
    return stmt, table


def _stream_select(session: Session, stmt: Any, names: str = "") -> Rows:
    """Run the SELECT compiled with ``$n`` on the connection's reusable cursor.  SQLAlchemy's
    ``$n`` compile misreads a "%(" inside a quoted name as its own placeholder: names holding a
    "%" are compiled with named parameters instead, run on a cursor of their own."""
    if "%" in names:
        compiled = stmt.compile(dialect=DIALECT, compile_kwargs={"render_postcompile": True})
        return session.run_statement(session.conn.cursor(), str(compiled), compiled.params)
    compiled = stmt.compile(dialect=_POSITIONAL, compile_kwargs={"render_postcompile": True})
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    return session.run_statement(session.raw_cursor(), str(compiled), params)

