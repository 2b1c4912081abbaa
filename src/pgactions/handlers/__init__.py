"""The registry from a manifest's ``execution.handler`` to the small function that runs it."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ActionError
from .bulk import run_insert_rows, run_upsert_rows
from .sql import run_sql
from .structured import run_delete_rows, run_update_rows
from .table_write import run_insert, run_upsert
from .transaction import run_transaction

__all__ = ["HANDLERS", "get_handler"]

# handler(session, manifest, inputs, context) -> JSON bytes of the output object
Handler = Callable[..., bytes]

HANDLERS: dict[str, Handler] = {
    "sql": run_sql,
    "insert": run_insert,
    "upsert": run_upsert,
    "update_rows": run_update_rows,
    "delete_rows": run_delete_rows,
    "insert_rows": run_insert_rows,
    "upsert_rows": run_upsert_rows,
    "transaction": run_transaction,
}


def get_handler(name: str) -> Handler:
    try:
        return HANDLERS[name]
    except KeyError:
        raise ActionError("UNKNOWN_ACTION", f"no handler {name!r}; known handlers: "
                                            f"{', '.join(sorted(HANDLERS))}") from None
