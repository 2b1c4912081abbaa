"""Pooled connections, one SQLAlchemy engine per connection profile.

Each new connection is set up once: autocommit (the runtime opens transactions itself, so the
pool's reset costs no round trip), UTC/ISO output settings the JSON loaders rely on, the search
path, and our loaders.  Session settings a statement might change (statement_timeout, read-only
default) are tracked per connection in ``info`` and re-applied only when they differ.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from .boundary import map_exception
from .convert import register_loaders
from .profiles import ConnectionProfile
from .templating import quote_identifier

__all__ = ["EngineCache", "SESSION_STATE", "SessionState"]

# Settings every session of ours runs with (set once per connection, in one round trip).
SESSION_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "iso_8601",
                    "extra_float_digits": "1"}


class SessionState:
    """What we last set on one connection; None means unknown (re-apply before use)."""

    __slots__ = ("read_only", "timeout_ms", "cursor")

    def __init__(self, read_only: bool | None, timeout_ms: int | None) -> None:
        self.read_only = read_only
        self.timeout_ms = timeout_ms
        # One RawCursor per connection, reused: a new cursor sets up its loaders again (~25 µs).
        self.cursor: Any = None

    def forget(self) -> None:
        self.read_only = None
        self.timeout_ms = None


# Keyed by the psycopg connection itself, so a reconnect never inherits stale state.
SESSION_STATE: weakref.WeakKeyDictionary[Any, SessionState] = weakref.WeakKeyDictionary()
DEFAULT_TIMEOUT_MS = 60_000


class EngineCache:
    def __init__(self, numeric_as_number: bool = False) -> None:
        self._engines: dict[ConnectionProfile, sa.Engine] = {}
        self._lock = threading.Lock()
        self._numeric_as_number = numeric_as_number

    def engine(self, profile: ConnectionProfile) -> sa.Engine:
        engine = self._engines.get(profile)
        if engine is None:
            with self._lock:
                engine = self._engines.get(profile)
                if engine is None:
                    engine = self._create(profile)
                    self._engines[profile] = engine
        return engine

    def dispose_all(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.dispose()

    def _create(self, profile: ConnectionProfile) -> sa.Engine:
        kwargs = profile.connect_kwargs()
        numeric_as_number = self._numeric_as_number

        def connect() -> psycopg.Connection[Any]:
            conn = psycopg.Connection.connect(autocommit=True, **kwargs)
            try:
                register_loaders(conn, numeric_as_number)
                settings = dict(SESSION_SETTINGS, default_transaction_read_only="on",
                                statement_timeout=str(DEFAULT_TIMEOUT_MS))
                if profile.schema:
                    settings["search_path"] = _search_path(profile.schema)
                names = list(settings)
                select = ", ".join("set_config(%s, %s, false)" for _ in names)
                conn.execute(f"SELECT {select}", [v for n in names for v in (n, settings[n])])
            except BaseException:
                conn.close()
                raise
            SESSION_STATE[conn] = SessionState(True, DEFAULT_TIMEOUT_MS)
            return conn

        return sa.create_engine(
            "postgresql+psycopg://", creator=connect, poolclass=QueuePool,
            pool_size=profile.poolSize, max_overflow=0, pool_timeout=profile.connectTimeout + 20,
            pool_recycle=3600, hide_parameters=True,
            # Connections are autocommit and the Session rolls back or discards a connection
            # itself on failure, so the pool's reset-on-return would only cost time.
            pool_reset_on_return=None,
            # Last in, first out: sequential actions reuse the same warm connection (its server
            # process, prepared statements and cursor) instead of cycling through all of them.
            pool_use_lifo=True,
        )

    def checkout(self, profile: ConnectionProfile) -> Any:
        """A pooled DBAPI connection; failures to connect become friendly errors."""
        try:
            return self.engine(profile).raw_connection()
        except Exception as exc:
            raise map_exception(exc, connecting=True, host=profile.host, port=profile.port,
                                connect_timeout=profile.connectTimeout) from None


def _search_path(schema: str) -> str:
    return f"{quote_identifier(schema)}, public"
