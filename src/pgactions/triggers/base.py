"""What every trigger source is: batches of events and a checkpoint, acknowledged by the consumer.

A trigger turns changes in a database into events a flow starts from.  Every source — polling
(``polling``), LISTEN/NOTIFY (``notify``), logical replication (``cdc``) — has the same shape:

    source = open_source(trigger_id, profile, inputs, checkpoint)   # checkpoint: None = start fresh
    batch = source.poll(timeout=5.0)      # Batch(events, checkpoint); events may be empty
    deliver(batch.events)                 # the consumer takes them (prints, POSTs, stores …)
    source.ack(batch.checkpoint)          # only now may the source forget them (CDC: confirm the LSN)
    store(batch.checkpoint)               # the host keeps it; a restart passes it back
    source.close()

An event is a JSON-ready dict: ``{"op": "insert"|"update"|"delete"|"truncate"|"read",
"table": "schema.table", "before"?: row, "after"?: row}`` plus, for CDC, ``lsn``, ``xid`` and
``commitTime``; rows use the same JSON forms as query results (docs/types.md: numeric as text,
timestamps ISO 8601 …).  A checkpoint is a JSON-ready dict (or None before anything was read);
the runtime keeps no state between runs — the host stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Batch", "TriggerSource"]


@dataclass
class Batch:
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None


class TriggerSource(Protocol):
    def poll(self, timeout: float) -> Batch:
        """The next events after the current position (waiting up to *timeout* seconds for some);
        an empty batch when none came.  The batch's checkpoint covers its events."""
        ...

    def ack(self, checkpoint: dict[str, Any] | None) -> None:
        """The consumer has accepted everything up to *checkpoint*; a source that holds server-side
        state (a replication slot) may now let it go.  Events after it are delivered again after a
        restart from an older checkpoint — at least once, never lost."""
        ...

    def close(self) -> None: ...
