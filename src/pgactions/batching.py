"""One action over a list of items (each with its own inputs and template context), three ways:

* ``independent`` — each item runs on its own (its own transaction); every item gets a result,
  ok or with its error, and a failure does not stop the rest.
* ``transaction`` — all items in one transaction; the first failure rolls everything back and
  the error names the item.
* ``single`` — one statement for all items where the action allows: Insert Row → Insert Rows,
  Upsert Row → Upsert Rows, and the SQL actions when every item's query is the same text (one
  prepared statement executed with each item's parameters, in one transaction).
"""

from __future__ import annotations

from typing import Any

import orjson

from pgactions.db.session import Session
from pgactions.handlers.dispatch import run_handler
from pgactions.handlers.sql import run_sql_many
from pgactions.handlers.transaction import run_in_one_transaction, validated_item
from pgactions.render.templating import render_value
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest, get_manifest
from pgactions.spec.validation import validate_inputs

__all__ = ["MODES", "normalize_items", "run_items"]

MODES = ("single", "independent", "transaction")
_BULK_OF = {"insert_row": "insert_rows", "upsert_row": "upsert_rows"}
_SHARED_UPSERT_FIELDS = ("table", "schema", "conflictColumns", "updateColumns")


def normalize_items(items: Any, base_context: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Items as (inputs, context): each item is ``{"inputs": {...}, "context"?: {...}}``."""
    if not isinstance(items, list) or not items:
        raise ActionError("INVALID_INPUT", "items must be a non-empty list of {inputs, context}",
                          extra={"field": "items"})
    normalized = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("inputs"), dict) \
                or not isinstance(item.get("context", {}), dict) or set(item) - {"inputs", "context"}:
            raise ActionError("INVALID_INPUT", f"item {index} must be an object {{inputs, context?}}",
                              extra={"field": f"items/{index}", "itemIndex": index})
        normalized.append((item["inputs"], {**base_context, **item.get("context", {})}))
    return normalized


def run_items(session: Session, manifest: Manifest, items: list[tuple[dict[str, Any], dict[str, Any]]],
              mode: str) -> dict[str, Any]:
    """The batch output for ``transaction`` and ``single`` (``independent`` runs item by item)."""
    if mode == "transaction":
        outputs = run_in_one_transaction(session, manifest, items)
        return {"mode": mode, "ok": True, "results": [{"index": i, "ok": True, "output": o} for i, o in enumerate(outputs)]}
    if mode == "single":
        return {"mode": mode, "ok": True, **_single(session, manifest, items)}
    raise ActionError("INVALID_INPUT", f"batch mode must be one of {', '.join(MODES)}", extra={"field": "mode"})


def _single(session: Session, manifest: Manifest, items: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    checked = [(validated_item(manifest, inputs, index), context) for index, (inputs, context) in enumerate(items)]
    if manifest.id in _BULK_OF:
        return {"output": _as_bulk(session, manifest, checked)}
    if manifest.handler in ("sql", "update_rows", "delete_rows") and all("query" in i for i, _ in checked):
        outputs = run_sql_many(session, manifest, checked)
        return {"results": [{"index": i, "ok": True, "output": o} for i, o in enumerate(outputs)]}
    raise ActionError("INVALID_INPUT", f"single mode runs one statement for all items: it is available for "
                                       f"insert_row, upsert_row and SQL queries, not {manifest.id} in this form; "
                                       "use transaction or independent", extra={"field": "mode"})


def _as_bulk(session: Session, manifest: Manifest, checked: list[tuple[dict[str, Any], dict[str, Any]]]) -> Any:
    """Insert Row / Upsert Row items as one Insert Rows / Upsert Rows call."""
    first = checked[0][0]
    for index, (inputs, _context) in enumerate(checked):
        differing = [f for f in _SHARED_UPSERT_FIELDS if inputs.get(f) != first.get(f)]
        if differing:
            raise ActionError("INVALID_INPUT", f"single mode needs the same {', '.join(differing)} for every item; "
                                               f"item {index} differs (use transaction mode instead)",
                              extra={"field": f"items/{index}/inputs/{differing[0]}", "itemIndex": index})
    rows = [render_value(inputs["columns"], context) for inputs, context in checked]
    bulk = {k: v for k, v in first.items() if k in _SHARED_UPSERT_FIELDS and v is not None}
    bulk["rows"] = rows
    bulk_manifest = get_manifest(_BULK_OF[manifest.id])
    return orjson.loads(run_handler(session, bulk_manifest, validate_inputs(bulk_manifest, bulk), {}))
