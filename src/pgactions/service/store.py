"""The state store: stored connections, API keys and idempotency records.

An interface, so a host can plug its own.  Two come with the service: :class:`FileStore` (one file
per record in a state directory; the default, so two commands start everything) and
:class:`PostgresStore` (a schema in a PostgreSQL database, shared by many ``serve`` processes).
Both keep secrets encrypted with the service's key (:mod:`pgactions.service.crypto`) and API keys
only as hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["IdempotencyRecord", "KeyRecord", "StateStore"]


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

    def readable(self) -> bool: ...  # /readyz
    def close(self) -> None: ...
