"""A busy pool serves its waiters first come, first served.

Through the real runtime: many flow steps sharing a few connections all get their turn, none waits
for much longer than the others, and none fails while the wait is within the pool's timeout.  With
a fake ``connect``: the hand-off order itself, a waiter that times out, a connection that fails to
open, and close() while callers wait — deterministically, without timing.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Any

import pytest
from psycopg import pq

from pgactions import ActionError, Runtime, load_profile
from pgactions.db.pool import ConnectionPool, PoolTimeout

THREADS, POOL_SIZE, RUNS, SLEEP = 16, 5, 6, 0.3


def test_sixteen_threads_on_five_connections_take_turns(db) -> None:
    profile = load_profile({**db.profile, "maxConnections": POOL_SIZE})
    latencies: list[list[float]] = [[] for _ in range(THREADS)]
    finished: list[float] = [0.0] * THREADS
    failures: list[str] = []
    start = threading.Barrier(THREADS)

    with Runtime() as rt:
        rt.run("query_rows", profile, {"query": "SELECT 1"})  # the pool exists before the rush

        def worker(n: int) -> None:
            start.wait()
            for _ in range(RUNS):
                began = time.monotonic()
                try:
                    rt.run("query_rows", profile, {"query": f"SELECT pg_sleep({SLEEP})"})
                except ActionError as exc:
                    failures.append(f"{exc.code}: {exc}")
                latencies[n].append(time.monotonic() - began)
            finished[n] = time.monotonic()

        began = time.monotonic()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.monotonic() - began
        assert rt.pools.pool(profile).size <= POOL_SIZE

    assert failures == []
    every = [latency for per_thread in latencies for latency in per_thread]
    assert len(every) == THREADS * RUNS
    # Served in turn, an action waits for the ~11 ahead of it: every action takes about the same
    # time (THREADS / POOL_SIZE sleeps).  Without a queue one waited 23.5 s while others never waited.
    # Compared with each other, not with the clock, so a slow machine slows all of them alike.
    mean = statistics.mean(every)
    assert max(every) < 3 * mean, (max(every), mean)
    # And nobody is left behind: every thread finishes near the end of the run, not after the others.
    first_done = min(finished) - began
    assert first_done > 0.5 * elapsed, (first_done, elapsed)


# -- the hand-off itself, with fake connections ------------------------------------------------

class FakeConnection:
    """What the pool looks at: closed/broken, the transaction status and the socket."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.broken = False
        self._ours, self._theirs = socket.socketpair()  # nothing to read: not closed by the "server"
        self.pgconn = type("PGconn", (), {"transaction_status": pq.TransactionStatus.IDLE,
                                          "socket": self._ours.fileno()})()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._ours.close()
            self._theirs.close()

    def __repr__(self) -> str:
        return f"<{self.name}>"


class FakeServer:
    """A connect function: hands out numbered fake connections, or fails when told to."""

    def __init__(self) -> None:
        self.opened: list[FakeConnection] = []
        self.fail_next = 0

    def connect(self) -> FakeConnection:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("the server said no")
        conn = FakeConnection(f"conn{len(self.opened)}")
        self.opened.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self.opened:
            conn.close()


@pytest.fixture
def server() -> Any:
    fake = FakeServer()
    yield fake
    fake.close_all()


def _eventually(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


class Caller(threading.Thread):
    """One pool.get() in a thread; joins the queue before the next caller is started."""

    def __init__(self, pool: ConnectionPool, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.pool = pool
        self.got: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.got = self.pool.get()
        except BaseException as exc:
            self.error = exc
        self.done.set()


def _queue(pool: ConnectionPool, names: list[str]) -> list[Caller]:
    callers = []
    for name in names:
        caller = Caller(pool, name)
        caller.start()
        callers.append(caller)
        queued = len(callers)
        _eventually(lambda: pool.waiting_count == queued, f"{name} queues")  # noqa: B023 (used at once)
    return callers


def test_returned_connections_go_to_the_oldest_waiter(server) -> None:
    pool = ConnectionPool(server.connect, max_size=2, wait_timeout=30)
    a, b = pool.get(), pool.get()
    callers = _queue(pool, ["first", "second", "third", "fourth"])
    served: list[str] = []
    for returned in (a, b, a, b):  # the third and fourth get what the first and second give back
        pool.put(returned)
        # Handed over at once: never idle, so a thread arriving now could not take it.
        assert pool.idle_count == 0
        _eventually(lambda: sum(c.done.is_set() for c in callers) == len(served) + 1, "one more is served")
        newly = next(c for c in callers if c.done.is_set() and c.name not in served)
        assert newly.got is returned
        served.append(newly.name)
    assert served == ["first", "second", "third", "fourth"]
    assert all(c.error is None for c in callers)
    assert len(server.opened) == 2 and pool.size == 2
    pool.close()


def test_a_newcomer_queues_behind_the_waiters(server) -> None:
    pool = ConnectionPool(server.connect, max_size=1, wait_timeout=30)
    held = pool.get()
    (waiter,) = _queue(pool, ["waiter"])
    pool.put(held)  # goes to the waiter, not to whoever asks next
    waiter.done.wait(10)
    assert waiter.got is held
    late = Caller(pool, "late")
    late.start()
    _eventually(lambda: pool.waiting_count == 1, "the newcomer queues")
    assert not late.done.is_set()
    pool.put(waiter.got)
    late.done.wait(10)
    assert late.got is held and late.error is None
    pool.put(late.got)
    assert pool.idle_count == 1  # nobody waits: back to the idle list
    pool.close()


def test_idle_connections_are_still_handed_out_most_recent_first(server) -> None:
    pool = ConnectionPool(server.connect, max_size=3, wait_timeout=1)
    a, b = pool.get(), pool.get()
    pool.put(a)
    pool.put(b)
    assert pool.get() is b
    assert pool.get() is a
    pool.close()


def test_a_waiter_that_times_out_leaves_the_queue(server) -> None:
    pool = ConnectionPool(server.connect, max_size=1, wait_timeout=0.2)
    held = pool.get()
    with pytest.raises(PoolTimeout, match="busy"):
        pool.get()
    assert pool.waiting_count == 0
    pool.put(held)
    assert pool.idle_count == 1  # not handed to the caller who gave up
    assert pool.get() is held
    pool.put(held)
    pool.close()


def test_a_discarded_connection_frees_its_slot_for_the_oldest_waiter(server) -> None:
    pool = ConnectionPool(server.connect, max_size=1, wait_timeout=30)
    held = pool.get()
    first, second = _queue(pool, ["first", "second"])
    pool.put(held, discard=True)
    assert first.done.wait(10) and first.got is server.opened[1]  # it connected, in its own thread
    assert not second.done.is_set() and pool.size == 1
    pool.put(first.got)
    assert second.done.wait(10) and second.got is first.got
    pool.put(second.got)
    pool.close()


def test_a_connection_that_fails_to_open_frees_its_slot_for_the_next_waiter(server) -> None:
    pool = ConnectionPool(server.connect, max_size=1, wait_timeout=30)
    held = pool.get()
    first, second = _queue(pool, ["first", "second"])
    server.fail_next = 1
    pool.put(held, discard=True)  # the slot goes to first, whose connect fails
    assert first.done.wait(10) and isinstance(first.error, ConnectionError)
    assert second.done.wait(10) and second.error is None and second.got is server.opened[1]
    assert pool.size == 1
    pool.put(second.got)
    pool.close()


def test_close_wakes_every_waiter_with_pool_timeout(server) -> None:
    pool = ConnectionPool(server.connect, max_size=1, wait_timeout=60)
    held = pool.get()
    callers = _queue(pool, ["a", "b", "c"])
    pool.close()
    for caller in callers:
        assert caller.done.wait(10), f"{caller.name} still waits after close()"
        assert isinstance(caller.error, PoolTimeout)
    assert pool.waiting_count == 0
    pool.put(held)  # in use at close: closed when it comes back
    assert held.closed and pool.size == 0
    with pytest.raises(PoolTimeout, match="closed"):
        pool.get()
