"""Several actions in one transaction: Run Transaction's steps, and a batch in ``transaction`` mode.

Each step is a whole action (its manifest's validation, templates, handler and guards) on the
same connection inside one transaction.  The first failure rolls back everything and the error
names the step or item; a later step can template on earlier steps' outputs
(``{{ steps.insert_order.insertedId }}``).

Query Rows inside a transaction cannot be made read-only on its own (a transaction's read-write
mode is fixed at its start); the parser check (a single reading statement) still applies.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from pgactions.db.errormap import map_exception
from pgactions.db.session import Session
from pgactions.handlers.dispatch import run_handler
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest, get_manifest
from pgactions.spec.validation import validate_inputs

__all__ = ["run_in_one_transaction", "run_transaction", "validated_item"]


def run_transaction(session: Session, manifest: Manifest, inputs: dict[str, Any], context: dict[str, Any]) -> bytes:
    steps = inputs["steps"]
    ids = [step.get("id") or f"step{i + 1}" for i, step in enumerate(steps)]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ActionError("INVALID_INPUT", f"step ids must be unique: {', '.join(repeated)}",
                          extra={"field": "steps"})
    outputs: dict[str, Any] = {}
    results = []

    def step_context() -> dict[str, Any]:
        return {**context, "steps": {**context.get("steps", {}), **outputs}}

    with session.transaction():
        for index, (step_id, step) in enumerate(zip(ids, steps)):
            where = {"step": step_id, "stepIndex": index}
            with _naming_failure(session, where, f"step {step_id!r} ({step['action']})"):
                step_manifest = _step_manifest(step["action"])
                checked = _validated(step_manifest, step.get("inputs", {}), f"steps/{index}/inputs")
                output = orjson.loads(run_handler(session, step_manifest, checked, step_context()))
            outputs[step_id] = output
            results.append({"id": step_id, "action": step["action"], "output": output})
    return orjson.dumps({"committed": True, "steps": results})


def run_in_one_transaction(session: Session, manifest: Manifest, items: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Any]:
    """Batch ``transaction`` mode: each (inputs, context) item in turn; all or nothing."""
    outputs = []
    with session.transaction():
        for index, (inputs, context) in enumerate(items):
            with _naming_failure(session, {"itemIndex": index}, f"item {index}"):
                checked = validated_item(manifest, inputs, index)
                outputs.append(orjson.loads(run_handler(session, manifest, checked, context)))
    return outputs


def _step_manifest(action: str) -> Manifest:
    if action == "run_transaction":
        raise ActionError("INVALID_INPUT", "a transaction's step cannot be another run_transaction")
    return get_manifest(action)


def validated_item(manifest: Manifest, inputs: Any, index: int) -> dict[str, Any]:
    """A batch item's inputs, validated; errors point at items/<index>/inputs/… and name the item."""
    try:
        return _validated(manifest, inputs, f"items/{index}/inputs")
    except ActionError as exc:
        exc.payload["itemIndex"] = index
        raise


def _validated(manifest: Manifest, inputs: Any, path: str) -> dict[str, Any]:
    try:
        return validate_inputs(manifest, inputs)
    except ActionError as exc:
        for error in exc.payload.get("errors", []):
            error["path"] = f"{path}/{error['path']}" if error["path"] != "(input)" else path
        raise


class _naming_failure:
    """Turn any failure inside the block into an ActionError naming where it happened."""

    def __init__(self, session: Session, where: dict[str, Any], label: str) -> None:
        self.session, self.where, self.label = session, where, label

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        if isinstance(exc, psycopg.Error):
            exc = map_exception(exc, connecting=False, timed_out=self.session.timed_out)
        if not isinstance(exc, ActionError):
            return
        exc.payload.update(self.where, rolledBack=True)
        exc.payload["detail"] = f"{self.label}: {exc.payload.get('detail') or exc.payload['message']}"
        raise exc from None
