"""What every route shares: the runtime, the stores, who may do what, and running an action in
the bounded thread pool with the per-connection limit, cancellation on disconnect and idempotency.

Routes (``actions_api``, ``connections_api``, ``records_api``) parse HTTP; this module decides.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from pgactions.connection.profiles import ConnectionProfile
from pgactions.db import cooperative
from pgactions.db.cooperative import WouldBlock, drive
from pgactions.limits import Limits
from pgactions.runtime import ActionResult, Runtime
from pgactions.service.config import ServiceConfig
from pgactions.service.principal import Principal
from pgactions.service.store import StateStore
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest

__all__ = ["ActionRequest", "Service"]

log = logging.getLogger("pgactions.service")

IDEMPOTENCY_SECONDS = 24 * 3600
# A vetted profile (DNS resolved and checked, addresses pinned) is reused this long.
VETTED_SECONDS = 10.0
# A stored profile read from the state store is reused this long (as API keys are: auth.py).
STORED_SECONDS = 1.0
# Work still running after this long gets a watch for the client's disconnect.
WATCH_AFTER_SECONDS = 0.005


@dataclass
class ActionRequest:
    """One call, parsed: what the access log and the metrics report about it, too."""

    action_id: str
    connection_id: str | None = None
    rows: int | None = None
    code: str = "OK"
    principal: Principal | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Service:
    """Owns the runtimes (one per numeric mode), the state store, the authenticator, the host
    policy for callers' profiles, the thread limiter and the per-connection counters."""

    def __init__(self, config: ServiceConfig, store: StateStore, authenticator: Any, policy: Any) -> None:
        self.config, self.store, self.authenticator, self.policy = config, store, authenticator, policy
        self.limits = Limits(default_timeout=config.timeout, max_timeout=config.timeout,
                             max_result_bytes=config.max_result_bytes)
        self.runtime = Runtime(self.limits)
        self._numeric_runtime: Runtime | None = None
        self._slots: asyncio.Semaphore | None = None
        self._executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="pgactions-action")
        self._stored: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._running: dict[ConnectionProfile, int] = {}
        self._vetted: dict[str | bytes, tuple[float, ConnectionProfile]] = {}
        self._login_checked: dict[ConnectionProfile, bool] = {}
        self._gates: dict[ConnectionProfile, _Gate] = {}
        # Actions wait for the server on the event loop when greenlets are there (the server extra).
        self.cooperative = cooperative.available() and sys.platform != "win32"  # (no add_reader there)
        self.labels: dict[ConnectionProfile, str] = {}  # profile → metrics label (connection id or "inline")
        self.closing = False

    # -- life cycle ----------------------------------------------------------------------------
    @property
    def slots(self) -> asyncio.Semaphore:
        """At most ``threads`` actions at once; more wait here, in the event loop, not in a queue
        of threads (the per-connection limit refuses the excess of one connection)."""
        if self._slots is None:  # made inside the event loop
            self._slots = asyncio.Semaphore(self.config.threads)
        return self._slots

    def runtime_for(self, numeric_as_number: bool) -> Runtime:
        if not numeric_as_number:
            return self.runtime
        with self._lock:
            if self._numeric_runtime is None:
                self._numeric_runtime = Runtime(Limits(default_timeout=self.limits.default_timeout,
                                                       max_timeout=self.limits.max_timeout,
                                                       max_result_bytes=self.limits.max_result_bytes,
                                                       numeric_as_number=True))
            return self._numeric_runtime

    def close(self) -> None:
        self.closing = True
        self._executor.shutdown(wait=False)
        self.runtime.close()
        if self._numeric_runtime is not None:
            self._numeric_runtime.close()
        self.store.close()

    # -- who may do what -------------------------------------------------------------------------
    def authenticate(self, request: Request) -> Principal:
        """Who is calling (blocking: may read the store; use :meth:`who` from a route)."""
        return self.authenticator.authenticate(request.headers.get("authorization"))  # type: ignore[no-any-return]

    async def who(self, request: Request) -> Principal:
        """Who is calling: answered in the event loop when the authenticator knows without the
        store, else in a worker thread, so a store read (or a flood of unknown keys) never holds
        the loop."""
        header = request.headers.get("authorization")
        if self.authenticator.answers_from_memory(header):
            return self.authenticator.authenticate(header)  # type: ignore[no-any-return]
        return await asyncio.get_running_loop().run_in_executor(  # type: ignore[no-any-return]
            self._executor, self.authenticator.authenticate, header)

    @staticmethod
    def check_action(principal: Principal, manifest: Manifest) -> None:
        if not principal.may_run(manifest.id):
            raise ActionError("FORBIDDEN", f"this key may not run {manifest.id}", extra={"action": manifest.id})
        if principal.read_only and not manifest.read_only:
            raise ActionError("FORBIDDEN", f"this key is read-only and {manifest.id} writes",
                              extra={"action": manifest.id})
        if principal.sql_refused(manifest.id):
            raise ActionError("FORBIDDEN", f"this key pins context values, so it may not run {manifest.id} "
                                           "(free SQL); use a structured action, or a key created with --allow-sql",
                              extra={"action": manifest.id})

    # -- connections -------------------------------------------------------------------------------
    def resolve_connection(self, principal: Principal, body: dict[str, Any]) -> tuple[ConnectionProfile, str | None]:
        """The profile a request names: ``connectionId`` (stored) or ``connection`` (inline), vetted."""
        resolved = self._resolve(principal, body, False)
        assert resolved is not None
        return resolved

    def cached_connection(self, principal: Principal, body: dict[str, Any]) -> tuple[ConnectionProfile, str | None] | None:
        """:meth:`resolve_connection` for code on the event loop: the same errors, but None where
        it would read the store or resolve names (both block)."""
        return self._resolve(principal, body, True)

    def _resolve(self, principal: Principal, body: dict[str, Any],
                 cached_only: bool) -> tuple[ConnectionProfile, str | None] | None:
        has_id, has_inline = "connectionId" in body, "connection" in body
        if has_id == has_inline:
            raise ActionError("INVALID_INPUT", "give either connection (a URL or profile object) or connectionId",
                              extra={"field": "connection"})
        if has_id:
            connection_id = body["connectionId"]
            if not isinstance(connection_id, str) or not connection_id:
                raise ActionError("INVALID_INPUT", "connectionId must be a non-empty string",
                                  extra={"field": "connectionId"})
            stored = self._stored_profile(principal, connection_id, cached_only)
            return None if stored is None else (stored, connection_id)
        if principal.connections is not None:
            raise ActionError("FORBIDDEN", "this key may use stored connections only (connectionId)",
                              extra={"field": "connection"})
        spec = body["connection"]
        if not isinstance(spec, (str, dict)):
            raise ActionError("INVALID_CONNECTION", "connection must be a postgresql:// URL or a profile object",
                              extra={"field": "connection"})
        profile = self.vet(spec, cached_only)
        if profile is None:
            return None
        self._label(profile, "inline")
        return profile, None

    def stored_profile(self, principal: Principal, connection_id: str) -> ConnectionProfile:
        profile = self._stored_profile(principal, connection_id, False)
        assert profile is not None
        return profile

    def cached_stored_profile(self, principal: Principal, connection_id: str) -> ConnectionProfile | None:
        """:meth:`stored_profile` for code on the event loop: None where it would read the store."""
        return self._stored_profile(principal, connection_id, True)

    def _stored_profile(self, principal: Principal, connection_id: str,
                        cached_only: bool) -> ConnectionProfile | None:
        if not principal.may_use(connection_id):
            raise ActionError("FORBIDDEN", f"this key may not use the connection {connection_id!r}",
                              extra={"connectionId": connection_id})
        if cached_only:  # the spec read in the last second, or None: never the store, on the loop
            cached = self._stored.get(connection_id)
            if cached is None or time.monotonic() - cached[0] >= STORED_SECONDS:
                return None
            spec = cached[1]
        else:
            spec = self._stored_spec(connection_id)
        if spec is None:
            raise ActionError("UNKNOWN_CONNECTION", f"no stored connection {connection_id!r}",
                              extra={"connectionId": connection_id})
        profile = self.vet(spec, cached_only)
        if profile is None:
            return None
        self._label(profile, connection_id)
        return profile

    def _stored_spec(self, connection_id: str) -> dict[str, Any] | None:
        """The stored profile, decrypted, reused for a second (a PUT or DELETE through another
        process is seen within that; through this one at once: :meth:`forget_connection`)."""
        now = time.monotonic()
        cached = self._stored.get(connection_id)
        if cached is not None and now - cached[0] < STORED_SECONDS:
            return cached[1]
        try:
            spec = self.store.get_connection(connection_id)
        except ValueError:
            spec = None
        if len(self._stored) > 1024:
            self._stored.clear()
        self._stored[connection_id] = (now, spec)
        return spec

    def forget_connection(self, connection_id: str) -> None:
        self._stored.pop(connection_id, None)

    def _label(self, profile: ConnectionProfile, label: str) -> None:
        if self.labels.get(profile) != label:
            if len(self.labels) > 4096:  # bounded: callers may send ever new inline profiles
                self.labels.clear()
            self.labels[profile] = label

    def vet(self, spec: str | dict[str, Any], cached_only: bool = False) -> ConnectionProfile | None:
        """A caller's profile checked against the host policy (no files, no environment, allowed
        addresses only; DNS answers pinned), reused for a few seconds.  *cached_only*: None
        rather than resolve names (which blocks)."""
        from pgactions.service.untrusted import vet_profile

        key: str | bytes
        if isinstance(spec, str):
            key = spec
        else:  # (keys in the order given: the same profile spelt in another order is vetted again)
            try:
                key = orjson.dumps(spec)
            except TypeError:  # an integer past 64 bits: the profile's validation will refuse it
                key = json.dumps(spec, sort_keys=True, default=str)
        now = time.monotonic()
        cached = self._vetted.get(key)
        if cached is not None and now - cached[0] < VETTED_SECONDS:
            return cached[1]
        if cached_only:
            return None
        profile = _capped(vet_profile(spec, self.policy))
        if len(self._vetted) > 1024:
            self._vetted.clear()
        self._vetted[key] = (now, profile)
        return profile

    def check_role_login(self, profile: ConnectionProfile) -> None:
        """A role claim is honoured only where the login role cannot skip row-level security."""
        known = self._login_checked.get(profile)
        if known is None:
            rows = self.runtime.run("query_rows", profile, {
                "query": "SELECT rolsuper OR rolbypassrls AS unsafe FROM pg_roles WHERE rolname = session_user"}).data
            known = bool(rows["rows"] and rows["rows"][0]["unsafe"])
            if len(self._login_checked) > 4096:
                self._login_checked.clear()
            self._login_checked[profile] = known
        if known:
            raise ActionError("FORBIDDEN", "the connection logs in as a superuser or a role with BYPASSRLS, so a "
                                           "token's role claim would not limit what it sees; use a login role "
                                           "with no privileges of its own (NOINHERIT) granted the claim's roles",
                              extra={"field": "role"})

    # -- running ------------------------------------------------------------------------------------
    def slot(self, profile: ConnectionProfile) -> _Slot:
        return _Slot(self, profile)

    def per_connection(self, profile: ConnectionProfile) -> int:
        if self.config.per_connection is not None:
            return self.config.per_connection
        # Beyond the pool's size, actions wait for a connection (FIFO, within their timeout); past
        # this many, a request is refused at once rather than queued without bound.
        return max(4 * profile.maxConnections, 16)

    async def in_thread(self, request: Request | None, work: Callable[[threading.Event], Any],
                        cancel: threading.Event | None = None) -> Any:
        """Run *work* in the bounded thread pool.  Cancelling the awaiting task sets the work's
        *cancel* event (the runtime cancels the query on the server and rolls back); so does the
        client going away, when there is a *request* to watch (:func:`_watching`)."""
        cancel = cancel or threading.Event()
        async with self.slots:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work, cancel)
            try:
                with _watching(request, cancel):
                    await asyncio.wait({future})
            except asyncio.CancelledError:  # the awaiting task was cancelled: so is the action
                cancel.set()
                raise
        return future.result()

    async def run_work(self, request: Request | None, profile: ConnectionProfile | None,
                       work: Callable[[threading.Event, bool], Any]) -> Any:
        """Run one action's *work*, counted against its connection's limit (RATE_LIMITED past it,
        never an unbounded queue).  On the event loop when it can wait there (a greenlet whose
        waits for the server are the loop's, see :mod:`pgactions.db.cooperative`), else — the
        profile not known without blocking, a connection to open, the pool busy with other
        threads — in the thread pool (:meth:`in_thread`).  The loop saves the thread hop, which
        costs more CPU than a primary-key lookup.  At most the pool's size of actions per profile
        run on the loop at once; the others wait here, in order.  *work* is told whether the
        action is counted already (see :meth:`run_action`)."""
        if profile is None:
            return await self.in_thread(request, lambda cancel: work(cancel, False))
        cancel = threading.Event()  # one for both tries: a client gone meanwhile stops the second
        with self.slot(profile):
            if self.cooperative:
                async with self._gate(profile):
                    try:
                        with _watching(request, cancel):
                            return await drive(work, cancel, True, cancel=cancel)
                    except WouldBlock:
                        pass  # nothing was sent to the server: run it where it may block
            return await self.in_thread(request, lambda event: work(event, True), cancel)

    def _gate(self, profile: ConnectionProfile) -> _Gate:
        gate = self._gates.get(profile)
        if gate is None:
            if len(self._gates) > 4096:  # bounded: callers may send ever new inline profiles
                self._gates.clear()
            gate = self._gates[profile] = _Gate(profile.maxConnections)
        return gate

    def run_action(self, principal: Principal, manifest: Manifest, profile: ConnectionProfile,
                   inputs: dict[str, Any], context: dict[str, Any], options: dict[str, Any],
                   cancel: threading.Event, flow: Any = None, step: Any = None, counted: bool = False) -> ActionResult:
        """Runtime.run with the request's options and the principal's role and pinned values;
        *counted*: the action holds its place in the connection's limit already (:meth:`run_work`)."""
        if principal.role is not None:
            self.check_role_login(profile)
        runtime = self.runtime_for(bool(options.get("numericAsNumber")))
        limits = self.limits
        if options.get("maxResultBytes") is not None:
            limits = Limits(default_timeout=limits.default_timeout, max_timeout=limits.max_timeout,
                            max_result_bytes=min(int(options["maxResultBytes"]), limits.max_result_bytes))
        with contextlib.nullcontext() if counted else self.slot(profile):
            return runtime.run(manifest.id, profile, inputs, context, flow=flow, step=step, cancel=cancel,
                               limits=limits, role=principal.role, claims=principal.pinned or None)

    def run_batch(self, principal: Principal, manifest: Manifest, profile: ConnectionProfile,
                  items: list[Any], mode: str, context: dict[str, Any], cancel: threading.Event,
                  flow: Any = None, step: Any = None) -> ActionResult:
        if principal.role is not None:
            self.check_role_login(profile)
        with self.slot(profile):
            return self.runtime.run_batch(manifest.id, profile, items, mode, context, flow=flow, step=step,
                                          cancel=cancel, role=principal.role, claims=principal.pinned or None)

    # -- idempotency -----------------------------------------------------------------------------------
    def idempotency_key(self, principal: Principal, header: str) -> str:
        if not 1 <= len(header) <= 255 or not header.isprintable():
            raise ActionError("INVALID_INPUT", "Idempotency-Key must be 1 to 255 printable characters",
                              extra={"field": "Idempotency-Key"})
        # Scoped to the caller: another key holder cannot read this answer by guessing the key.
        who = f"{principal.kind}:{principal.name}:{principal.credential}"
        return hashlib.sha256(f"{who}\0{header}".encode()).hexdigest()


# What a caller's profile may ask of the service's own resources.
MAX_CALLER_CONNECTIONS = 20
MAX_CALLER_CONNECT_TIMEOUT = 30
MAX_CALLER_IDLE_TIMEOUT = 300


def _capped(profile: ConnectionProfile) -> ConnectionProfile:
    """A caller's pool size, connect timeout and idle time, within the service's bounds: one
    profile may not hold a hundred connections per worker, a thread for five minutes waiting on a
    dead host, nor idle backends for a day."""
    if profile.maxConnections <= MAX_CALLER_CONNECTIONS and profile.connectTimeout <= MAX_CALLER_CONNECT_TIMEOUT \
            and profile.idleTimeout <= MAX_CALLER_IDLE_TIMEOUT:
        return profile
    return dataclasses.replace(profile, maxConnections=min(profile.maxConnections, MAX_CALLER_CONNECTIONS),
                               connectTimeout=min(profile.connectTimeout, MAX_CALLER_CONNECT_TIMEOUT),
                               idleTimeout=min(profile.idleTimeout, MAX_CALLER_IDLE_TIMEOUT))


class _Gate:
    """At most *size* holders at once; the others wait in order.  An ``asyncio.Semaphore`` without
    its per-call overhead (this is on every action's path)."""

    __slots__ = ("free", "waiting")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed the place just as the wait was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiting.remove(future)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        while self.waiting:  # the place goes straight to the oldest waiter still waiting
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


class _Slot:
    """One of the actions running at once on a connection; over the limit → RATE_LIMITED."""

    def __init__(self, service: Service, profile: ConnectionProfile) -> None:
        self.service, self.profile = service, profile

    def __enter__(self) -> None:
        service = self.service
        limit = service.per_connection(self.profile)
        with service._lock:
            running = service._running.get(self.profile, 0)
            if running >= limit:
                raise ActionError("RATE_LIMITED", f"{running} actions are already running on this connection "
                                                  f"(the limit is {limit}); try again shortly",
                                  extra={"retryAfter": 1})
            service._running[self.profile] = running + 1

    def __exit__(self, *exc: object) -> None:
        with self.service._lock:
            left = self.service._running[self.profile] - 1
            if left:
                self.service._running[self.profile] = left
            else:  # callers may send ever new profiles: keep no entry for an idle one
                del self.service._running[self.profile]


@contextlib.contextmanager
def _watching(request: Request | None, cancel: threading.Event) -> Iterator[None]:
    """While the block runs, the client going away sets *cancel* — watched only once the work
    has taken a few milliseconds: most actions are done by then, and a task per request costs
    more than the query."""
    if request is None:
        yield
        return
    loop = asyncio.get_running_loop()
    watchers: list[asyncio.Task[None]] = []
    timer = loop.call_later(WATCH_AFTER_SECONDS,
                            lambda: watchers.append(loop.create_task(_watch_disconnect(request, cancel))))
    try:
        yield
    finally:
        timer.cancel()
        for watcher in watchers:
            watcher.cancel()


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return
