"""The client-side half of the timeout: one thread that rescues actions whose server went silent.

The server enforces ``statement_timeout`` itself; this covers what it cannot: a server or network
that stops answering.  When an action passes its deadline (timeout + grace) the watchdog first
sends a cancel request, then, if the action is still stuck, shuts the socket down so the blocked
read returns.  One long-lived thread and a heap keep arming cheap (no thread per action).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from typing import Any

__all__ = ["Watchdog", "Watch"]

log = logging.getLogger("pgactions")

CANCEL_GRACE = 1.0  # seconds past the timeout before we cancel from the client
ABANDON_GRACE = 2.0  # seconds after the cancel before the socket is shut down


class Watch:
    """One armed action.  State changes happen under the watchdog's lock."""

    __slots__ = ("conn", "deadline", "fired", "done", "stage", "busy")

    def __init__(self, conn: Any, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.fired = False
        self.done = False
        self.stage = 0
        self.busy = False  # a cancel or shutdown is being sent right now


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, conn: Any, timeout: float) -> Watch:
        watch = Watch(conn, time.monotonic() + timeout + CANCEL_GRACE)
        with self._cond:
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (watch.deadline, next(self._counter), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pgactions-watchdog", daemon=True)
                self._thread.start()
            elif earliest is None or watch.deadline < earliest:
                self._cond.notify()
        return watch

    def disarm(self, watch: Watch) -> None:
        """Stop watching.  Waits for a cancel being sent right now, so that it can never reach
        the next action to use this connection."""
        with self._cond:
            while watch.busy:
                self._cond.wait()
            watch.done = True

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, watch = heapq.heappop(self._heap)
                        break
                    self._cond.wait(timeout=(self._heap[0][0] - now) if self._heap else None)
            self._expire(watch)

    def _expire(self, watch: Watch) -> None:
        with self._cond:
            if watch.done:
                return
            watch.fired = True
            watch.busy = True
            watch.stage += 1
            stage = watch.stage
        try:
            if stage == 1:
                try:
                    watch.conn.cancel_safe(timeout=ABANDON_GRACE)
                except Exception:  # the server may be unreachable: the next stage handles it
                    log.debug("cancel request failed", exc_info=True)
            else:
                _shutdown_socket(watch.conn)
        finally:
            with self._cond:
                watch.busy = False
                if stage == 1 and not watch.done:
                    watch.deadline = time.monotonic() + ABANDON_GRACE
                    heapq.heappush(self._heap, (watch.deadline, next(self._counter), watch))
                self._cond.notify_all()


def _shutdown_socket(conn: Any) -> None:
    """Make the blocked read fail now: the connection is abandoned (and discarded by the pool)."""
    try:
        fd = conn.pgconn.socket
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the fd still belongs to libpq
    except Exception:
        log.debug("could not shut the socket down", exc_info=True)
