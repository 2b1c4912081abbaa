"""Run Transaction: several actions in one transaction, each step a whole action.

Each step goes through the same pipeline as an action of its own (validation, templates rendered
once with the outputs of earlier steps, its handler, its guards, read-only enforced by the
server) — the pipeline hands that in as ``call.run_step``.  The first failure rolls back
everything and the error names the step; a later step can template on earlier steps' outputs
(``{{ steps.insert_order.insertedId }}``).
"""

from __future__ import annotations

from typing import Any

from pgactions.db.errormap import error_context
from pgactions.db.output import Output
from pgactions.handlers.base import Call
from pgactions.spec.errors import ActionError

__all__ = ["run_transaction"]


def run_transaction(call: Call) -> Output:
    steps = call.inputs["steps"]
    ids = [step.get("id") or f"step{i + 1}" for i, step in enumerate(steps)]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ActionError("INVALID_INPUT", f"step ids must be unique: {', '.join(repeated)}",
                          extra={"field": "steps"})
    outputs: dict[str, Any] = {}
    results = []
    for index, (step_id, step) in enumerate(zip(ids, steps)):
        if step["action"] == "run_transaction":
            raise ActionError("INVALID_INPUT", "a transaction's step cannot be another run_transaction",
                              extra={"field": f"steps/{index}/action"})
        context = {**call.context, "steps": {**call.context.get("steps", {}), **outputs}}
        with error_context(f"step {step_id!r} ({step['action']})", step=step_id, stepIndex=index, rolledBack=True):
            output = call.run_step(step["action"], step.get("inputs", {}), context, f"steps/{index}/inputs")
        outputs[step_id] = output.data()
        results.append({"id": step_id, "action": step["action"], "output": outputs[step_id]})
    return Output({"committed": True, "steps": results})
