"""Query Rows, Update Rows, Delete Rows and Execute Query: a user's SQL with bound parameters."""

from __future__ import annotations

from typing import Any

from ..convert import to_json_bytes
from ..execution import Session
from ..manifests import Manifest
from ..sqltext import analyse, bind_sql, returns_rows
from ..values import bind_value

__all__ = ["run_sql"]

_ENVELOPE_BYTES = 64  # room kept under the cap for {"rows":[…],"rowCount":n,…}


def run_sql(session: Session, manifest: Manifest, inputs: dict[str, Any], context: dict[str, Any]) -> bytes:
    query = inputs["query"]
    shape = manifest.execution.get("output", "rows")
    sql, values = bind_sql(query, inputs.get("parameters", []), context)
    session.parameters_given = len(inputs.get("parameters", []))
    session.prepare(read_only=manifest.read_only)
    cur = session.raw_cursor()
    params = [bind_value(v) for v in values]
    if manifest.read_only or returns_rows(sql):
        rows = session.stream_rows(cur, sql, params, session.limits.max_result_bytes - _ENVELOPE_BYTES)
    else:
        cur.execute(sql, params)
        rows = session.read_rows(cur, session.limits.max_result_bytes - _ENVELOPE_BYTES)
    if analyse(query).touches_session or shape == "status":
        # The statement may have changed session settings (SET, set_config): re-apply next time.
        session.forget_session_state()
    returned_rows = rows.returned_rows
    row_count = rows.count if returned_rows else max(cur.rowcount, 0)
    head: dict[str, Any] = {"success": True} if shape == "status" else {}
    head["rowCount"] = row_count
    if shape == "rows" or returned_rows:
        return _with_rows(head, rows.body)
    return to_json_bytes(head)


def _with_rows(head: dict[str, Any], body: bytes) -> bytes:
    """{"rows":[…], …head}: rows first, as the guide shows them, without re-serializing them."""
    return b'{"rows":[' + body + b"]," + to_json_bytes(head)[1:]
