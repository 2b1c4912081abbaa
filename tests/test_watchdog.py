"""The watchdog never lets a late cancel reach the connection's next user."""

from __future__ import annotations

import threading
import time

from pgactions.db import watchdog as wd


class SlowCancelConnection:
    """Stands in for a connection whose server takes a while to take the cancel request."""

    def __init__(self) -> None:
        self.cancel_started = threading.Event()
        self.cancel_finished_at: float | None = None

    def cancel_safe(self, timeout: float) -> None:
        self.cancel_started.set()
        time.sleep(0.3)
        self.cancel_finished_at = time.monotonic()


def test_disarm_waits_for_a_cancel_in_flight(monkeypatch) -> None:
    monkeypatch.setattr(wd, "CANCEL_GRACE", 0.0)
    dog = wd.Watchdog()
    conn = SlowCancelConnection()
    watch = dog.arm(conn, 0.05)
    assert conn.cancel_started.wait(5)
    dog.disarm(watch)  # the action ends while the cancel is being sent
    released_at = time.monotonic()
    assert watch.fired
    assert conn.cancel_finished_at is not None and conn.cancel_finished_at <= released_at


def test_disarmed_watch_never_fires(monkeypatch) -> None:
    monkeypatch.setattr(wd, "CANCEL_GRACE", 0.0)
    dog = wd.Watchdog()
    conn = SlowCancelConnection()
    watch = dog.arm(conn, 0.2)
    dog.disarm(watch)
    time.sleep(0.4)
    assert not watch.fired and not conn.cancel_started.is_set()
