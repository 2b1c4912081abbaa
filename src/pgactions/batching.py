"""One action over a list of items (each with its own inputs and template context), three ways:

* ``independent`` — each item runs on its own (its own transaction); every item gets a result,
  ok or with its error, and a failure does not stop the rest.
* ``transaction`` — all items in one transaction; the first failure rolls everything back and
  the error names the item.
* ``single`` — one statement for all items, as the manifest's ``execution.singleBatch`` says:
  ``sameStatement`` (every item's SQL is the same text: one prepared statement executed with each
  item's parameters) or a bulk action built from the items (Insert Row → Insert Rows).

Every item goes through the same pipeline as an action of its own (:func:`pgactions.runtime.perform`,
handed in by the runtime), and its templates are rendered exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from pgactions.db.errormap import error_context
from pgactions.db.output import Output, serialize
from pgactions.db.session import Session
from pgactions.handlers.base import Call
from pgactions.handlers.sql import bound_statement, output_of
from pgactions.render.sqltext import check_runnable
from pgactions.render.stage import render_inputs
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest, get_manifest
from pgactions.spec.validation import validate_inputs

__all__ = ["MODES", "normalize_items", "run_batch_mode"]

MODES = ("single", "independent", "transaction")
Items = list[tuple[dict[str, Any], dict[str, Any]]]
Perform = Callable[..., Any]


def normalize_items(items: Any, base_context: dict[str, Any]) -> Items:
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


def run_batch_mode(mode: str, session: Session | None, manifest: Manifest, items: Items, perform: Perform,
                   run_item: Callable[[Any, dict[str, Any]], Any] | None = None,
                   finish: Callable[[Output], Any] | None = None) -> Any:
    """The batch's output (``independent``), or what *finish* makes of it inside the transaction."""
    if mode == "independent":
        assert run_item is not None
        return _independent(items, run_item)
    assert session is not None and finish is not None
    with session.unit(manifest.read_only):
        if mode == "transaction":
            return finish(_in_one_transaction(session, manifest, items, perform))
        return finish(_single(session, manifest, items, perform))


def _independent(items: Items, run_item: Callable[[Any, dict[str, Any]], Any]) -> Output:
    results: list[dict[str, Any]] = []
    for index, (inputs, context) in enumerate(items):
        try:
            results.append({"index": index, "ok": True, "output": run_item(inputs, context)})
        except ActionError as exc:
            results.append({"index": index, "ok": False, "error": exc.payload})
    failed = sum(not r["ok"] for r in results)
    return Output({"mode": "independent", "ok": failed == 0, "succeeded": len(results) - failed,
                   "failed": failed, "items": results})


def _in_one_transaction(session: Session, manifest: Manifest, items: Items, perform: Perform) -> Output:
    results = []
    for index, (inputs, context) in enumerate(items):
        with error_context(f"item {index}", itemIndex=index, rolledBack=True):
            output = perform(session, manifest, validate_inputs(manifest, inputs, f"items/{index}/inputs"), context)
        results.append(_ok(index, output))
    return Output({"mode": "transaction", "ok": True, "items": results})


def _ok(index: int, output: Output) -> dict[str, Any]:
    # The item's output is already within the budget: embedded as JSON, never parsed again.
    return {"index": index, "ok": True, "output": orjson.Fragment(serialize(output, 2**62))}


def _single(session: Session, manifest: Manifest, items: Items, perform: Perform) -> Output:
    plan = manifest.execution.get("singleBatch")
    checked = []
    for index, (inputs, context) in enumerate(items):
        with error_context(f"item {index}", itemIndex=index):
            item = validate_inputs(manifest, inputs, f"items/{index}/inputs")
            checked.append((render_inputs(item, context, manifest.execution.get("templates", {})), context))
    if plan == "sameStatement" and all("query" in inputs for inputs, _ in checked):
        return Output({"mode": "single", "ok": True, "items": _same_statement(session, manifest, checked)})
    if isinstance(plan, dict):
        output = _as_bulk(session, plan, checked, perform)
        return Output({"mode": "single", "ok": True, "output": orjson.Fragment(serialize(output, 2**62))})
    raise ActionError("INVALID_INPUT", f"single mode runs one statement for all items: {manifest.id} cannot "
                                       "(in this form); use transaction or independent", extra={"field": "mode"})


def _same_statement(session: Session, manifest: Manifest, items: Items) -> list[dict[str, Any]]:
    """The same SQL for every item, executed with each item's parameters as one prepared statement
    (psycopg pipelines the executions)."""
    calls = [Call(session, manifest, inputs, context, _no_steps) for inputs, context in items]
    bound = [bound_statement(call, call.inputs) for call in calls]
    sql = bound[0][0]
    for index, (other, _values) in enumerate(bound):
        if other != sql:
            raise ActionError("INVALID_INPUT", f"single mode runs one statement: item {index}'s query differs from "
                                               "item 0's (use transaction mode)", extra={"itemIndex": index})
    check_runnable(sql)
    session.touched_session = True
    cur = session.raw_cursor()
    cur.executemany(sql, [values for _sql, values in bound], returning=True)
    results: list[dict[str, Any]] = []
    shape = manifest.execution.get("output", "rows")
    while True:
        results.append(_ok(len(results), output_of(shape, session.read_rows(cur))))
        if not cur.nextset():
            break
    return results


def _no_steps(*_args: Any) -> Output:
    raise ActionError("INVALID_INPUT", "a batch item cannot run steps")


def _as_bulk(session: Session, plan: dict[str, Any], items: Items, perform: Perform) -> Output:
    """Items of Insert Row / Upsert Row as one call of Insert Rows / Upsert Rows: each item's
    (rendered) ``rowsFrom`` input is one row; the shared fields must be alike."""
    first = items[0][0]
    shared = plan["sharedFields"]
    for index, (inputs, _context) in enumerate(items):
        differing = [f for f in shared if inputs.get(f) != first.get(f)]
        if differing:
            raise ActionError("INVALID_INPUT", f"single mode needs the same {', '.join(differing)} for every item; "
                                               f"item {index} differs (use transaction mode instead)",
                              extra={"field": f"items/{index}/inputs/{differing[0]}", "itemIndex": index})
    bulk = {name: first[name] for name in shared if first.get(name) is not None}
    bulk["rows"] = [inputs[plan["rowsFrom"]] for inputs, _context in items]
    bulk_manifest = get_manifest(plan["bulkAction"])
    # The rows are rendered already: the bulk action renders nothing again.
    return perform(session, bulk_manifest, validate_inputs(bulk_manifest, bulk, templates=False), {},
                   rendered=True)  # type: ignore[no-any-return]
