"""The state store: stored connections, API keys, idempotency records and trigger subscriptions.

An interface, so a host can plug its own.  Two come with the service: :class:`FileStore` (one file
per record in a state directory; the default, so two commands start everything) and
:class:`PostgresStore` (a schema in a PostgreSQL database, shared by many ``serve`` processes).
Both keep secrets encrypted with the service's key (:mod:`pgactions.service.crypto`) and API keys
only as hashes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pgactions.service.crypto import Keyring

__all__ = ["SUBSCRIPTION_STATE_FIELDS", "IdempotencyRecord", "KeyRecord", "StateStore", "SubscriptionLease",
           "SubscriptionRecord", "subscription_changes_json", "subscription_from_json", "subscription_to_json"]


@dataclass(frozen=True)
class KeyRecord:
    """An API key as stored: its hash, never the key itself."""

    name: str
    key_hash: str  # hex SHA-256 of the key (keys are 256-bit random, so no slow hash is needed)
    created: float  # Unix time
    expires: float | None = None
    revoked: bool = False
    actions: tuple[str, ...] | None = None  # None: every action
    connections: tuple[str, ...] | None = None  # None: every connection
    read_only: bool = False
    pinned: dict[str, Any] = field(default_factory=dict)
    allow_sql: bool = False


@dataclass(frozen=True)
class IdempotencyRecord:
    """A write request's answer, kept 24 h under its Idempotency-Key (scoped to the caller)."""

    key: str
    body_hash: str
    created: float
    status: int | None = None  # None while the first request is still running
    response: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SubscriptionRecord:
    """A trigger subscription (``POST /v1/subscriptions``): the trigger's events POSTed to *url*.

    *secret* (the HMAC key of the signatures) and *url* are in clear here; a store keeps them
    encrypted.  The state fields (:data:`SUBSCRIPTION_STATE_FIELDS`) are written by the one
    process holding the subscription's lease, with :meth:`StateStore.update_subscription`."""

    id: str
    trigger: str
    connection_id: str
    inputs: dict[str, Any]
    url: str
    secret: str
    created: float  # Unix time
    owner: str | None = None  # who made it (a key name or token subject), for the record
    status: str = "starting"  # starting, active, retrying, failing
    last_delivery: float | None = None  # Unix time of the last 2xx
    last_error: str | None = None
    checkpoint: dict[str, Any] | None = None  # after the last batch the receiver accepted
    delivered: int = 0  # events accepted by the receiver so far


# What update_subscription may change (the rest is fixed when the subscription is made).
SUBSCRIPTION_STATE_FIELDS = frozenset({"status", "last_delivery", "last_error", "checkpoint", "delivered"})


def subscription_to_json(record: SubscriptionRecord, keyring: Keyring) -> dict[str, Any]:
    """The record as stored: the secret and the URL (it may carry a token) encrypted."""
    return {"id": record.id, "trigger": record.trigger, "connectionId": record.connection_id,
            "inputs": record.inputs, "url": keyring.encrypt(record.url), "secret": keyring.encrypt(record.secret),
            "created": record.created, "owner": record.owner, **subscription_state_json(record)}


def subscription_state_json(record: SubscriptionRecord) -> dict[str, Any]:
    return {"status": record.status, "lastDelivery": record.last_delivery, "lastError": record.last_error,
            "checkpoint": record.checkpoint, "delivered": record.delivered}


_STATE_KEYS = {"status": "status", "last_delivery": "lastDelivery", "last_error": "lastError",
               "checkpoint": "checkpoint", "delivered": "delivered"}


def subscription_changes_json(changes: Mapping[str, Any]) -> dict[str, Any]:
    """update_subscription's keyword arguments as the stored JSON's keys (only state fields)."""
    unknown = sorted(set(changes) - SUBSCRIPTION_STATE_FIELDS)
    if unknown:
        raise ValueError(f"update_subscription may not change {', '.join(unknown)}")
    return {_STATE_KEYS[name]: value for name, value in changes.items()}


def subscription_from_json(data: Mapping[str, Any], keyring: Keyring) -> SubscriptionRecord:
    return SubscriptionRecord(
        id=data["id"], trigger=data["trigger"], connection_id=data["connectionId"], inputs=dict(data["inputs"]),
        url=keyring.decrypt(data["url"]), secret=keyring.decrypt(data["secret"]), created=float(data["created"]),
        owner=data.get("owner"), status=str(data.get("status") or "starting"),
        last_delivery=None if data.get("lastDelivery") is None else float(data["lastDelivery"]),
        last_error=data.get("lastError"), checkpoint=data.get("checkpoint"), delivered=int(data.get("delivered") or 0))


class SubscriptionLease(Protocol):
    """The right to run one subscription: held by one process at a time, across every process
    sharing the store.  A holder that dies loses it (its lock goes with its file descriptor or its
    database session), so another process takes the subscription over."""

    def held(self) -> bool: ...  # still ours (False: stop delivering, another process may have it)
    def release(self) -> None: ...


class StateStore(Protocol):
    # -- connections: profile dicts in, profile dicts out (secrets decrypted); at rest encrypted
    def put_connection(self, connection_id: str, profile: dict[str, Any]) -> None: ...
    def get_connection(self, connection_id: str) -> dict[str, Any] | None: ...
    def list_connections(self) -> list[str]: ...
    def delete_connection(self, connection_id: str) -> bool: ...

    # -- API keys
    def put_key(self, record: KeyRecord) -> None: ...  # refuses a name in use (ValueError)
    def find_key(self, key_hash: str) -> KeyRecord | None: ...
    def list_keys(self) -> list[KeyRecord]: ...
    def revoke_key(self, name: str) -> bool: ...

    # -- idempotency: claim() is atomic — the first caller gets None and runs the request; later
    # callers get the existing record (finished or still running).
    def claim_idempotency(self, key: str, body_hash: str, now: float) -> IdempotencyRecord | None: ...
    def finish_idempotency(self, key: str, status: int, response: bytes, headers: dict[str, str]) -> None: ...
    def release_idempotency(self, key: str) -> None: ...  # the request could not run: forget the claim

    # -- trigger subscriptions: the secret and URL encrypted at rest.  update_subscription changes
    # only SUBSCRIPTION_STATE_FIELDS and returns False when the subscription is gone (deleted
    # meanwhile: it is never re-created by a late update).  lease_subscription returns None when
    # another process holds the lease.
    def put_subscription(self, record: SubscriptionRecord) -> None: ...
    def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None: ...
    def list_subscriptions(self) -> list[SubscriptionRecord]: ...
    def delete_subscription(self, subscription_id: str) -> bool: ...
    def update_subscription(self, subscription_id: str, **changes: Any) -> bool: ...
    def lease_subscription(self, subscription_id: str) -> SubscriptionLease | None: ...

    def readable(self) -> bool: ...  # /readyz
    def close(self) -> None: ...
