"""What every handler receives (:class:`Call`) and returns (:class:`~pgactions.db.output.Output`).

A handler builds and runs statements for one action whose inputs are already validated and
rendered: it never renders a template again (flow data stays data), never commits, and never
builds JSON bytes.  The pipeline in :mod:`pgactions.runtime` does those once for every action.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgactions.db.output import Output
from pgactions.db.session import Session
from pgactions.spec.manifests import Manifest

__all__ = ["Call", "Handler", "Output", "StepRunner"]

# Runs another action inside this one (Run Transaction's steps): (action id, raw inputs, context,
# JSON path of the inputs for error messages) → its output.
StepRunner = Callable[[str, Any, dict[str, Any], str], Output]


@dataclass
class Call:
    session: Session
    manifest: Manifest
    inputs: dict[str, Any]  # validated, defaults filled, templates rendered
    context: dict[str, Any]  # the flow's data: for templates in SQL text, and later steps
    run_step: StepRunner

    def option(self, name: str, default: Any = None) -> Any:
        """A handler option from the manifest's execution block (output, statementKind …)."""
        return self.manifest.execution.get(name, default)


Handler = Callable[[Call], Output]
