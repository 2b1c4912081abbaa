"""Query Rows, Update Rows, Delete Rows and Execute Query: a user's SQL with bound parameters."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from pgactions.db.convert import to_json_bytes
from pgactions.db.session import Session
from pgactions.render.sqltext import analyse, bind_sql, check_statement_kind, statement_info
from pgactions.render.values import bind_value
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest

__all__ = ["run_sql", "run_sql_many", "with_rows"]

_ENVELOPE_BYTES = 64  # room kept under the cap for {"rows":[…],"rowCount":n,…}


def run_sql(session: Session, manifest: Manifest, inputs: dict[str, Any], context: dict[str, Any]) -> bytes:
    query = inputs["query"]
    shape = manifest.execution.get("output", "rows")
    sql, values = bind_sql(query, inputs.get("parameters", []), context)
    kind = manifest.execution.get("statementKind")
    if kind:
        check_statement_kind(sql, kind)
    session.parameters_given = len(inputs.get("parameters", []))
    session.prepare(read_only=manifest.read_only)
    cur = session.raw_cursor()
    params = [bind_value(v) for v in values]
    budget = session.limits.max_result_bytes - _ENVELOPE_BYTES
    script = shape == "status" and not params and statement_info(sql).count > 1

    def execute() -> Any:
        return _run_script(session, cur, sql, budget) if script else session.run_statement(cur, sql, params, budget)

    try:
        rows = execute()
    except psycopg.errors.ActiveSqlTransaction:
        # PgBouncer mode wraps each action in a transaction; VACUUM, CREATE INDEX CONCURRENTLY
        # and the like refuse one, so they run on their own (the pooler keeps the connection).
        if not session.leave_transaction():
            raise
        rows = execute()
    if analyse(query).touches_session or shape == "status":
        # The statement may have changed session settings (SET, set_config): re-apply next time.
        session.forget_session_state()
    return _output(shape, rows)


def run_sql_many(session: Session, manifest: Manifest, items: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Any]:
    """Batch ``single`` mode: the same query for every item, executed with each item's parameters
    as one prepared statement in one transaction (psycopg pipelines the executions)."""
    bound = [bind_sql(inputs["query"], inputs.get("parameters", []), context) for inputs, context in items]
    sql = bound[0][0]
    for index, (other, _values) in enumerate(bound):
        if other != sql:
            raise ActionError("INVALID_INPUT", f"single mode runs one statement: item {index}'s query differs from "
                                               "item 0's (use transaction mode)", extra={"itemIndex": index})
    kind = manifest.execution.get("statementKind")
    if kind:
        check_statement_kind(sql, kind)
    shape = manifest.execution.get("output", "rows")
    cur = session.raw_cursor()
    outputs: list[Any] = []
    with session.transaction(read_only=manifest.read_only):
        cur.executemany(sql, [[bind_value(v) for v in values] for _sql, values in bound], returning=True)
        while True:
            outputs.append(orjson.loads(_output(shape, session.read_rows(cur, session.limits.max_result_bytes))))
            if not cur.nextset():
                break
    return outputs


def _run_script(session: Session, cur: Any, sql: str, budget: int) -> Any:
    """Execute Query with several statements and no parameters: one implicit transaction (all or
    nothing); the output describes the last statement."""
    cur.execute(sql)
    while cur.nextset():
        pass
    return session.read_rows(cur, budget)


def _output(shape: str, rows: Any) -> bytes:
    """The output of a statement: rows for a query ("rows" shape, or any statement returning
    rows), else its row count; Execute Query ("status") also says success."""
    head: dict[str, Any] = {"success": True} if shape == "status" else {}
    head["rowCount"] = rows.row_count
    if shape == "rows" or rows.returned_rows:
        return with_rows(head, rows.body)
    return to_json_bytes(head)


def with_rows(head: dict[str, Any], body: bytes) -> bytes:
    """{"rows":[…], …head}: rows first, as the guide shows them, without re-serializing them."""
    return b'{"rows":[' + body + b"]," + to_json_bytes(head)[1:]
