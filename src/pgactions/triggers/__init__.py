"""Triggers: flows that start when rows appear, change or disappear (docs/triggers.md).

A sibling of the runtime: it uses the runtime's public API (profiles, Runtime, the JSON forms of
values) and adds sources of events — ``polling`` (new rows, new or updated rows, by keyset with a
checkpoint), ``notify`` (LISTEN/NOTIFY) and ``cdc`` (logical replication, pgoutput) — all with the
shape of :mod:`pgactions.triggers.base`.  The trigger manifests (``actions/*.yaml`` with
``kind: trigger``) describe their inputs and events.

    from pgactions import Runtime
    from pgactions.triggers import watch

    with Runtime() as runtime:
        feed = watch(runtime, "new_rows", "postgresql://app@db/app",
                     {"table": "orders", "orderBy": "id"}, checkpoint=stored)
        for event in feed:                 # blocks while nothing is new
            start_flow(event)
            store(feed.checkpoint)         # covers every event handed out so far

Or with handlers named after the events' ops::

    run_handlers(runtime, "row_changes", profile, inputs, on_insert=..., on_update=..., on_delete=...,
                 on_checkpoint=store, once=True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.runtime import Runtime
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import TriggerManifest, get_trigger
from pgactions.triggers.base import Batch, TriggerSource

__all__ = ["Batch", "TriggerSource", "Watch", "open_source", "run_handlers", "validate_trigger_inputs", "watch"]

log = logging.getLogger("pgactions.triggers")

# Retryable failures: paused on, up to this long between tries; with once=True, this many tries.
MAX_PAUSE_SECONDS = 30.0
ONCE_RETRIES = 3

EVENT_OPS = ("read", "insert", "update", "delete", "truncate", "notification", "gap")


def validate_trigger_inputs(manifest: TriggerManifest, inputs: Any) -> dict[str, Any]:
    """The inputs checked against the trigger's input schema: INVALID_INPUT naming each problem."""
    if not isinstance(inputs, dict):
        raise ActionError("INVALID_INPUT", f"the input of {manifest.id} must be an object",
                          extra={"errors": [{"path": "(input)", "message": "must be an object"}]})
    errors = [{"path": "/".join(map(str, e.instance_path)) or "(input)", "message": e.message}
              for e in manifest.input_validator().iter_errors(inputs)]
    if errors:
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        raise ActionError("INVALID_INPUT", summary, extra={"errors": errors})
    return inputs


def open_source(runtime: Runtime, trigger_id: str, connection: str | dict[str, Any] | ConnectionProfile,
                inputs: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> TriggerSource:
    """The source of a trigger's events, positioned after *checkpoint* (None: as ``startFrom`` or
    the slot says)."""
    manifest = get_trigger(trigger_id)
    inputs = validate_trigger_inputs(manifest, inputs)
    profile = load_profile(connection)
    if checkpoint is not None and not isinstance(checkpoint, dict):
        raise ActionError("INVALID_INPUT", "the checkpoint must be a JSON object this trigger returned",
                          extra={"field": "checkpoint"})
    if manifest.source == "polling":
        from pgactions.triggers.polling import open_polling

        return open_polling(runtime, profile, trigger_id, inputs, checkpoint)
    if manifest.source == "notify":
        from pgactions.triggers.notify import open_notification

        return open_notification(profile, inputs, checkpoint, runtime=runtime)
    from pgactions.triggers.cdc import open_cdc

    return open_cdc(profile, inputs, checkpoint)  # type: ignore[no-any-return]


class Watch:
    """An iterator over a trigger's events.  A batch is acknowledged (CDC: its LSN confirmed to
    the server) when the consumer asks for the event after its last one, that is once it has
    taken them all; :attr:`checkpoint` then covers everything handed out."""

    def __init__(self, source: TriggerSource | None, checkpoint: dict[str, Any] | None, *, once: bool = False,
                 timeout: float = 5.0, opener: Callable[[dict[str, Any] | None], TriggerSource] | None = None) -> None:
        """*source* None: opened by *opener* on the first batch (the database was not reachable
        when the watch began: it is waited out like any retryable failure)."""
        self.source, self.checkpoint, self.once, self.timeout = source, checkpoint, once, timeout
        self.opener = opener
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.events()

    def batches(self) -> Iterator[Batch]:
        """Batch by batch: the caller delivers a batch's events, then asks for the next, which
        acknowledges it.  With *once*, ends at the first empty batch (nothing committed now).

        A failure that may pass (the server restarting, a dropped connection: retryable codes) is
        waited out with a growing pause (logged), the position unchanged — a long-running watch
        outlives a database restart; with *once*, after a few tries the error is raised."""
        failures = 0
        try:
            while not self.closed:
                try:
                    if self.source is None:
                        assert self.opener is not None
                        self.source = self.opener(self.checkpoint)
                    batch = self.source.poll(self.timeout)
                except ActionError as exc:
                    failures += 1
                    if not exc.retryable or (self.once and failures > ONCE_RETRIES):
                        raise
                    pause = min(MAX_PAUSE_SECONDS, 0.25 * 2 ** min(failures, 8))
                    log.warning("trigger source failed with %s (%s); trying again in %.1f s", exc.code,
                                exc.payload.get("detail", ""), pause)
                    time.sleep(pause)
                    continue
                failures = 0
                if batch.events or batch.checkpoint != self.checkpoint:
                    yield batch
                    self.source.ack(batch.checkpoint)
                    self.checkpoint = batch.checkpoint
                if self.once and not batch.events:
                    return
        finally:
            self.close()

    def events(self) -> Iterator[dict[str, Any]]:
        for batch in self.batches():
            last = len(batch.events) - 1
            for position, event in enumerate(batch.events):
                if position == last:  # handed out whole once this one is: the checkpoint covers it
                    self.checkpoint = batch.checkpoint
                yield event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.source is not None:
                self.source.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch(runtime: Runtime, trigger_id: str, connection: str | dict[str, Any] | ConnectionProfile,
          inputs: dict[str, Any], checkpoint: dict[str, Any] | None = None, *, once: bool = False,
          timeout: float = 5.0) -> Watch:
    """The trigger's events, from *checkpoint* on.  *once*: stop when nothing more is committed now
    (a polling trigger: after one poll that found nothing new)."""
    def opener(position: dict[str, Any] | None) -> TriggerSource:
        return open_source(runtime, trigger_id, connection, inputs, position)

    try:
        source: TriggerSource | None = opener(checkpoint)
    except ActionError as exc:
        if once or not exc.retryable:
            raise  # bad inputs, a missing table …: said at once
        log.warning("trigger source could not start (%s); trying again", exc.code)
        source = None  # the database is not reachable yet: waited out by the watch
    return Watch(source, checkpoint, once=once, timeout=timeout, opener=opener)


def run_handlers(runtime: Runtime, trigger_id: str, connection: str | dict[str, Any] | ConnectionProfile,
                 inputs: dict[str, Any], checkpoint: dict[str, Any] | None = None, *,
                 once: bool = False, timeout: float = 5.0,
                 on_checkpoint: Callable[[dict[str, Any] | None], Any] | None = None,
                 **handlers: Callable[[dict[str, Any]], Any]) -> dict[str, Any] | None:
    """Call ``on_<op>(event)`` for each event (``on_insert``, ``on_update``, ``on_delete``,
    ``on_truncate``, ``on_read``, ``on_notification``, ``on_gap``; ops without a handler are
    skipped), then ``on_checkpoint(checkpoint)`` after each batch; returns the last checkpoint.
    A handler that raises stops the watch before the batch is acknowledged: the next run from the
    stored checkpoint delivers that batch again."""
    unknown = sorted(set(handlers) - {f"on_{op}" for op in EVENT_OPS})
    if unknown:
        raise TypeError(f"unknown handler(s) {', '.join(unknown)}; use on_{'/on_'.join(EVENT_OPS)}")
    with watch(runtime, trigger_id, connection, inputs, checkpoint, once=once, timeout=timeout) as feed:
        for batch in feed.batches():
            for event in batch.events:
                handler = handlers.get(f"on_{event.get('op')}")
                if handler is not None:
                    handler(event)
            if on_checkpoint is not None:
                on_checkpoint(batch.checkpoint)
        return feed.checkpoint
