"""Trigger subscriptions: a trigger's events POSTed in batches to a webhook (docs/service-subscriptions.md).

A subscription (``POST /v1/subscriptions``: ``{trigger, connectionId, inputs, url, secret}``) runs
in a background thread of the one ``serve`` process holding its *lease* (the store's: a flock()ed
file, or a PostgreSQL advisory lock), however many workers and hosts share the store.  The thread
opens the trigger's source (:func:`pgactions.triggers.open_source`) on the stored connection,
vetted like any caller's profile, from the stored checkpoint, and for each batch of events:

1. POSTs ``{"subscription", "trigger", "delivery", "events"}`` (one JSON body, kept byte for byte
   across retries) to the URL, signed ``X-Pgactions-Signature: sha256=<hex HMAC-SHA256 of the body
   with the secret>`` and carrying ``X-Pgactions-Delivery``, an id made from the subscription, the
   number of events delivered before and the stored checkpoint — the same for every retry, and
   again after a restart for the batch that was in flight;
2. retries with exponential backoff (0.5 s doubling to 60 s, honouring a receiver's
   ``Retry-After``) until the receiver answers 2xx.  A redirect is a failed delivery (never
   followed).  The URL is checked against the service's host policy before every attempt, after
   DNS, and the request goes to the address that was checked (pinned; ``Host`` and TLS SNI stay
   the URL's name);
3. only then stores the batch's checkpoint, and acknowledges it to the source.

So delivery is at least once and in order: a batch is sent again only if the process stopped
before storing its checkpoint, under the same delivery id.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from pgactions.service.store import StateStore, SubscriptionLease, SubscriptionRecord
from pgactions.spec.errors import ActionError

__all__ = ["DeliveryTarget", "Subscriptions", "check_url", "delivery_id", "new_secret", "new_subscription_id",
           "sign"]

log = logging.getLogger("pgactions.service.subscriptions")

SCAN_SECONDS = 2.0  # how often a process looks for subscriptions nobody runs (new, or of a dead process)
POLL_SECONDS = 1.0  # a source's poll waits this long for events (and a stop is seen within it)
IDLE_PERSIST_SECONDS = 10.0  # a checkpoint that moved without events (CDC heartbeats) is stored this often
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 60.0
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
STOP_SECONDS = 15.0  # stop() waits this long for the threads (a POST in flight ends within its timeout)
MAX_URL = 2048
SIGNATURE_HEADER = "X-Pgactions-Signature"
DELIVERY_HEADER = "X-Pgactions-Delivery"


def new_subscription_id() -> str:
    return "sub_" + secrets.token_hex(10)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Pgactions-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of *body*."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def delivery_id(subscription_id: str, delivered: int, checkpoint: dict[str, Any] | None) -> str:
    """The batch after *checkpoint*: the same id for every attempt, and after a restart from it."""
    text = orjson.dumps([subscription_id, delivered, checkpoint], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:32]


# -- the URL ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliveryTarget:
    """A webhook URL checked against the host policy, with the address to send to."""

    scheme: str
    host: str  # the name (or address) as written, lower-cased
    port: int
    target: str  # path and query
    address: str  # the checked address the request goes to

    def request_url(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{shown}:{self.port}{self.target}"

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def _refused(message: str) -> ActionError:
    return ActionError("INVALID_CONNECTION", f"url: {message}", extra={"field": "url",
                                                                        "errors": [{"path": "url", "message": message}]})


def check_url(url: Any, policy: Any) -> DeliveryTarget:
    """*url* as a delivery target, or INVALID_CONNECTION (field ``url``): http or https, no user or
    password, a host the service's :class:`~pgactions.service.untrusted.HostPolicy` allows —
    every address it resolves to, as for connection profiles (link-local and metadata addresses
    denied by default)."""
    if not isinstance(url, str) or not url:
        raise _refused("give the webhook's http:// or https:// URL")
    if len(url) > MAX_URL or not url.isprintable() or any(c.isspace() for c in url):
        raise _refused(f"must be at most {MAX_URL} printable characters without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise _refused("must start with http:// or https://")
    if "@" in parts.netloc:
        raise _refused("may not hold a user name or password (sign with the secret instead)")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise _refused("has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    rule = policy.denied_name(host)
    if rule is not None:
        raise _refused(f"{host!r} is a host the service may not connect to (denied: {rule.text})")
    literal = _ip(host)
    if literal is not None:
        addresses, resolved_from = [host], None
    else:
        try:
            addresses = policy.resolve(host, port)
        except (OSError, UnicodeError):
            raise _refused(f"{host!r} could not be resolved") from None
        resolved_from = host
        if not addresses:
            raise _refused(f"{host!r} could not be resolved")
    for text in addresses:
        address = _ip(text)
        why = "not an IP address" if address is None else policy.refusal(address, resolved_from)
        if why is not None:
            shown = f"{host!r} resolves to an address that is {why}" if resolved_from else f"{host} is {why}"
            raise _refused(shown)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return DeliveryTarget(parts.scheme, host, port, target, addresses[0].split("%", 1)[0])


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


# -- the manager ---------------------------------------------------------------------------------------

class Subscriptions:
    """Runs the subscriptions this process holds the lease of, one thread each.

    :meth:`start` starts a supervisor that looks every ``scan_seconds`` for subscriptions nobody
    runs (new ones, or those of a process that died) and takes their lease; :meth:`stop` ends every
    thread and closes every source.  :meth:`wake` makes the supervisor look now (after a POST),
    :meth:`forget` stops a subscription's thread at once (after a DELETE)."""

    def __init__(self, service: Any, *, scan_seconds: float = SCAN_SECONDS, poll_seconds: float = POLL_SECONDS,
                 first_backoff: float = FIRST_BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        self.service = service
        self.scan_seconds, self.poll_seconds = scan_seconds, poll_seconds
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def store(self) -> StateStore:
        return self.service.store  # type: ignore[no-any-return]

    def supported(self) -> bool:
        """Whether the store keeps subscriptions (a host's own store may not)."""
        return all(hasattr(self.store, name) for name in ("list_subscriptions", "lease_subscription",
                                                         "update_subscription"))

    def start(self) -> None:
        if self._thread is not None or not self.supported():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="pgactions-subscriptions", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """End every thread (each closes its source and releases its lease) within *timeout*."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.halt.set()
        for worker in workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
            if worker.thread.is_alive():
                log.warning("subscription %s did not stop within %.0f s", worker.subscription_id, timeout)

    def wake(self) -> None:
        self._wake.set()

    def forget(self, subscription_id: str) -> None:
        with self._lock:
            worker = self._workers.get(subscription_id)
        if worker is not None:
            worker.halt.set()

    def running(self) -> list[str]:
        """The subscriptions this process delivers now."""
        with self._lock:
            return sorted(i for i, w in self._workers.items() if w.thread.is_alive())

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                self._scan()
            except Exception:  # the store is down a moment: try again at the next scan
                log.warning("could not look for subscriptions", exc_info=True)
            self._wake.wait(self.scan_seconds)
            self._wake.clear()

    def _scan(self) -> None:
        records = self.store.list_subscriptions()
        ids = {r.id for r in records}
        with self._lock:
            for subscription_id, worker in list(self._workers.items()):
                if not worker.thread.is_alive():
                    del self._workers[subscription_id]
                elif subscription_id not in ids:
                    worker.halt.set()  # deleted through another process
        for record in records:
            if self._stopping.is_set():
                return
            with self._lock:
                if record.id in self._workers:
                    continue
            lease = self.store.lease_subscription(record.id)
            if lease is None:
                continue  # another process runs it; if that one dies, a later scan takes it over
            worker = _Worker(self, record.id, lease)
            with self._lock:
                if self._stopping.is_set():
                    lease.release()
                    return
                self._workers[record.id] = worker
            worker.thread.start()


class _Stopped(Exception):
    """The subscription's thread must end: the service stops, the subscription was deleted, or
    its lease is lost."""


class _Worker:
    def __init__(self, manager: Subscriptions, subscription_id: str, lease: SubscriptionLease) -> None:
        self.manager, self.subscription_id, self.lease = manager, subscription_id, lease
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pgactions-subscription-{subscription_id}",
                                       daemon=True)
        self.delivered = 0

    @property
    def store(self) -> StateStore:
        return self.manager.store

    def _check(self) -> None:
        if self.halt.is_set() or self.manager._stopping.is_set():
            raise _Stopped
        if not self.lease.held():
            log.warning("subscription %s: lease lost; another process may take it over", self.subscription_id)
            raise _Stopped

    def _wait(self, seconds: float) -> None:
        if self.halt.wait(seconds):
            raise _Stopped
        self._check()

    def _update(self, **changes: Any) -> None:
        if not self.store.update_subscription(self.subscription_id, **changes):
            raise _Stopped  # deleted

    def _run(self) -> None:
        failures = 0
        try:
            while True:
                self._check()
                record = self.store.get_subscription(self.subscription_id)
                if record is None:
                    return
                try:
                    self._follow(record)
                    return
                except _Stopped:
                    return
                except Exception as exc:  # the source failed (connection lost, table dropped …): open it again
                    failures += 1
                    message = _message(exc)
                    log.warning("subscription %s: %s", self.subscription_id, message)
                    self._update(status="failing", last_error=message)
                    self._wait(self._backoff(failures))
        except _Stopped:
            pass
        except Exception:
            log.exception("subscription %s stopped", self.subscription_id)
        finally:
            self.lease.release()

    def _backoff(self, attempt: int) -> float:
        seconds = min(self.manager.max_backoff, self.manager.first_backoff * 2 ** min(attempt - 1, 30))
        return seconds * random.uniform(0.8, 1.0)

    def _follow(self, record: SubscriptionRecord) -> None:
        from pgactions.triggers import open_source

        service = self.manager.service
        spec = service.store.get_connection(record.connection_id)
        if spec is None:
            raise ActionError("UNKNOWN_CONNECTION", f"no stored connection {record.connection_id!r}",
                              extra={"connectionId": record.connection_id})
        profile = service.vet(spec)
        # A copy: a source may keep (and change) parts of the checkpoint it is given, and the
        # delivery id is made from the stored one.
        source = open_source(service.runtime, record.trigger, profile, record.inputs,
                             copy.deepcopy(record.checkpoint))
        try:
            stored, stored_at = record.checkpoint, time.monotonic()
            self.delivered = record.delivered
            if record.status != "active" or record.last_error is not None:
                self._update(status="active", last_error=None)
            while True:
                self._check()
                batch = source.poll(self.manager.poll_seconds)
                self._check()
                if batch.events:
                    delivery = delivery_id(record.id, self.delivered, stored)
                    self._deliver(record, delivery, batch.events)
                    self.delivered += len(batch.events)
                    self._update(checkpoint=batch.checkpoint, delivered=self.delivered, status="active",
                                 last_delivery=time.time(), last_error=None)
                    source.ack(batch.checkpoint)
                    stored, stored_at = batch.checkpoint, time.monotonic()
                elif batch.checkpoint != stored and time.monotonic() - stored_at >= IDLE_PERSIST_SECONDS:
                    self._update(checkpoint=batch.checkpoint)
                    source.ack(batch.checkpoint)  # CDC: the slot may let go of the WAL behind it
                    stored, stored_at = batch.checkpoint, time.monotonic()
        finally:
            source.close()

    def _deliver(self, record: SubscriptionRecord, delivery: str, events: list[dict[str, Any]]) -> None:
        """POST the batch until the receiver answers 2xx (or the thread must stop: _Stopped)."""
        body = orjson.dumps({"subscription": record.id, "trigger": record.trigger, "delivery": delivery,
                             "events": events})
        headers = {"Content-Type": "application/json", "User-Agent": _user_agent(),
                   SIGNATURE_HEADER: sign(record.secret, body), DELIVERY_HEADER: delivery,
                   "X-Pgactions-Subscription": record.id}
        attempt = 0
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            while True:
                attempt += 1
                error, retry_after = self._post(client, record.url, body,
                                                {**headers, "X-Pgactions-Attempt": str(attempt)})
                if error is None:
                    return
                log.warning("subscription %s: delivery %s attempt %d failed: %s", record.id, delivery, attempt, error)
                self._update(status="retrying", last_error=error)
                wait = self._backoff(attempt)
                if retry_after is not None:
                    wait = min(self.manager.max_backoff, max(wait, retry_after))
                self._wait(wait)

    def _post(self, client: httpx.Client, url: str, body: bytes,
              headers: dict[str, str]) -> tuple[str | None, float | None]:
        """One attempt: (None, None) on 2xx, else (why, the receiver's Retry-After)."""
        try:
            target = check_url(url, self.manager.service.policy)  # every attempt: DNS may have changed
        except ActionError as exc:
            return f"refused: {exc.payload.get('detail') or exc.payload.get('message')}", None
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and _ip(target.host) is None else {}
        try:
            with client.stream("POST", target.request_url(), content=body,
                               headers={**headers, "Host": target.host_header()}, extensions=extensions) as response:
                status = response.status_code
                retry_after = _retry_after(response.headers.get("retry-after"))
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {_short(str(exc)) or 'no answer'}", None
        if 200 <= status < 300:
            return None, None
        if 300 <= status < 400:
            return f"the receiver answered {status}, a redirect (never followed)", None
        return f"the receiver answered {status}", retry_after


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _message(exc: BaseException) -> str:
    if isinstance(exc, ActionError):
        return _short(exc.one_line())
    return f"{type(exc).__name__}: {_short(str(exc))}"


def _short(text: str) -> str:
    return text.split("\n")[0][:300]


def _user_agent() -> str:
    from pgactions import __version__

    return f"pgactions/{__version__} (webhook)"
