"""The client-side half of the timeout: one thread that rescues actions whose server went silent.

The server enforces ``statement_timeout`` itself; this covers what it cannot: a server or network
that stops answering, and a host cancelling an action (``Runtime.run(…, cancel=event)``): the
cancel goes out at the next scan after the event is set.  When an action passes its deadline (timeout + grace) the watchdog first
sends a cancel request, then, if the action is still stuck, shuts the socket down so the blocked
read returns.

Arming and disarming are on every action's path, so they take no lock: arming puts the watch in
a dict, disarming marks it done.  The thread scans the dict a few times a second.  A cancel being
sent while the action ends is the one case that needs coordination (the connection must not go
back to the pool with a cancel still on its way): see :meth:`Watchdog.disarm`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from pgactions.db import cooperative

__all__ = ["Watch", "Watchdog"]

log = logging.getLogger("pgactions")

CANCEL_GRACE = 1.0  # seconds past the timeout before we cancel from the client
ABANDON_GRACE = 2.0  # seconds after the cancel before the socket is shut down
SCAN_INTERVAL = 0.25  # how often the thread looks for expired watches


class Watch:
    """One armed action."""

    __slots__ = ("conn", "deadline", "fired", "done", "stage", "busy", "cancel", "cancelled")

    def __init__(self, conn: Any, deadline: float, cancel: Any = None) -> None:
        self.conn = conn
        self.deadline = deadline
        self.cancel = cancel  # the host's threading.Event, or None
        self.cancelled = False  # fired because the host cancelled, not because time ran out
        self.fired = False
        self.done = False
        self.stage = 0
        self.busy = False  # a cancel or shutdown is being sent right now


class Watchdog:
    def __init__(self) -> None:
        self._active: dict[int, Watch] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def arm(self, conn: Any, timeout: float, cancel: Any = None) -> Watch:
        watch = Watch(conn, time.monotonic() + timeout + CANCEL_GRACE, cancel)
        self._active[id(watch)] = watch
        if self._thread is None:
            self._start()
        return watch

    def disarm(self, watch: Watch) -> None:
        """Stop watching.  If a cancel is being sent right now, wait for it to be out, so that
        it can never reach the next action to use this connection."""
        watch.done = True  # first: _expire re-checks it after marking itself busy
        self._active.pop(id(watch), None)
        if watch.busy:  # on an event loop, waited for in a thread: the cancel may take seconds
            cooperative.call_blocking(self._quiet, watch)

    def _quiet(self, watch: Watch) -> None:
        with self._cond:
            while watch.busy:
                self._cond.wait()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pgactions-watchdog", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(SCAN_INTERVAL)
            now = time.monotonic()
            for watch in list(self._active.values()):
                if watch.done:
                    continue
                if watch.stage == 0 and watch.cancel is not None and watch.cancel.is_set():
                    watch.cancelled = True
                    self._expire(watch)
                elif watch.deadline <= now:
                    self._expire(watch)

    def _expire(self, watch: Watch) -> None:
        with self._cond:
            watch.busy = True
            if watch.done:  # disarmed in the meantime: nothing to do
                watch.busy = False
                self._cond.notify_all()
                return
            watch.fired = True
            watch.stage += 1
            stage = watch.stage
        try:
            if stage == 1:
                try:
                    watch.conn.cancel_safe(timeout=ABANDON_GRACE)
                except Exception:  # the server may be unreachable: the next stage handles it
                    log.debug("cancel request failed", exc_info=True)
                watch.deadline = time.monotonic() + ABANDON_GRACE
            else:
                _shutdown_socket(watch.conn)
                self._active.pop(id(watch), None)
        finally:
            with self._cond:
                watch.busy = False
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
