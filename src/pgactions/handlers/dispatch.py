"""Run one action's handler on an open session, with the guards every write action accepts."""

from __future__ import annotations

from typing import Any

import orjson

from pgactions.db.session import Session
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest

__all__ = ["run_handler"]


def run_handler(session: Session, manifest: Manifest, inputs: dict[str, Any], context: dict[str, Any]) -> bytes:
    """The handler's JSON output.  ``maxAffectedRows``: more rows changed → rolled back,
    MAX_AFFECTED_ROWS.  ``dryRun``: run, count, roll back, say so in the output."""
    from pgactions.handlers import get_handler  # the registry imports the handlers, which may import this module

    handler = get_handler(manifest.handler)
    limit, dry_run = inputs.get("maxAffectedRows"), bool(inputs.get("dryRun"))
    if limit is None and not dry_run:
        return handler(session, manifest, inputs, context)
    with session.transaction(force_rollback=dry_run):
        output = handler(session, manifest, inputs, context)
        count = int(orjson.loads(output).get("rowCount") or 0)
        if limit is not None and count > limit:
            raise ActionError("MAX_AFFECTED_ROWS", f"the action would change {count:,} rows; "
                                                   f"maxAffectedRows is {limit:,}",
                              extra={"rowCount": count, "maxAffectedRows": limit})
    if dry_run:
        output = output[:-1] + b',"dryRun":true}'
    return output
