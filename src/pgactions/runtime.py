"""The runtime: manifest → inputs → templates → bound SQL → JSON, or one friendly error."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import orjson

from pgactions.batching import MODES, normalize_items, run_items
from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.db.connect import PoolCache
from pgactions.db.errormap import scrub
from pgactions.db.session import Limits, Session
from pgactions.db.watchdog import Watchdog
from pgactions.handlers.dispatch import run_handler
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import get_manifest
from pgactions.spec.validation import validate_inputs

__all__ = ["ActionResult", "Runtime"]

log = logging.getLogger("pgactions")


@dataclass
class ActionResult:
    """An action's output: ``json`` is exactly what the CLI prints; ``data`` the parsed object."""

    action: str
    json: bytes
    elapsed_ms: float = field(default=0.0)

    @cached_property
    def data(self) -> dict[str, Any]:
        return orjson.loads(self.json)


class Runtime:
    """Runs actions; owns the connection pools (one per profile) and the timeout watchdog.

    Use one Runtime for the life of the host process and close it at shutdown (or use ``with``).
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.pools = PoolCache(numeric_as_number=self.limits.numeric_as_number)
        self.watchdog = Watchdog()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pools.close_all()

    def run(self, action_id: str, connection: str | dict[str, Any] | ConnectionProfile,
            inputs: dict[str, Any], context: dict[str, Any] | None = None, *,
            flow: str | None = None, step: str | None = None,
            cancel: threading.Event | None = None) -> ActionResult:
        """Run one action.  Raises :class:`ActionError` (with ``.payload``) on any failure.

        *flow* and *step* tag the session's ``application_name`` (seen in pg_stat_activity) so a
        DBA can tell which flow runs a query; setting *cancel* stops the action (CANCELLED).
        """
        started = time.perf_counter()
        secrets: tuple[str, ...] = ()
        try:
            manifest, profile = get_manifest(action_id), load_profile(connection)
            secrets = profile.secrets()
            checked = validate_inputs(manifest, inputs)
            timeout = self.limits.timeout_for(checked.get("timeout"), profile.statementTimeout)
            flow_context = _flow_context(context)
            with self._session(profile, timeout, flow, step, cancel) as session:
                output = self._capped(run_handler(session, manifest, checked, flow_context))
        except ActionError as exc:
            exc.payload = scrub(exc.payload, secrets)
            elapsed = (time.perf_counter() - started) * 1000
            log.info("action %s failed with %s after %.1f ms", action_id, exc.code, elapsed)
            raise
        elapsed = (time.perf_counter() - started) * 1000
        log.debug("action %s ok in %.1f ms", action_id, elapsed)
        return ActionResult(action_id, output, elapsed)

    def run_batch(self, action_id: str, connection: str | dict[str, Any] | ConnectionProfile,
                  items: list[dict[str, Any]], mode: str = "independent", context: dict[str, Any] | None = None, *,
                  flow: str | None = None, step: str | None = None, cancel: threading.Event | None = None,
                  timeout: float | None = None) -> ActionResult:
        """Run one action over *items* (each ``{"inputs": {...}, "context"?: {...}}``; an item's
        context is laid over *context*).  *mode*: ``independent`` (each item on its own, a result
        per item, failures do not stop the rest), ``transaction`` (all or nothing; the error names
        the item) or ``single`` (one statement for all items where the action allows).  In the
        last two the whole batch runs within one *timeout*.  See :mod:`pgactions.batching`."""
        started = time.perf_counter()
        secrets: tuple[str, ...] = ()
        try:
            manifest, profile = get_manifest(action_id), load_profile(connection)
            secrets = profile.secrets()
            entries = normalize_items(items, _flow_context(context))
            if mode not in MODES:
                raise ActionError("INVALID_INPUT", f"batch mode {mode!r} is not one of {', '.join(MODES)}",
                                  extra={"field": "mode"})
            if mode == "independent":
                output = self._capped(self._run_independent(action_id, profile, entries, flow, step, cancel))
            else:
                limit = self.limits.timeout_for(timeout, profile.statementTimeout)
                with self._session(profile, limit, flow, step, cancel) as session:
                    output = self._capped(orjson.dumps(run_items(session, manifest, entries, mode)))
        except ActionError as exc:
            exc.payload = scrub(exc.payload, secrets)
            log.info("batch of %s (%s) failed with %s", action_id, mode, exc.code)
            raise
        return ActionResult(action_id, output, (time.perf_counter() - started) * 1000)

    def _session(self, profile: ConnectionProfile, timeout: float, flow: str | None, step: str | None,
                 cancel: threading.Event | None) -> Session:
        app_name = tagged_application_name(profile.applicationName, _tag(flow), _tag(step))
        return Session(self.pools, self.watchdog, profile, timeout, self.limits, app_name, cancel)

    def _capped(self, output: bytes) -> bytes:
        if len(output) > self.limits.max_result_bytes:
            raise ActionError("RESULT_TOO_LARGE", f"the output is {len(output):,} bytes, above the "
                                                  f"limit of {self.limits.max_result_bytes:,}")
        return output

    def _run_independent(self, action_id: str, profile: ConnectionProfile, entries: list[Any],
                         flow: str | None, step: str | None, cancel: threading.Event | None) -> bytes:
        results: list[dict[str, Any]] = []
        for index, (inputs, context) in enumerate(entries):
            try:
                out = self.run(action_id, profile, inputs, context, flow=flow, step=step, cancel=cancel)
                results.append({"index": index, "ok": True, "output": out.data})
            except ActionError as exc:
                results.append({"index": index, "ok": False, "error": exc.payload})
        failed = sum(not r["ok"] for r in results)
        return orjson.dumps({"mode": "independent", "ok": failed == 0, "succeeded": len(results) - failed,
                              "failed": failed, "results": results})


def _tag(value: Any) -> str | None:
    return None if value is None else str(value)


@lru_cache(maxsize=1024)
def tagged_application_name(base: str, flow: str | None, step: str | None) -> str:
    """``base flow=… step=…`` in at most 63 printable ASCII characters (the server's limits)."""
    tag = base
    if flow:
        tag += f" flow={flow}"
    if step:
        tag += f" step={step}"
    return "".join(ch if " " <= ch <= "~" else "?" for ch in tag)[:63]


def _flow_context(context: dict[str, Any] | None) -> dict[str, Any]:
    """The variables templates see: trigger, steps, now (UTC), plus whatever else the host passes."""
    merged: dict[str, Any] = {"trigger": {}, "steps": {}}
    if context is not None and not isinstance(context, dict):
        raise ActionError("INVALID_INPUT", "the flow context must be an object (trigger, steps …)",
                          extra={"field": "context"})
    if context:
        merged.update(context)
    merged.setdefault("now", dt.datetime.now(dt.timezone.utc))
    return merged
