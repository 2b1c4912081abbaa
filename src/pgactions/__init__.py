"""pgactions: PostgreSQL actions for workflow-automation platforms.

    from pgactions import Runtime
    with Runtime() as rt:
        out = rt.run("query_rows", "postgresql://app@db/app",
                     {"query": "SELECT * FROM users WHERE email = $1", "parameters": ["{{trigger.email}}"]},
                     {"trigger": {"email": "john@example.com"}}).data
"""

from __future__ import annotations

from pgactions.connection.check import test_connection
from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.db.session import Limits
from pgactions.runtime import ActionResult, Runtime
from pgactions.spec.errors import ERROR_CATALOG, ActionError
from pgactions.spec.manifests import Manifest, load_manifests

__all__ = [
    "ERROR_CATALOG", "ActionError", "ActionResult", "ConnectionProfile", "Limits", "Manifest",
    "Runtime", "load_manifests", "load_profile", "run_action", "test_connection",
]

__version__ = "0.1.0"


def run_action(action_id: str, connection: object, inputs: dict, context: dict | None = None,
               runtime: Runtime | None = None) -> dict:
    """Run one action and return its output object (a convenience over :class:`Runtime`)."""
    if runtime is not None:
        return runtime.run(action_id, connection, inputs, context).data  # type: ignore[arg-type]
    with Runtime() as rt:
        return rt.run(action_id, connection, inputs, context).data  # type: ignore[arg-type]
