"""The runtime on an event loop (pgactions.db.cooperative): actions wait for the server on the
loop, so other work goes on meanwhile; what would block the loop is refused before anything is
sent; cancellation, timeouts and a terminated backend end the action as they do in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from pgactions import Runtime
from pgactions.connection.profiles import load_profile
from pgactions.db.cooperative import WouldBlock, available, drive
from pgactions.spec.errors import ActionError
from tests.conftest import TestDB

pytestmark = pytest.mark.skipif(not available(), reason="greenlet (the server extra) is not installed")


def _profile(db: TestDB, name: str) -> dict[str, Any]:
    return {**db.profile, "applicationName": f"coop-{name}"}


def _run(runtime: Runtime, profile: dict[str, Any], query: str, **inputs: Any) -> Any:
    return runtime.run("query_rows", profile, {"query": query, **inputs}).data


def test_an_action_runs_on_the_loop_thread_and_lets_the_loop_go_on(runtime: Runtime, db: TestDB) -> None:
    """One action waits on an advisory lock held outside; a second action on the same loop
    completes meanwhile, and a timer ticks.  Had the first blocked the loop, the second could
    not start and the test would time out."""
    profile = {**_profile(db, "overlap"), "maxConnections": 2}
    _warm(runtime, profile, 2)  # opening a connection blocks: done first, in threads
    threads: set[int] = set()
    order: list[str] = []

    def waiting() -> Any:
        threads.add(threading.get_ident())
        result = _run(runtime, profile, "SELECT pg_advisory_lock(4242) IS NULL AS locked")
        order.append("waiting done")
        return result

    def quick() -> Any:
        threads.add(threading.get_ident())
        result = _run(runtime, profile, "SELECT 41 + 1 AS answer")
        order.append("quick done")
        return result

    async def main() -> tuple[Any, Any, int]:
        ticks: list[float] = []
        ticker = asyncio.ensure_future(_tick(ticks))
        first = asyncio.ensure_future(drive(waiting))
        await asyncio.sleep(0.2)  # the first action now waits for the lock, on the loop
        second = await asyncio.wait_for(drive(quick), timeout=30)
        assert not first.done()
        holder.execute("SELECT pg_advisory_unlock(4242)")
        done = await asyncio.wait_for(first, timeout=30)
        ticker.cancel()
        return done, second, len(ticks)

    with psycopg.connect(db.server.url(), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        first, second, ticks = asyncio.run(main())
    assert second["rows"] == [{"answer": 42}]
    assert first["rows"] == [{"locked": False}]
    assert order == ["quick done", "waiting done"]
    assert threads == {threading.get_ident()}  # both ran in this (the loop's) thread
    assert ticks >= 10  # the loop kept running while the first action waited


async def _tick(ticks: list[float]) -> None:
    """Note the time every few milliseconds: proof that the loop keeps running."""
    while True:
        await asyncio.sleep(0.005)
        ticks.append(time.monotonic())


def _loaded(profile: dict[str, Any]) -> Any:
    return load_profile(profile)


def _warm(runtime: Runtime, profile: dict[str, Any], count: int) -> None:
    """*count* idle connections in the profile's pool (opened in threads, as a host does)."""
    barrier = threading.Barrier(count)

    def hold() -> None:
        _run(runtime, profile, "SELECT 1 AS one FROM (SELECT pg_sleep(0.05)) s")
        barrier.wait(timeout=30)

    workers = [threading.Thread(target=hold) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert runtime.pools.pool(_loaded(profile)).idle_count >= count


def test_a_cold_pool_is_refused_before_anything_is_sent(runtime: Runtime, db: TestDB) -> None:
    profile = _profile(db, "cold")
    db.sql("CREATE TABLE hits (n int)")

    async def main() -> None:
        await drive(lambda: runtime.run("execute_query", profile, {"query": "INSERT INTO hits VALUES (1)"}))

    with pytest.raises(WouldBlock):
        asyncio.run(main())
    assert db.sql("SELECT count(*) FROM hits") == [(0,)]
    # In a thread the same call opens the connection; the loop then has one to use.
    runtime.run("execute_query", profile, {"query": "INSERT INTO hits VALUES (1)"})
    asyncio.run(main())
    assert db.sql("SELECT count(*) FROM hits") == [(2,)]


def test_a_busy_pool_is_refused_on_the_loop(runtime: Runtime, db: TestDB) -> None:
    profile = {**_profile(db, "busy"), "maxConnections": 1}
    _warm(runtime, profile, 1)
    started = threading.Event()

    def hold() -> None:
        started.set()
        _run(runtime, profile, "SELECT pg_sleep(1.5) IS NULL AS slept")

    holder = threading.Thread(target=hold)
    holder.start()
    started.wait()
    time.sleep(0.3)  # the thread has the only connection

    async def main() -> Any:
        return await drive(_run, runtime, profile, "SELECT 1 AS one")

    try:
        with pytest.raises(WouldBlock):  # waiting for it would hold the loop
            asyncio.run(main())
    finally:
        holder.join()
    assert asyncio.run(main())["rows"] == [{"one": 1}]


def test_cancelling_the_task_cancels_the_query_and_rolls_back(runtime: Runtime, db: TestDB) -> None:
    profile = _profile(db, "cancel")
    _warm(runtime, profile, 1)
    db.sql("CREATE TABLE ghosts (n int)")
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> Any:
        try:
            return runtime.run("execute_query", profile,
                               {"query": "INSERT INTO ghosts VALUES (1); SELECT pg_sleep(30)"}, cancel=cancel)
        except ActionError as exc:
            outcome["code"] = exc.code
            raise

    async def main() -> None:
        task = asyncio.ensure_future(drive(work, cancel=cancel))
        await asyncio.sleep(0.5)
        task.cancel()
        await task

    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert time.monotonic() - started < 15  # not the 30 s sleep
    assert outcome["code"] == "CANCELLED"
    assert db.sql("SELECT count(*) FROM ghosts") == [(0,)]
    active = db.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
                    ["%pg_sleep(30)%"])
    assert active == [(0,)]


def test_timeouts_and_a_terminated_backend_end_the_action_on_the_loop(runtime: Runtime, db: TestDB) -> None:
    profile = _profile(db, "faults")
    _warm(runtime, profile, 1)

    async def attempt(query: str, **inputs: Any) -> str:
        try:
            await drive(lambda: _run(runtime, profile, query, **inputs))
        except ActionError as exc:
            return exc.code
        return "OK"

    assert asyncio.run(attempt("SELECT pg_sleep(5)", timeout=1)) == "QUERY_TIMEOUT"

    def terminate_soon() -> None:
        time.sleep(0.5)
        db.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'coop-faults' "
               "AND query LIKE '%pg_sleep(20)%'")

    killer = threading.Thread(target=terminate_soon)
    killer.start()
    code = asyncio.run(attempt("SELECT pg_sleep(20)"))
    killer.join()
    assert code in ("CONNECTION_LOST", "ADMIN_SHUTDOWN")
    # The broken connection is gone; a new one is opened in a thread and the loop uses it again.
    assert _run(runtime, profile, "SELECT 1 AS one")["rows"] == [{"one": 1}]
    assert asyncio.run(attempt("SELECT 1")) == "OK"


def test_a_result_too_large_is_cut_off_without_holding_the_loop(db: TestDB) -> None:
    """The cap ends the stream mid-way: the query is cancelled (a request on a connection of its
    own, sent from a thread while the loop goes on) and the connection is ready for the next."""
    from pgactions.limits import Limits

    with Runtime(Limits(max_result_bytes=64 * 1024)) as runtime:
        profile = _profile(db, "too-large")
        _warm(runtime, profile, 1)

        async def main() -> tuple[str, Any, int]:
            ticks: list[float] = []
            ticker = asyncio.ensure_future(_tick(ticks))
            try:
                await drive(_run, runtime, profile, "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 200000) g")
                code = "OK"
            except ActionError as exc:
                code = exc.code
            after = await drive(_run, runtime, profile, "SELECT 7 AS seven")
            ticker.cancel()
            return code, after, len(ticks)

        code, after, ticks = asyncio.run(main())
    assert code == "RESULT_TOO_LARGE"
    assert after["rows"] == [{"seven": 7}]
    assert ticks >= 1
