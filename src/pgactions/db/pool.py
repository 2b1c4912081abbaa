"""A small LIFO pool of psycopg connections (one per connection profile), fair to its waiters.

Why not an existing pool: SQLAlchemy's QueuePool cost ~25 µs per checkout and return on our hot
path — 15 % of a primary-key lookup; psycopg_pool opens connections in background workers, so a
wrong password surfaces as a pool timeout after many seconds instead of the server's own answer
at once.  This one connects in the caller's thread (failures are the caller's to diagnose), hands
out the most recently used connection first (its server process, prepared statements and cursor
are warm, and surplus connections go idle and get closed), discards any connection that is not
cleanly idle when it comes back, and checks (without a round trip) that an idle connection was
not closed by the server before handing it out.

Waiting is first come, first served.  When every connection is busy a caller joins a queue of
waiters; a connection coming back goes straight to the oldest waiter, and a slot that frees up
(a connection discarded, expired or failing to open) is handed to the oldest waiter, who then
connects in its own thread.  Nothing is left on the table for whichever thread next wins the
lock, so a caller waits for the callers ahead of it only — the pattern of psycopg_pool's
``WaitingClient`` queue, with one lock for the pool and its waiters.  A waiter that times out
leaves the queue; :meth:`ConnectionPool.close` fails every waiter with :class:`PoolTimeout`.

Invariant (under the lock): while anyone waits there is no idle connection and no free slot.
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq

from pgactions.db import cooperative

__all__ = ["closed_by_server", "ConnectionPool", "PoolClosed", "PoolTimeout"]


class PoolTimeout(Exception):
    """Every connection of the pool stayed busy for the whole wait (or the pool was closed)."""


class PoolClosed(PoolTimeout):
    """The pool was closed (its cache dropped it, or the runtime is closing) before the checkout."""


class _Waiter:
    """One caller's place in the queue.  Its fields are only read or written under the pool's lock,
    which its condition shares."""

    __slots__ = ("ready", "conn", "slot", "error")

    def __init__(self, lock: threading.Lock) -> None:
        self.ready = threading.Condition(lock)
        self.conn: Any = None  # a connection handed over by put()
        self.slot = False  # a free slot handed over: the waiter opens the connection itself
        self.error: BaseException | None = None  # the pool closed

    @property
    def served(self) -> bool:
        return self.conn is not None or self.slot or self.error is not None


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
        self._size = 0  # open connections, idle or in use, and slots handed to a caller to open
        self._closed = False
        self._lock = threading.Lock()
        self._waiting: deque[_Waiter] = deque()  # oldest first
        self._pending: set[int] = set()  # idle connections whose reset answer is still to be read
        # id(connection) → a poll object watching its socket: asking it costs one poll(2), cheaper
        # than building select()'s lists on every checkout.
        self._pollers: dict[int, Any] = {}
        self.last_used = time.monotonic()  # the last checkout (its cache drops pools unused for long)

    # -- checkout / return ---------------------------------------------------------------------
    def get(self) -> Any:
        expired: list[Any] = []
        try:
            with self._lock:
                if self._closed:
                    raise PoolClosed("the pool is closed")
                now = self.last_used = time.monotonic()
                while self._idle:  # none while anyone waits (the invariant): no queue-jumping
                    conn, returned = self._idle.pop()
                    key = id(conn)
                    # A pending reset's answer makes the socket readable: that is not a goodbye.
                    pending = key in self._pending
                    if pending:
                        self._pending.discard(key)
                    if (now - returned > self.max_idle or now - self._born.get(key, now) > self.max_lifetime
                            or (not pending and closed_by_server(conn, self._pollers.get(key) or self._poller(conn)))):
                        expired.append(conn)
                        self._born.pop(key, None)
                        self._pollers.pop(key, None)
                        self._size -= 1  # the slot is ours: nobody waits while a connection is idle
                        continue
                    return conn
                if cooperative.active():  # on an event loop: connecting or queueing would block it
                    raise cooperative.WouldBlock
                if self._size < self.max_size:
                    self._size += 1
                else:
                    conn = self._wait()
                    if conn is not None:
                        return conn
                    # else a slot was handed to us, already counted in _size
        finally:
            for conn in expired:
                _close_quietly(conn)
        return self._open()

    def _wait(self) -> Any:
        """Under the lock: queue up until a connection (returned) or a slot (None) is handed over."""
        waiter = _Waiter(self._lock)
        self._waiting.append(waiter)
        deadline = time.monotonic() + self.wait_timeout
        try:
            while not waiter.served:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._waiting.remove(waiter)
                    raise PoolTimeout(f"all {self.max_size} connections stayed busy for {self.wait_timeout:g}s")
                waiter.ready.wait(remaining)
        except BaseException:
            if waiter.served:  # handed something at the last moment: pass it on, or we leak it
                if waiter.conn is not None:
                    self._hand_over(waiter.conn)
                elif waiter.slot:
                    self._release_slot()
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.conn

    def put(self, conn: Any, discard: bool = False, pending: bool = False) -> None:
        """Give a connection back; one that is closed, broken or mid-transaction is closed instead.

        *pending*: a reset was sent on it and its answer not read yet (the next user reads it
        first, see ``Session``); it is then busy, not mid-transaction."""
        busy = conn.pgconn.transaction_status != pq.TransactionStatus.IDLE
        if discard or conn.closed or conn.broken or (busy and not pending):
            _close_quietly(conn)
            with self._lock:
                self._forget(conn)
            return
        with self._lock:
            if self._closed:
                self._forget(conn)
                closing = True
            else:
                if pending:
                    self._pending.add(id(conn))
                self._hand_over(conn)
                closing = False
        if closing:
            _close_quietly(conn)

    def close_expired(self) -> int:
        """Close the idle connections past their idle time or lifetime; returns how many."""
        now = time.monotonic()
        with self._lock:
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
        for conn, _ in expired:
            _close_quietly(conn)
        return len(expired)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def unused(self) -> bool:
        """No connection in use and nobody waiting: closing the pool takes nothing from anyone."""
        return len(self._idle) == self._size and not self._waiting

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        """Close the idle connections now and fail every waiter with :class:`PoolTimeout`;
        connections in use are closed when they come back."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, deque()
            for waiter in waiting:
                waiter.error = PoolTimeout("the pool was closed while waiting for a connection")
                waiter.ready.notify()
            idle, self._idle = self._idle, []
            for conn, _ in idle:
                self._forget(conn)
        for conn, _ in idle:
            _close_quietly(conn)

    @property
    def size(self) -> int:
        return self._size

    # -- helpers -------------------------------------------------------------------------------
    def _open(self) -> Any:
        """Open a connection in the caller's thread, for a slot already counted in ``_size``."""
        try:
            conn = self._connect()
        except BaseException:
            with self._lock:
                self._release_slot()  # the next waiter tries for itself (and gets its own answer)
            raise
        with self._lock:
            self._born[id(conn)] = time.monotonic()
        return conn

    def _hand_over(self, conn: Any) -> None:
        """Under the lock: a usable connection goes to the oldest waiter, else to the idle list."""
        if self._waiting:
            waiter = self._waiting.popleft()
            waiter.conn = conn
            waiter.ready.notify()
        else:
            self._idle.append((conn, time.monotonic()))

    def _release_slot(self) -> None:
        """Under the lock: a slot frees up; the oldest waiter gets it, else the pool shrinks."""
        if self._waiting and not self._closed:
            waiter = self._waiting.popleft()
            waiter.slot = True
            waiter.ready.notify()
        else:
            self._size -= 1

    def _forget(self, conn: Any) -> None:
        """Under the lock: one connection fewer; its slot goes to the oldest waiter, if any."""
        self._born.pop(id(conn), None)
        self._pollers.pop(id(conn), None)
        self._release_slot()

    def _poller(self, conn: Any) -> Any:
        """Under the lock: the poll object watching *conn*'s socket (made on its first checkout)."""
        poller = self._pollers.get(id(conn))
        if poller is None and _POLL is not None and not (conn.closed or conn.broken):
            try:
                poller = _POLL()
                poller.register(conn.pgconn.socket, select.POLLIN)
            except (OSError, ValueError, psycopg.OperationalError):
                return None
            self._pollers[id(conn)] = poller
        return poller


_POLL = getattr(select, "poll", None)  # not on Windows: select() is used there


def closed_by_server(conn: Any, poller: Any = None) -> bool:
    """Whether an idle connection was closed from the other end (server restart, terminated
    backend, idle timeout), found without a round trip.

    An idle connection of ours has nothing to read: a readable socket means the server sent its
    goodbye (an error, then end of file), or at most an unprompted notice.  Either way the
    connection is not trusted; a new one costs one connect.  *poller*: a ``select.poll`` object
    watching the connection's socket for input (any event it reports, hang-up and error
    included, counts as closed).
    """
    if conn.closed or conn.broken:
        return True
    try:
        if poller is not None:
            return bool(poller.poll(0))
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # a broken connection may fail to close cleanly: it is gone either way
        pass
