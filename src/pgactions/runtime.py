"""The runtime: manifest → inputs → templates → bound SQL → JSON, or one friendly error.

:meth:`Runtime.run` opens the stages; :func:`perform` is the pipeline every action, transaction
step and batch item goes through:

    validate inputs → render templates once → handler builds and runs statements → guards
    → serialize with the cap → commit (or roll back) → output

Commit happens last, inside :meth:`Session.unit`, once the output is complete: an action that
answers with an error has changed nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, partial
from typing import Any

import orjson
import psycopg

from pgactions.batching import MODES, normalize_items, run_batch_mode
from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.db.connect import PoolCache
from pgactions.db.errormap import scrub
from pgactions.db.output import FileSink, Output, loads_exact, serialize
from pgactions.db.session import Session
from pgactions.db.watchdog import Watchdog
from pgactions.handlers import HANDLERS, Call
from pgactions.limits import Limits
from pgactions.render.stage import render_inputs
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest, get_manifest
from pgactions.spec.validation import validate_inputs

__all__ = ["ActionResult", "Runtime", "perform"]

log = logging.getLogger("pgactions")


@dataclass
class ActionResult:
    """An action's output: ``json`` is exactly what the CLI prints; ``data`` the parsed object.

    When the output was written to a file (``Runtime.run(…, sink=FileSink(path))``), ``json`` is
    empty and ``path`` names the file.
    """

    action: str
    json: bytes
    elapsed_ms: float = field(default=0.0)
    path: str | None = None

    @cached_property
    def data(self) -> dict[str, Any]:
        if self.path is not None and not self.json:
            with open(self.path, "rb") as file:
                return loads_exact(file.read())  # type: ignore[no-any-return]
        return loads_exact(self.json)  # type: ignore[no-any-return]


def perform(session: Session, manifest: Manifest, checked: dict[str, Any], context: dict[str, Any], *,
            finish: Callable[[Output], Any] | None = None, in_transaction: bool = True,
            rendered: bool = False) -> Any:
    """The pipeline of one action, its inputs validated, on an open session; returns its
    :class:`Output` (or what *finish* makes of it while the unit is still open: the document).
    *rendered*: the inputs are data already (a batch built them from rendered items)."""
    if not rendered:
        checked = _rendered_and_checked(manifest, checked, context)
    call = Call(session, manifest, checked, context, partial(_run_step, session))
    limit, dry_run = checked.get("maxAffectedRows"), bool(checked.get("dryRun"))
    unit = session.unit(manifest.read_only, rollback=dry_run, guarded=limit is not None) if in_transaction \
        else session.outside_transaction()
    with unit:
        output = HANDLERS[manifest.handler](call)
        if limit is not None:
            _check_guards(output, limit)
        if dry_run:
            output.head["dryRun"] = True
        return finish(output) if finish is not None else output


def _check_guards(output: Output, limit: int | None) -> None:
    """maxAffectedRows: more rows changed → MAX_AFFECTED_ROWS, and the unit rolls back."""
    if limit is not None and output.row_count > limit:
        raise ActionError("MAX_AFFECTED_ROWS", f"the action would change {output.row_count:,} rows; "
                                               f"maxAffectedRows is {limit:,}",
                          extra={"rowCount": output.row_count, "maxAffectedRows": limit})


def _run_step(session: Session, action_id: str, inputs: Any, context: dict[str, Any], path: str) -> Output:
    """A step of Run Transaction: a whole action inside the open transaction."""
    manifest = get_manifest(action_id)
    return perform(session, manifest, validate_inputs(manifest, inputs, path), context)


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
            cancel: threading.Event | None = None, sink: FileSink | None = None,
            limits: Limits | None = None, role: str | None = None,
            claims: dict[str, Any] | None = None) -> ActionResult:
        """Run one action.  Raises :class:`ActionError` (with ``.payload``) on any failure.

        *flow* and *step* tag the session's ``application_name`` (seen in pg_stat_activity) so a
        DBA can tell which flow runs a query; setting *cancel* stops the action (CANCELLED).
        With a *sink* the output goes to its file instead of memory: rows stream to a temporary
        file beside it (the cap still applies), renamed into place once the action succeeded and
        its transaction committed, and removed when it fails.  *limits* replace the runtime's for
        this call (a service's per-request options; ``numeric_as_number`` stays the runtime's).
        *role*: run inside a transaction as this role (``SET LOCAL ROLE``), so row-level security
        applies; it ends with the transaction.  *claims*: values the host vouches for (a verified
        token's claims), readable by policies and functions as
        ``nullif(current_setting('pgactions.auth', true), '')::jsonb`` during the action's transaction.
        """
        started = time.perf_counter()
        limits = limits or self.limits
        secrets: tuple[str, ...] = ()
        try:
            manifest, profile = get_manifest(action_id), load_profile(connection)
            secrets = profile.secrets()
            checked = validate_inputs(manifest, inputs)
            timeout = limits.timeout_for(checked.get("timeout"), profile.statementTimeout,
                                         manifest.default_timeout)
            flow_context = _flow_context(context)
            with self._session(profile, timeout, flow, step, cancel, limits, role, claims) as session:
                session.spill_to = sink
                document = self._perform_alone(session, manifest, checked, flow_context, sink)
            if sink is not None:
                sink.commit()  # the transaction committed: the output file goes in place
        except ActionError as exc:
            if sink is not None:
                sink.discard()
            exc.payload = scrub(exc.payload, secrets)
            log.info("action %s failed with %s after %.1f ms", action_id, exc.code,
                     (time.perf_counter() - started) * 1000)
            raise
        except BaseException:
            if sink is not None:
                sink.discard()
            raise
        elapsed = (time.perf_counter() - started) * 1000
        log.debug("action %s ok in %.1f ms", action_id, elapsed)
        return ActionResult(action_id, document, elapsed, sink.path if sink is not None else None)

    def _perform_alone(self, session: Session, manifest: Manifest, checked: dict[str, Any],
                       context: dict[str, Any], sink: FileSink | None = None) -> bytes:
        finish = partial(serialize, limit=session.limits.max_result_bytes, sink=sink)
        try:
            return perform(session, manifest, checked, context, finish=finish)  # type: ignore[no-any-return]
        except psycopg.errors.ActiveSqlTransaction:
            # VACUUM, CREATE INDEX CONCURRENTLY and the like refuse a transaction block: run alone,
            # in autocommit (they return no rows, so there is no output to hold back).
            if manifest.read_only or manifest.handler != "sql" or session.local:
                raise  # only a single user statement is run again; a transaction's steps never
            return perform(session, manifest, checked, context, finish=finish,  # type: ignore[no-any-return]
                           in_transaction=False)

    def run_batch(self, action_id: str, connection: str | dict[str, Any] | ConnectionProfile,
                  items: list[dict[str, Any]], mode: str = "independent", context: dict[str, Any] | None = None, *,
                  flow: str | None = None, step: str | None = None, cancel: threading.Event | None = None,
                  timeout: float | None = None, limits: Limits | None = None,
                  role: str | None = None, claims: dict[str, Any] | None = None) -> ActionResult:
        """Run one action over *items* (each ``{"inputs": {...}, "context"?: {...}}``; an item's
        context is laid over *context*).  *mode*: ``independent`` (each item on its own, a result
        per item, failures do not stop the rest), ``transaction`` (all or nothing; the error names
        the item) or ``single`` (one statement for all items where the manifest allows).  In the
        last two the whole batch runs within one *timeout*.  See :mod:`pgactions.batching`."""
        started = time.perf_counter()
        limits = limits or self.limits
        secrets: tuple[str, ...] = ()
        try:
            manifest, profile = get_manifest(action_id), load_profile(connection)
            secrets = profile.secrets()
            entries = normalize_items(items, _flow_context(context))
            if mode not in MODES:
                raise ActionError("INVALID_INPUT", f"batch mode {mode!r} is not one of {', '.join(MODES)}",
                                  extra={"field": "mode"})
            finish = partial(serialize, limit=limits.max_result_bytes)
            if mode == "independent":
                runner = partial(self._run_item, action_id, profile, flow=flow, step=step, cancel=cancel,
                                 limits=limits, role=role, claims=claims)
                document = finish(run_batch_mode(mode, None, manifest, entries, perform, runner))
            else:
                limit = limits.timeout_for(timeout, profile.statementTimeout, manifest.default_timeout)
                with self._session(profile, limit, flow, step, cancel, limits, role, claims) as session:
                    document = run_batch_mode(mode, session, manifest, entries, perform, finish=finish)
        except ActionError as exc:
            exc.payload = scrub(exc.payload, secrets)
            log.info("batch of %s (%s) failed with %s", action_id, mode, exc.code)
            raise
        return ActionResult(action_id, document, (time.perf_counter() - started) * 1000)

    def _run_item(self, action_id: str, profile: ConnectionProfile, inputs: Any, context: dict[str, Any], *,
                  flow: str | None, step: str | None, cancel: threading.Event | None,
                  limits: Limits, role: str | None, claims: dict[str, Any] | None) -> Any:
        # Embedded as it came (never parsed and written again: numbers keep every digit).
        return orjson.Fragment(self.run(action_id, profile, inputs, context, flow=flow, step=step,
                                        cancel=cancel, limits=limits, role=role, claims=claims).json)

    def _session(self, profile: ConnectionProfile, timeout: float, flow: str | None, step: str | None,
                 cancel: threading.Event | None, limits: Limits | None = None, role: str | None = None,
                 claims: dict[str, Any] | None = None) -> Session:
        app_name = tagged_application_name(profile.applicationName, None if flow is None else str(flow),
                                           None if step is None else str(step))
        local = {"pgactions.auth": orjson.dumps(claims).decode()} if claims else None
        return Session(self.pools, self.watchdog, profile, timeout, limits or self.limits, app_name, cancel, role,
                       local)


@lru_cache(maxsize=1024)
def tagged_application_name(base: str, flow: str | None, step: str | None) -> str:
    """``base flow=… step=…`` in at most 63 printable ASCII characters (the server's limits)."""
    tag = base
    if flow:
        tag += f" flow={flow}"
    if step:
        tag += f" step={step}"
    return "".join(ch if " " <= ch <= "~" else "?" for ch in tag)[:63]


def _rendered_and_checked(manifest: Manifest, checked: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The inputs with their templates rendered; an input a template turned into something its
    field does not take (an object where a table name goes) is refused like a wrong input."""
    rendered = render_inputs(checked, context, manifest.execution.get("templates", {}))
    for name, value in checked.items():
        new = rendered[name]
        if new is not value and new != value:
            validate_inputs(manifest, rendered, templates=False)
            break
    return rendered


def _flow_context(context: dict[str, Any] | None) -> dict[str, Any]:
    """The variables templates see: trigger, steps, now (UTC), plus whatever else the host passes."""
    merged: dict[str, Any] = {"trigger": {}, "steps": {}}
    if context:
        if not isinstance(context, dict):
            raise _not_an_object()
        if "steps" in context and not isinstance(context["steps"], dict):
            raise ActionError("INVALID_INPUT", "the flow context's steps must be an object (step id → its output)",
                              extra={"field": "context/steps"})
        merged.update(context)
        if "now" in context:
            return merged
    elif context is not None and not isinstance(context, dict):
        raise _not_an_object()
    merged["now"] = dt.datetime.now(_UTC)
    return merged


_UTC = dt.timezone.utc


def _not_an_object() -> ActionError:
    return ActionError("INVALID_INPUT", "the flow context must be an object (trigger, steps …)",
                       extra={"field": "context"})
