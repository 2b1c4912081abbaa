"""A small LIFO pool of psycopg connections (one per connection profile).

Why not an existing pool: SQLAlchemy's QueuePool cost ~25 µs per checkout and return on our hot
path — 15 % of a primary-key lookup; psycopg_pool opens connections in background workers, so a
wrong password surfaces as a pool timeout after many seconds instead of the server's own answer
at once.  This one connects in the caller's thread (failures are the caller's to diagnose), hands
out the most recently used connection first (its server process, prepared statements and cursor
are warm, and surplus connections go idle and get closed), discards any connection that is not
cleanly idle when it comes back, and checks (without a round trip) that an idle connection was
not closed by the server before handing it out.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq

__all__ = ["ConnectionPool", "PoolTimeout"]


class PoolTimeout(Exception):
    """Every connection of the pool stayed busy for the whole wait."""


class ConnectionPool:
    def __init__(self, connect: Callable[[], Any], max_size: int, wait_timeout: float,
                 max_idle: float = 600.0, max_lifetime: float = 3600.0) -> None:
        self._connect = connect
        self.max_size = max_size
        self.wait_timeout = wait_timeout
        self.max_idle = max_idle
        self.max_lifetime = max_lifetime
        self._idle: list[tuple[Any, float]] = []  # (connection, returned at), most recent last
        self._born: dict[int, float] = {}  # id(connection) → opened at
        self._size = 0  # open connections, idle or in use
        self._closed = False
        self._cond = threading.Condition(threading.Lock())

    # -- checkout / return ---------------------------------------------------------------------
    def get(self) -> Any:
        expired: list[Any] = []
        deadline: float | None = None
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise PoolTimeout("the pool is closed")
                    now = time.monotonic()
                    while self._idle:
                        conn, returned = self._idle.pop()
                        if (now - returned > self.max_idle or now - self._born.get(id(conn), now) > self.max_lifetime
                                or _closed_by_server(conn)):
                            expired.append(conn)
                            self._forget(conn)
                            continue
                        return conn
                    if self._size < self.max_size:
                        self._size += 1
                        break
                    deadline = deadline or now + self.wait_timeout
                    if now >= deadline or not self._cond.wait(deadline - now):
                        raise PoolTimeout(f"all {self.max_size} connections stayed busy for {self.wait_timeout:g}s")
        finally:
            for conn in expired:
                _close_quietly(conn)
        return self._open()

    def put(self, conn: Any, discard: bool = False) -> None:
        """Give a connection back; one that is closed, broken or mid-transaction is closed instead."""
        if discard or conn.closed or conn.broken or conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            _close_quietly(conn)
            with self._cond:
                self._forget(conn)
                self._cond.notify()
            return
        with self._cond:
            if self._closed:
                self._forget(conn)
                closing = True
            else:
                self._idle.append((conn, time.monotonic()))
                closing = False
            self._cond.notify()
        if closing:
            _close_quietly(conn)

    def close_expired(self) -> int:
        """Close the idle connections past their idle time or lifetime; returns how many."""
        now = time.monotonic()
        with self._cond:
            keep: list[tuple[Any, float]] = []
            expired: list[tuple[Any, float]] = []
            for conn, returned in self._idle:
                old = now - returned > self.max_idle or now - self._born.get(id(conn), now) > self.max_lifetime
                (expired if old else keep).append((conn, returned))
            if not expired:
                return 0
            self._idle = keep
            for conn, _ in expired:
                self._forget(conn)
            self._cond.notify_all()
        for conn, _ in expired:
            _close_quietly(conn)
        return len(expired)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Close the idle connections now; connections in use are closed when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            for conn, _ in idle:
                self._forget(conn)
            self._cond.notify_all()
        for conn, _ in idle:
            _close_quietly(conn)

    @property
    def size(self) -> int:
        return self._size

    # -- helpers -------------------------------------------------------------------------------
    def _open(self) -> Any:
        try:
            conn = self._connect()
        except BaseException:
            with self._cond:
                self._size -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._born[id(conn)] = time.monotonic()
        return conn

    def _forget(self, conn: Any) -> None:
        """Under the lock: one connection fewer."""
        self._born.pop(id(conn), None)
        self._size -= 1


def _closed_by_server(conn: Any) -> bool:
    """Whether an idle connection was closed from the other end (server restart, terminated
    backend, idle timeout), found without a round trip.

    An idle connection of ours has nothing to read: a readable socket means the server sent its
    goodbye (an error, then end of file), or at most an unprompted notice.  Either way the
    connection is not trusted; a new one costs one connect.
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # a broken connection may fail to close cleanly: it is gone either way
        pass
