"""The registry: a manifest's ``execution.handler`` → the small function that runs it.

The manifest meta-schema (schemas/action.schema.json) lists the same names, with the options
each handler takes, so a manifest naming an unknown handler fails when manifests load; a test
keeps the two lists equal.
"""

from __future__ import annotations

from pgactions.handlers.base import Call, Handler
from pgactions.handlers.bulk import run_insert_rows, run_upsert_rows
from pgactions.handlers.catalog import run_get_table_metadata, run_list_schemas, run_list_tables
from pgactions.handlers.functions import (
    run_call_function,
    run_create_function,
    run_delete_function,
    run_get_function,
    run_list_functions,
)
from pgactions.handlers.records import run_find_rows, run_get_row
from pgactions.handlers.sql import run_sql
from pgactions.handlers.structured_writes import run_delete_rows, run_update_rows
from pgactions.handlers.table_write import run_insert, run_upsert
from pgactions.handlers.transaction import run_transaction

__all__ = ["HANDLERS", "Call", "Handler"]

HANDLERS: dict[str, Handler] = {
    "sql": run_sql,
    "insert": run_insert,
    "upsert": run_upsert,
    "update_rows": run_update_rows,
    "delete_rows": run_delete_rows,
    "insert_rows": run_insert_rows,
    "upsert_rows": run_upsert_rows,
    "transaction": run_transaction,
    "list_schemas": run_list_schemas,
    "list_tables": run_list_tables,
    "get_table_metadata": run_get_table_metadata,
    "find_rows": run_find_rows,
    "get_row": run_get_row,
    "list_functions": run_list_functions,
    "get_function": run_get_function,
    "create_function": run_create_function,
    "delete_function": run_delete_function,
    "call_function": run_call_function,
}
