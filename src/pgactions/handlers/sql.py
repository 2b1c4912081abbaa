"""Query Rows, Update Rows, Delete Rows and Execute Query: a user's SQL with bound parameters."""

from __future__ import annotations

from typing import Any

from pgactions.db.output import Output, Rows
from pgactions.db.session import Session
from pgactions.handlers.base import Call
from pgactions.render.sqltext import (
    bind_sql,
    check_placeholders,
    check_runnable,
    check_statement_kind,
    plain_statement,
    statement_info,
)
from pgactions.render.values import bind_value
from pgactions.spec.errors import ActionError

__all__ = ["bound_statement", "output_of", "run_sql"]


def run_sql(call: Call) -> Output:
    session = call.session
    inputs = call.inputs
    execution = call.manifest.execution
    plain = plain_statement(inputs["query"], execution.get("statementKind"))
    if plain is not None:  # no templates, checked before: only the placeholders depend on this call
        sql, values = inputs["query"], inputs.get("parameters", [])
        check_placeholders(plain[0].placeholders, len(values))
        params, info = [bind_value(v) for v in values], plain[1]
    else:
        sql, params = bound_statement(call, inputs)
        info = check_runnable(sql)
    cur = session.raw_cursor()
    # User SQL can change the session (SET, set_config even inside a SELECT, a function that
    # does): the session is reset after the action, so the next one starts clean.  A plain read
    # calling only built-in functions that cannot is spared the reset (the hot path).
    session.touched_session = session.touched_session or info.may_change_session
    if info.leaves_session_unusual:
        session.discard_after = True
    shape = execution.get("output", "rows")
    script = shape == "status" and not params and info.count > 1
    try:
        rows = _run_script(session, cur, sql) if script else session.run_statement(cur, sql, params)
    except UnicodeEncodeError:
        raise _unsendable(params) from None
    return output_of(shape, rows)


def bound_statement(call: Call, inputs: dict[str, Any]) -> tuple[str, list[Any]]:
    """The SQL with every template turned into a bound ``$n``, and the values to bind."""
    sql, values = bind_sql(inputs["query"], inputs.get("parameters", []), call.context)
    kind = call.option("statementKind")
    if kind:
        check_statement_kind(sql, kind)
    if sql is not inputs["query"] and call.session.conn.pgconn.parameter_status(b"standard_conforming_strings") != b"on":
        # An earlier step of this transaction switched it off: backslashes in strings would then
        # end them where our lexer does not see it.
        raise ActionError("INVALID_INPUT", "SQL with {{ templates }} cannot run after standard_conforming_strings "
                                           "was switched off", extra={"field": "query"})
    return sql, [bind_value(v) for v in values]


def _run_script(session: Session, cur: Any, sql: str) -> Rows:
    """Execute Query with several statements and no parameters, sent as one text; the output
    describes the last statement.  The result sets of the earlier ones are skipped as they
    arrive, and the last one is read under the output cap (see :meth:`Session.run_script`)."""
    return session.run_script(cur, sql, statement_info(sql).count)


def _unsendable(params: list[Any]) -> ActionError:
    for index, value in enumerate(params):
        try:
            str(value).encode("utf-8") if isinstance(value, str) else None
        except UnicodeEncodeError as exc:
            return ActionError("INVALID_VALUE", f"parameter {index + 1} holds text that is not valid Unicode "
                                                f"(a lone surrogate at position {exc.start})",
                               extra={"field": f"parameters/{index}"})
    return ActionError("INVALID_VALUE", "a value holds text that is not valid Unicode (a lone surrogate)")


def output_of(shape: str, rows: Rows) -> Output:
    """Rows for a query ("rows" shape, or any statement returning rows), else the row count;
    Execute Query ("status") also says success."""
    head: dict[str, Any] = {"success": True} if shape == "status" else {}
    head["rowCount"] = rows.row_count
    if shape == "rows" or rows.returned_rows:
        return Output(head, rows)
    return Output(head)
