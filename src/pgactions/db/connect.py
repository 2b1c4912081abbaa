"""Pooled connections, one pool per connection profile.

Each new connection is set up once: autocommit (every action is one statement, atomic on its
own, so no BEGIN/ROLLBACK round trips), UTC/ISO output settings the JSON loaders rely on, the
search path, and our loaders.  Session settings a statement might change (statement_timeout, read-only
default, application_name) are tracked per connection in :data:`SESSION_STATE` and re-applied only
when they differ.

In PgBouncer mode (``pgbouncer: true``) a client connection is not one server session: the
pooler hands each transaction to whichever server connection is free.  So nothing is set on the
session and nothing is prepared on the server; every action runs in its own transaction that
begins by setting what it needs with ``set_config(…, true)`` (see ``Session.prepare``).

A reaper thread closes connections idle for longer than their profile's ``idleTimeout``, so an
idle flow engine holds no server connections.
"""

from __future__ import annotations

import threading
import time
import weakref
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql as psql

from pgactions.connection.profiles import ConnectionProfile
from pgactions.db.convert import register_loaders, register_user_arrays
from pgactions.db.cooperative import CooperativeConnection
from pgactions.db.errormap import map_exception
from pgactions.db.pool import ConnectionPool, PoolClosed
from pgactions.render.templating import quote_identifier

__all__ = ["POOLED_RESET_SQL", "RESET_SQL", "PoolCache", "SESSION_SETTINGS", "SESSION_STATE", "SessionState", "reset_sql", "search_path",
           "session_settings"]

# Settings every session of ours runs with (set once per connection, in one round trip).
SESSION_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "iso_8601",
                    "extra_float_digits": "1", "standard_conforming_strings": "on"}


# Arrays of enums and domains have type ids of the database's own: without this they would come
# back as PostgreSQL's array text ("{sad,happy}").  Types created after a connection opened are
# known to the connections opened after them (connections live an hour at most).
_USER_ARRAY_TYPES_SQL = """
SELECT t.typname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END, t.typarray
FROM pg_type t
WHERE t.typtype IN ('e', 'd') AND t.typarray <> 0
  AND t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
"""


class SessionState:
    """What we last set on one connection; None means unknown (re-apply before use)."""

    __slots__ = ("read_only", "timeout_ms", "cursor", "pgbouncer", "reset_pending")

    def __init__(self, read_only: bool | None, timeout_ms: int | None, pgbouncer: bool = False) -> None:
        self.read_only = read_only
        self.timeout_ms = timeout_ms
        self.pgbouncer = pgbouncer
        self.reset_pending = False  # a reset was sent; its answer is read before the next use
        # One RawCursor per connection, reused: a new cursor sets up its loaders again (~25 µs).
        self.cursor: Any = None

    def forget(self) -> None:
        self.read_only = None
        self.timeout_ms = None


# Keyed by the psycopg connection itself, so a reconnect never inherits stale state.
SESSION_STATE: weakref.WeakKeyDictionary[Any, SessionState] = weakref.WeakKeyDictionary()
DEFAULT_TIMEOUT_MS = 60_000
# Pools kept per runtime (one per distinct profile); past this, the least recently used unused ones go.
MAX_POOLS = 256


class PoolCache:
    """One :class:`ConnectionPool` per distinct connection profile."""

    def __init__(self, numeric_as_number: bool = False) -> None:
        self._pools: dict[ConnectionProfile, ConnectionPool] = {}
        self._lock = threading.Lock()
        self._numeric_as_number = numeric_as_number
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        # The last profile asked for and its pool: a host passes the same profile object again
        # and again (load_profile caches them), so the usual lookup is one identity check instead
        # of hashing every field of the profile.
        self._last: tuple[ConnectionProfile | None, ConnectionPool | None] = (None, None)

    def pool(self, profile: ConnectionProfile) -> ConnectionPool:
        last_profile, pool = self._last  # one read: another thread may replace it meanwhile
        if last_profile is profile and pool is not None and not pool.closed:
            return pool
        pool = self._pools.get(profile)
        if pool is None:
            with self._lock:
                pool = self._pools.get(profile)
                if pool is None:
                    if len(self._pools) >= MAX_POOLS:
                        self._evict(len(self._pools) + 1 - MAX_POOLS)
                    pool = ConnectionPool(lambda: self._open(profile), max_size=profile.maxConnections,
                                          wait_timeout=profile.connectTimeout + 20, max_idle=profile.idleTimeout)
                    self._pools[profile] = pool
                    self._start_reaper()
        if not self._stop.is_set() and not pool.closed:  # (a pool dropped meanwhile is never remembered)
            self._last = (profile, pool)
        return pool

    def close_all(self) -> None:
        """Close every pool (connections in use close when their action ends) and the reaper."""
        self._stop.set()
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            self._last = (None, None)
        for pool in pools:
            pool.close()

    def _start_reaper(self) -> None:
        """Under the lock: one thread per PoolCache, started with its first pool."""
        if self._reaper is None and not self._stop.is_set():
            self._reaper = threading.Thread(target=self._reap, name="pgactions-pool-reaper", daemon=True)
            self._reaper.start()

    def _evict(self, count: int) -> None:
        """Under the lock: drop the *count* least recently used pools that nobody uses (their idle
        connections close), so a host given ever new profiles (a service's callers) keeps at
        most :data:`MAX_POOLS` pools and their sockets.  Pools in use are kept: the cap may then
        be passed for a while."""
        unused = sorted((pool.last_used, id(pool), profile) for profile, pool in self._pools.items() if pool.unused)
        for _, _, profile in unused[:count]:
            self._drop(profile)

    def _drop(self, profile: ConnectionProfile) -> None:
        """Under the lock.  A caller that took the pool just before finds it closed and asks again
        (:meth:`checkout`)."""
        pool = self._pools.pop(profile)
        if self._last[1] is pool:
            self._last = (None, None)
        pool.close()

    def _reap(self) -> None:
        while True:
            pools = list(self._pools.values())
            # Look a few times per shortest idle timeout, so a connection closes soon after its time.
            interval = min([p.max_idle / 4 for p in pools] + [30.0])
            if self._stop.wait(max(0.2, interval)):
                return
            for pool in pools:
                pool.close_expired()
            now = time.monotonic()
            with self._lock:  # a pool with no connection left, unused for its idle time, goes too
                for profile, pool in list(self._pools.items()):
                    if pool.unused and pool.size == 0 and now - pool.last_used > pool.max_idle:
                        self._drop(profile)

    def checkout(self, profile: ConnectionProfile) -> tuple[ConnectionPool, psycopg.Connection[Any]]:
        """A pooled connection; failures to connect become friendly errors."""
        pool = self.pool(profile)
        try:
            try:
                return pool, pool.get()
            except PoolClosed:
                if self._stop.is_set():
                    raise
                pool = self.pool(profile)  # dropped from the cache just now: its successor
                return pool, pool.get()
        except Exception as exc:
            # The diagnosis probes the address libpq was given (a service's profile pins the
            # addresses it checked): resolving the name again could reach another one.
            probe_host = dict(profile.extraOptions).get("hostaddr") or profile.host
            raise map_exception(exc, connecting=True, host=probe_host, port=profile.port,
                                connect_timeout=profile.connectTimeout) from None

    def _open(self, profile: ConnectionProfile) -> psycopg.Connection[Any]:
        """A new connection, set up once: our loaders and session settings in one round trip."""
        conn = CooperativeConnection.connect(autocommit=True, **profile.connect_kwargs())
        try:
            register_loaders(conn, self._numeric_as_number)
            if profile.pgbouncer:
                conn.prepare_threshold = None  # a pooler may run the next statement elsewhere
                register_user_arrays(conn, conn.execute(_USER_ARRAY_TYPES_SQL).fetchall())
                SESSION_STATE[conn] = SessionState(None, None, pgbouncer=True)
                return conn
            settings = session_settings(profile)
            calls = ", ".join("set_config(%s, %s, false)" for _ in settings)
            with conn.pipeline():  # one round trip for both
                conn.execute(f"SELECT {calls}", [v for item in settings.items() for v in item])
                user_arrays = conn.execute(_USER_ARRAY_TYPES_SQL)
            register_user_arrays(conn, user_arrays.fetchall())
        except BaseException:
            conn.close()
            raise
        SESSION_STATE[conn] = SessionState(True, DEFAULT_TIMEOUT_MS)
        return conn


def session_settings(profile: ConnectionProfile) -> dict[str, str]:
    """What every session of ours starts with (and returns to after a reset)."""
    settings = dict(SESSION_SETTINGS, default_transaction_read_only="on", statement_timeout=str(DEFAULT_TIMEOUT_MS))
    if profile.schema:
        settings["search_path"] = search_path(profile.schema)
    return settings


# Everything an action's own SQL may leave behind on a session, undone (PgBouncer's
# server_reset_query is DISCARD ALL; this keeps the prepared statements psycopg manages, which
# DISCARD ALL would drop behind its back), then our own settings applied again.  Role and
# session authorization are not settings RESET ALL touches: they are reset first.
RESET_SQL = ("SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL; CLOSE ALL; UNLISTEN *; "
             "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES")
# PgBouncer mode: what can be undone inside the action's own transaction (temporary tables and
# DISCARD cannot run there; a pooler in transaction mode does not support them anyway).
POOLED_RESET_SQL = ("RESET ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; CLOSE ALL; UNLISTEN *; "
                    "SELECT pg_advisory_unlock_all()")
# Statements PREPAREd in SQL (from_sql), even from inside a function: counted in the reset's last
# result, and a session holding any is closed (psycopg's own are protocol-level and stay).
PREPARED_IN_SQL = "SELECT count(*) FROM pg_prepared_statements WHERE from_sql"


@lru_cache(maxsize=256)
def reset_sql(profile: ConnectionProfile, app_name: str) -> bytes:
    """The reset as one text (one round trip); values quoted by psycopg; built once per profile
    and application name."""
    settings = dict(session_settings(profile), application_name=app_name)
    calls = ", ".join(f"set_config({psql.Literal(k).as_string(None)}, {psql.Literal(v).as_string(None)}, false)"
                      for k, v in settings.items())
    return f"{RESET_SQL}; SELECT {calls}; {PREPARED_IN_SQL}".encode()


def search_path(schema: str) -> str:
    return f"{quote_identifier(schema)}, public"
