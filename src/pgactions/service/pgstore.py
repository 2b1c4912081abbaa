"""A state store in PostgreSQL, shared by many ``serve`` processes on many hosts (``--state-url``).

Schema ``pgactions_state``: ``connections`` (profiles, secrets encrypted with the service's key, as
in the file store), ``api_keys`` (hashes only), ``idempotency``, ``subscriptions`` (trigger
subscriptions, secret and URL encrypted) and ``schema_version``.  The schema
is created and migrated when a store opens, under a transaction-scoped advisory lock, so processes
starting together migrate it once.  Nothing is cached: a key revoked through one process is refused
by every other on its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pgactions.service.crypto import Keyring, open_profile, profile_needs_reencrypt, seal_profile
from pgactions.service.state import (
    IDEMPOTENCY_TTL,
    check_id,
    idempotency_from_json,
    idempotency_to_json,
    key_from_json,
    key_to_json,
    valid_id,
)
from pgactions.service.store import (
    IdempotencyRecord,
    KeyRecord,
    SubscriptionRecord,
    subscription_changes_json,
    subscription_from_json,
    subscription_to_json,
)

__all__ = ["SCHEMA", "PostgresStore"]

SCHEMA = "pgactions_state"
_LOCK_ID = 0x70676163_74737461  # pg_advisory_xact_lock key for migrations ("pgactsta")
_SWEEP_EVERY = 3600.0
# A lease session still answering is a lease still held; it is asked at most this often.
_LEASE_CHECK_SECONDS = 2.0
T = TypeVar("T")

# Append only: each entry moves the schema one version up; never edit a released one.  {s} is the schema.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.connections (
        id text PRIMARY KEY,
        profile jsonb NOT NULL,
        updated timestamptz NOT NULL DEFAULT now());
    CREATE TABLE {s}.api_keys (
        name text PRIMARY KEY,
        key_hash text NOT NULL UNIQUE,
        record jsonb NOT NULL,
        revoked boolean NOT NULL DEFAULT false);
    CREATE TABLE {s}.idempotency (
        key text PRIMARY KEY,
        created double precision NOT NULL,
        record jsonb NOT NULL);
    CREATE INDEX ON {s}.idempotency (created);
    """,
    # 2: trigger subscriptions.  IF NOT EXISTS: stores started by an earlier version created it
    # outside the numbered migrations.
    """
    CREATE TABLE IF NOT EXISTS {s}.subscriptions (
        id text PRIMARY KEY,
        record jsonb NOT NULL,
        created timestamptz NOT NULL DEFAULT now());
    """,
)


class PostgresStore:
    """A :class:`~pgactions.service.store.StateStore` in a PostgreSQL schema.

    One connection per store, used under a lock (the store's queries are short), opened again when
    it breaks.
    """

    def __init__(self, url: str, keyring: Keyring, schema: str = SCHEMA) -> None:
        self._url = url
        self.keyring = keyring
        self.schema = schema
        self._s = sql.Identifier(schema)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._last_sweep = 0.0
        self._leases = _LeaseSession(url)
        self._run(self._migrate)

    def __repr__(self) -> str:  # never the URL: it may hold a password
        return f"PostgresStore(schema={self.schema!r})"

    # -- the connection ---------------------------------------------------------------------------

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run *work* in one transaction; once more on a fresh connection if the old one had broken."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    with conn.transaction():
                        return work(conn)
                except psycopg.OperationalError:
                    if not conn.closed or attempt == 2:
                        raise
                    self._conn = None
            raise AssertionError("unreachable")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10,
                                         application_name="pgactions-state")
        return self._conn

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
        conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
        conn.execute(self._q("CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)"))
        row = conn.execute(self._q("SELECT max(version) FROM {s}.schema_version")).fetchone()
        current = (row[0] if row else None) or 0
        if current > len(_MIGRATIONS):
            raise RuntimeError(f"the state schema {self.schema} is at version {current}, newer than this "
                               f"pgactions knows ({len(_MIGRATIONS)}): upgrade pgactions")
        for version, script in enumerate(_MIGRATIONS[current:], start=current + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(self._q(statement))
            conn.execute(self._q("INSERT INTO {s}.schema_version (version) VALUES (%s)"), [version])

    # -- connections ------------------------------------------------------------------------------

    def put_connection(self, connection_id: str, profile: dict[str, Any]) -> None:
        args = [check_id(connection_id), Jsonb(seal_profile(self.keyring, profile))]
        query = self._q("INSERT INTO {s}.connections (id, profile) VALUES (%s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, updated = now()")
        self._run(lambda c: c.execute(query, args))

    def get_connection(self, connection_id: str) -> dict[str, Any] | None:
        stored = self._stored_profile(connection_id)
        return None if stored is None else open_profile(self.keyring, stored)

    def connection_needs_reencrypt(self, connection_id: str) -> bool:
        stored = self._stored_profile(connection_id)
        return stored is not None and profile_needs_reencrypt(self.keyring, stored)

    def _stored_profile(self, connection_id: str) -> dict[str, Any] | None:
        if not valid_id(connection_id):
            return None  # an id no connection can have: simply not found
        query = self._q("SELECT profile FROM {s}.connections WHERE id = %s")
        row = self._run(lambda c: c.execute(query, [connection_id]).fetchone())
        return None if row is None else dict(row[0])

    def list_connections(self) -> list[str]:
        query = self._q("SELECT id FROM {s}.connections ORDER BY id")
        return [r[0] for r in self._run(lambda c: c.execute(query).fetchall())]

    def delete_connection(self, connection_id: str) -> bool:
        if not valid_id(connection_id):
            return False
        query = self._q("DELETE FROM {s}.connections WHERE id = %s")
        return self._run(lambda c: c.execute(query, [connection_id]).rowcount) > 0

    # -- API keys ---------------------------------------------------------------------------------

    def put_key(self, record: KeyRecord) -> None:
        check_id(record.name, "key name")
        # A new name, or the name of a revoked key (given to the new one); a live key's name is refused.
        query = self._q("INSERT INTO {s}.api_keys AS k (name, key_hash, record, revoked) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (name) DO UPDATE SET key_hash = excluded.key_hash, record = excluded.record, "
                        "revoked = excluded.revoked WHERE k.revoked")
        args = [record.name, record.key_hash, Jsonb(key_to_json(record)), record.revoked]
        if self._run(lambda c: c.execute(query, args).rowcount) == 0:
            raise ValueError(f"an API key named {record.name!r} exists; revoke it first or choose another name")

    def find_key(self, key_hash: str) -> KeyRecord | None:
        if not key_hash.isascii() or not key_hash.isalnum():
            return None  # not a hex digest (and nothing PostgreSQL's text could refuse)
        query = self._q("SELECT record FROM {s}.api_keys WHERE key_hash = %s")
        row = self._run(lambda c: c.execute(query, [key_hash]).fetchone())
        if row is None:
            return None
        record = key_from_json(row[0])
        return record if hmac.compare_digest(record.key_hash, key_hash) else None

    def list_keys(self) -> list[KeyRecord]:
        query = self._q("SELECT record FROM {s}.api_keys ORDER BY name")
        return [key_from_json(r[0]) for r in self._run(lambda c: c.execute(query).fetchall())]

    def revoke_key(self, name: str) -> bool:
        if not valid_id(name):
            return False
        query = self._q("UPDATE {s}.api_keys SET revoked = true, "
                        "record = jsonb_set(record, '{{revoked}}', 'true') WHERE name = %s")
        return self._run(lambda c: c.execute(query, [name]).rowcount) > 0

    # -- idempotency ------------------------------------------------------------------------------

    def claim_idempotency(self, key: str, body_hash: str, now: float) -> IdempotencyRecord | None:
        self._sweep(now)
        fresh = IdempotencyRecord(key=key, body_hash=body_hash, created=now)

        def claim(conn: psycopg.Connection[Any]) -> IdempotencyRecord | None:
            conn.execute(self._q("DELETE FROM {s}.idempotency WHERE key = %s AND created <= %s"),
                         [key, now - IDEMPOTENCY_TTL])
            inserted = conn.execute(self._q("INSERT INTO {s}.idempotency (key, created, record) VALUES (%s, %s, %s) "
                                            "ON CONFLICT (key) DO NOTHING"),
                                    [key, now, Jsonb(idempotency_to_json(fresh))]).rowcount
            if inserted:
                return None
            row = conn.execute(self._q("SELECT record FROM {s}.idempotency WHERE key = %s"), [key]).fetchone()
            return idempotency_from_json(row[0]) if row else None

        return self._run(claim)

    def finish_idempotency(self, key: str, status: int, response: bytes, headers: dict[str, str]) -> None:
        def finish(conn: psycopg.Connection[Any]) -> None:
            row = conn.execute(self._q("SELECT record FROM {s}.idempotency WHERE key = %s FOR UPDATE"),
                               [key]).fetchone()
            if row is None:
                return  # released or expired meanwhile
            record = replace(idempotency_from_json(row[0]), status=status, response=response, headers=dict(headers))
            conn.execute(self._q("UPDATE {s}.idempotency SET record = %s WHERE key = %s"),
                         [Jsonb(idempotency_to_json(record)), key])

        self._run(finish)

    def release_idempotency(self, key: str) -> None:
        query = self._q("DELETE FROM {s}.idempotency WHERE key = %s")
        self._run(lambda c: c.execute(query, [key]))

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        query = self._q("DELETE FROM {s}.idempotency WHERE created <= %s")
        self._run(lambda c: c.execute(query, [now - IDEMPOTENCY_TTL]))

    # -- trigger subscriptions ----------------------------------------------------------------------

    def put_subscription(self, record: SubscriptionRecord) -> None:
        args = [check_id(record.id, "subscription id"), Jsonb(subscription_to_json(record, self.keyring))]
        query = self._q("INSERT INTO {s}.subscriptions (id, record) VALUES (%s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET record = excluded.record")
        self._run(lambda c: c.execute(query, args))

    def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        if not valid_id(subscription_id):
            return None
        query = self._q("SELECT record FROM {s}.subscriptions WHERE id = %s")
        row = self._run(lambda c: c.execute(query, [subscription_id]).fetchone())
        return None if row is None else subscription_from_json(row[0], self.keyring)

    def list_subscriptions(self) -> list[SubscriptionRecord]:
        query = self._q("SELECT record FROM {s}.subscriptions ORDER BY id")
        return [subscription_from_json(r[0], self.keyring) for r in self._run(lambda c: c.execute(query).fetchall())]

    def delete_subscription(self, subscription_id: str) -> bool:
        if not valid_id(subscription_id):
            return False
        query = self._q("DELETE FROM {s}.subscriptions WHERE id = %s")
        return self._run(lambda c: c.execute(query, [subscription_id]).rowcount) > 0

    def update_subscription(self, subscription_id: str, **changes: Any) -> bool:
        values = subscription_changes_json(changes)
        if not valid_id(subscription_id):
            return False
        query = self._q("UPDATE {s}.subscriptions SET record = record || %s WHERE id = %s")
        return self._run(lambda c: c.execute(query, [Jsonb(values), subscription_id]).rowcount) > 0

    def lease_subscription(self, subscription_id: str) -> _Lease | None:
        digest = hashlib.sha256(f"{self.schema}\0subscription\0{check_id(subscription_id, 'subscription id')}"
                                .encode()).digest()
        return self._leases.try_lock(int.from_bytes(digest[:8], "big", signed=True))

    # -- health -----------------------------------------------------------------------------------

    def readable(self) -> bool:
        try:
            self._run(lambda c: c.execute(self._q("SELECT 1 FROM {s}.schema_version LIMIT 1")).fetchall())
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._leases.close()


class _LeaseSession:
    """Subscription leases: session-level advisory locks on one connection of their own (opened at
    the first lease).  A process that dies loses its session, so its locks, and other processes
    take its subscriptions over; a broken session ends every lease it held (a new one is opened
    for the next).  Server-side TCP keepalives make a host that vanished without closing its
    socket lose its session within about a minute."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._generation = 0
        self._checked = 0.0

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._generation += 1
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10,
                                         application_name="pgactions-leases")
            for setting in ("tcp_keepalives_idle = 30", "tcp_keepalives_interval = 10",
                            "tcp_keepalives_count = 3", "idle_session_timeout = 0"):
                try:
                    self._conn.execute(f"SET {setting}")
                except psycopg.Error:  # an older server, or a Unix socket: keep the defaults
                    pass
            self._checked = time.monotonic()
        return self._conn

    def _lost(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def try_lock(self, key: int) -> _Lease | None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    row = self._connection().execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
                    break
                except psycopg.OperationalError:
                    self._lost()  # every lease of that session is gone with it
                    if attempt == 2:
                        raise
            return _Lease(self, key, self._generation) if row and row[0] else None

    def alive(self, generation: int) -> bool:
        with self._lock:
            if generation != self._generation or self._conn is None or self._conn.closed:
                return False
            if time.monotonic() - self._checked >= _LEASE_CHECK_SECONDS:
                try:
                    self._conn.execute("SELECT 1")
                except psycopg.Error:
                    self._lost()
                    return False
                self._checked = time.monotonic()
            return True

    def unlock(self, key: int, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._conn is None or self._conn.closed:
                return  # that session is gone, and its locks with it
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            except psycopg.Error:
                self._lost()

    def close(self) -> None:
        with self._lock:
            self._lost()


class _Lease:
    def __init__(self, session: _LeaseSession, key: int, generation: int) -> None:
        self._session, self._key, self._generation = session, key, generation
        self._released = False

    def held(self) -> bool:
        return not self._released and self._session.alive(self._generation)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._session.unlock(self._key, self._generation)
