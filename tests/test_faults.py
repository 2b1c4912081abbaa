"""Faults under a running Runtime: a frozen backend, a server stopped and started mid-series, a
backend killed with SIGKILL (the postmaster then restarts every backend).

Each test runs on a throwaway server of its own (module-scoped, no SSL), so stopping, crashing or
freezing it never touches the suite's shared server; the server is running again after each test,
whatever happened.  The server's processes are signalled directly: as root (the server then runs
as the postgres OS user) or as the user the server runs as (LocalServer's own choice otherwise).

The properties: a frozen backend costs the action its timeout (QUERY_TIMEOUT well within 15 s,
found by the client-side watchdog since the server cannot answer) and changes nothing; a lost
server gives connection codes (CONNECTION_REFUSED, CONNECTION_LOST …), never anything else; and
once the server is back, the same Runtime — without a restart of it — runs every action again.
``[slow]`` variants repeat the outages several times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from pgactions import ActionError, Runtime
from pgactions.devtools.local_server import LocalServer

from .conftest import APP_PASSWORD
from .test_fuzz import check_error

# What an action may answer while the server is away or restarting.
CONNECTION_CODES = {"CONNECTION_REFUSED", "CONNECTION_LOST", "CONNECTION_TIMEOUT"}


@pytest.fixture(scope="module")
def server(pg: Any) -> Iterator[LocalServer]:
    if pg.local is None:
        pytest.skip("needs local PostgreSQL binaries (PGACTIONS_TEST_DSN points elsewhere)")
    local = LocalServer(ssl=False, max_connections=40, bindir=pg.local._bindir).start()
    try:
        local.psql(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
        local.psql("CREATE DATABASE faults OWNER app")
        local.psql("CREATE TABLE t (id serial PRIMARY KEY, tag text NOT NULL)", database="faults")
        local.psql("ALTER TABLE t OWNER TO app", database="faults")
        yield local
    finally:
        local.stop()


def _pg_ctl(server: LocalServer, *args: str, check: bool = True) -> str:
    return server._run([str(server._bindir / "pg_ctl"), "-D", str(server.datadir), *args], check=check)


def stop_server(server: LocalServer) -> None:
    _pg_ctl(server, "-m", "fast", "-w", "-t", "60", "stop")


def start_server(server: LocalServer) -> None:
    assert server.root is not None
    _pg_ctl(server, "-w", "-t", "60", "-l", str(server.root / "server.log"), "start")


def ensure_running(server: LocalServer) -> None:
    if "server is running" not in _pg_ctl(server, "status", check=False):
        start_server(server)
    admin_wait(server)


def admin_wait(server: LocalServer, deadline: float = 60) -> None:
    """Wait until the server takes connections (after a crash it first replays its WAL)."""
    end = time.monotonic() + deadline
    while True:
        try:
            with psycopg.connect(server.url(database="faults"), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


@pytest.fixture
def fresh(server: LocalServer) -> Iterator[LocalServer]:
    """The module's server, running; running again after the test whatever it did."""
    ensure_running(server)
    try:
        yield server
    finally:
        ensure_running(server)


@dataclass
class Target:
    server: LocalServer
    app: str  # this test's application_name: how its backends are found in pg_stat_activity

    def profile(self, **extra: Any) -> dict[str, Any]:
        url = f"postgresql://app:{quote(APP_PASSWORD, safe='')}@127.0.0.1:{self.server.port}/faults"
        return {"url": url, "sslMode": "disable", "applicationName": self.app, "connectTimeout": 3, **extra}

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.url(database="faults"), autocommit=True)

    def backends(self, running: str | None = None) -> list[int]:
        """This test's backends (those whose query holds *running* and is active, if given)."""
        where = "" if running is None else " AND state = 'active' AND strpos(query, %s) > 0"
        with self.admin() as conn:
            return [r[0] for r in conn.execute(f"SELECT pid FROM pg_stat_activity WHERE application_name = %s{where}",
                                               [self.app] + ([running] if running else [])).fetchall()]

    def wait_for_backend(self, running: str, timeout: float = 10) -> int | None:
        """The pid of this test's backend running a query that holds *running*."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pids = self.backends(running)
            if pids:
                return pids[0]
            time.sleep(0.02)
        return None


@pytest.fixture
def target(fresh: LocalServer) -> Target:
    return Target(fresh, "faults-" + uuid.uuid4().hex[:8])


def coded(fn: Callable[[], Any]) -> tuple[Any, ActionError | None]:
    """(result, None) or (None, the checked ActionError); anything else fails the test."""
    try:
        return fn(), None
    except ActionError as error:
        check_error(error)
        return None, error


def _process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


# == a frozen backend ==========================================================================

class Freezer:
    """SIGSTOP a backend; SIGCONT it on the way out, whatever happened."""

    def __init__(self) -> None:
        self.pid: int | None = None

    def freeze(self, pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        self.pid = pid

    def thaw(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def freeze_when_running(self, target: Target, marker: str) -> threading.Thread:
        """A thread that freezes the target's backend once it runs a query holding *marker*."""
        def freeze_it() -> None:
            pid = target.wait_for_backend(marker)
            if pid is not None:
                self.freeze(pid)

        thread = threading.Thread(target=freeze_it)
        thread.start()
        return thread


class Bounded:
    """Run *fn* in a thread, so that a broken watchdog fails the test instead of hanging it."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.elapsed: float | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # re-raised in the test's thread by result()
            self.error = exc
        self.elapsed = time.monotonic() - self.started

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> Any:
        assert self.wait(60), "the action never ended"
        if self.error is not None:
            raise self.error
        return self.value


def _frozen_run(act: Callable[[], Any], freezing: threading.Thread,
                freezer: Freezer) -> tuple[Bounded, ActionError | None]:
    """*act* (returning ``coded(…)``) while *freezing* freezes its backend; thawed whatever
    happened.  It must end within 15 s, and the backend must have been seen and frozen."""
    action = Bounded(act)
    try:
        ended_in_time = action.wait(15)
    finally:
        freezing.join()
        freezer.thaw()
    _, error = action.result()
    assert ended_in_time, "the action did not end within 15 s of a frozen backend"
    assert freezer.pid is not None, "the backend was never seen running the statement"
    return action, error


def test_a_frozen_backend_times_out_and_the_runtime_goes_on(target: Target) -> None:
    """The backend running the action is frozen mid-statement: the server's own statement_timeout
    cannot fire, so the client-side watchdog must end the action: QUERY_TIMEOUT, bounded."""
    profile = target.profile()
    freezer = Freezer()
    with Runtime() as runtime:
        assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]

        freezing = freezer.freeze_when_running(target, "fault_marker")
        state_at_answer: list[str | None] = []

        def act() -> Any:
            outcome = coded(lambda: runtime.run("query_rows", profile, {
                "query": "SELECT 'fault_marker' AS m, pg_sleep(30)", "timeout": 2}))
            state_at_answer.append(_process_state(freezer.pid) if freezer.pid else None)
            return outcome

        action, error = _frozen_run(act, freezing, freezer)
        assert state_at_answer == ["T"], "the backend was not frozen when the action answered"
        assert error is not None and error.code == "QUERY_TIMEOUT", error and error.payload
        assert action.elapsed is not None and action.elapsed >= 2
        # The same Runtime goes on, on another backend: the frozen one's connection was dropped.
        data = runtime.run("query_rows", profile, {"query": "SELECT pg_backend_pid() AS pid"}).data
        assert data["rows"][0]["pid"] != freezer.pid
    # Thawed, the abandoned backend finds its client gone and ends.
    deadline = time.monotonic() + 15
    while freezer.pid in target.backends() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert freezer.pid not in target.backends()


def test_a_frozen_backend_under_an_action_on_an_event_loop(target: Target) -> None:
    """As above, with the action waiting on an asyncio loop, as ``pgactions serve`` runs it
    (pgactions.db.cooperative): the watchdog still ends it with QUERY_TIMEOUT, and the loop is
    never held meanwhile — a ticker on the same loop keeps ticking through the freeze."""
    from pgactions.db.cooperative import available, drive

    if not available():
        pytest.skip("greenlet (the server extra) is not installed")
    profile = target.profile()
    freezer = Freezer()
    with Runtime() as runtime:
        # Warm: the loop uses an idle pooled connection (opening one would go to a thread).
        assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]

        freezing = freezer.freeze_when_running(target, "fault_marker")
        ticks: list[float] = []

        async def main() -> Any:
            async def tick() -> None:
                while True:
                    await asyncio.sleep(0.05)
                    ticks.append(time.monotonic())

            ticker = asyncio.ensure_future(tick())
            try:
                return await drive(lambda: coded(lambda: runtime.run("query_rows", profile, {
                    "query": "SELECT 'fault_marker' AS m, pg_sleep(30)", "timeout": 2})))
            finally:
                ticker.cancel()

        _, error = _frozen_run(lambda: asyncio.run(main()), freezing, freezer)
        assert error is not None and error.code == "QUERY_TIMEOUT", error and error.payload
        gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
        assert len(ticks) >= 20 and max(gaps) < 1.0  # ticking all along: the loop was never held
        data = runtime.run("query_rows", profile, {"query": "SELECT pg_backend_pid() AS pid"}).data
        assert data["rows"][0]["pid"] != freezer.pid


def test_a_backend_frozen_between_actions_fails_the_write_and_writes_nothing(target: Target) -> None:
    """The pooled connection's backend is frozen while idle; the next action (a write) is stuck on
    it: QUERY_TIMEOUT, and once thawed the server has committed nothing of it."""
    profile = target.profile(maxConnections=1)
    tag = "frozen-" + uuid.uuid4().hex[:8]
    freezer = Freezer()
    with Runtime() as runtime:
        # A plain read leaves no reset in flight: the next action's first words go to the frozen backend.
        assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]
        pid, = target.backends()
        try:
            freezer.freeze(pid)
            action = Bounded(lambda: coded(lambda: runtime.run(
                "insert_row", profile, {"table": "t", "columns": {"tag": tag}, "timeout": 2})))
            ended_in_time = action.wait(15)
        finally:
            freezer.thaw()
        _, error = action.result()
        assert ended_in_time, "the action did not end within 15 s of a frozen backend"
        assert error is not None and error.code == "QUERY_TIMEOUT", error and error.payload
        out = runtime.run("insert_row", profile, {"table": "t", "columns": {"tag": tag + "-after"}}).data
        assert out["row"]["tag"] == tag + "-after"
    deadline = time.monotonic() + 15
    while pid in target.backends() and time.monotonic() < deadline:
        time.sleep(0.1)
    with target.admin() as conn:
        tags = [r[0] for r in conn.execute("SELECT tag FROM t WHERE tag LIKE %s", [tag + "%"]).fetchall()]
    assert tags == [tag + "-after"]


# == the server stopped and started mid-series =====================================================

@dataclass
class Outcome:
    started: float
    ended: float
    action: str
    code: str | None  # None: it succeeded


def _series(runtime: Runtime, profile: dict[str, Any], worker: int, stop: threading.Event,
            outcomes: list[Outcome], lock: threading.Lock) -> None:
    """One worker's loop of mixed actions (reads, writes, session-changing SQL) until *stop*."""
    i = 0
    while not stop.is_set():
        i += 1
        token = f"w{worker}-{i}"
        kind = ("query_rows", "insert_row", "execute_query", "find_rows")[i % 4]
        inputs: dict[str, Any] = {
            "query_rows": {"query": "SELECT $1::text AS token", "parameters": [token]},
            "insert_row": {"table": "t", "columns": {"tag": token}},
            "execute_query": {"query": "SELECT set_config('application_name', 'series-x', false)"},
            "find_rows": {"table": "t", "select": ["id"], "limit": 1},
        }[kind]
        started = time.monotonic()
        code: str | None = None
        try:
            data = runtime.run(kind, profile, inputs).data
            if (kind == "query_rows" and data["rows"] != [{"token": token}]) or (
                    kind == "insert_row" and data["row"]["tag"] != token):
                code = "WRONG RESULT"  # not a catalogue code: fails the test below
        except ActionError as error:
            try:
                check_error(error)
                code = error.code
            except AssertionError as problem:
                code = f"BAD ERROR: {problem}"
        with lock:
            outcomes.append(Outcome(started, time.monotonic(), kind, code))
        time.sleep(0.005)


def _run_series(runtime: Runtime, profile: dict[str, Any], workers: int,
                during: Callable[[], list[tuple[float, float]]]) -> tuple[list[Outcome], list[tuple[float, float]]]:
    stop = threading.Event()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_series, args=(runtime, profile, w, stop, outcomes, lock))
               for w in range(workers)]
    for thread in threads:
        thread.start()
    try:
        outages = during()
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not any(t.is_alive() for t in threads), "a worker is stuck"
    return outcomes, outages


@pytest.mark.parametrize("cycles", [pytest.param(1, id="once"), pytest.param(5, marks=pytest.mark.slow, id="slow")])
def test_a_series_goes_on_across_a_server_restart(target: Target, cycles: int) -> None:
    """Workers keep running actions while the server is stopped and started again: during the
    outage only connection codes; every action begun once the server is back succeeds, on the
    same Runtime."""
    profile = target.profile(maxConnections=3)
    server = target.server

    def outages() -> list[tuple[float, float]]:
        spans = []
        time.sleep(1.0)
        for _ in range(cycles):
            down = time.monotonic()
            stop_server(server)
            time.sleep(1.5)
            start_server(server)
            spans.append((down, time.monotonic()))
            time.sleep(1.5)
        return spans

    with Runtime() as runtime:
        outcomes, spans = _run_series(runtime, profile, 3, outages)
        # Still the same Runtime: it runs actions, and its pool stayed within its size.
        assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]
        assert all(pool.size <= 3 for pool in runtime.pools._pools.values())
    failures = [o for o in outcomes if o.code is not None]
    assert failures, "no action noticed the outage"
    assert {o.code for o in failures} <= CONNECTION_CODES, sorted({o.code for o in failures})
    for outcome in failures:  # every failure overlapped an outage
        assert any(outcome.started <= up and outcome.ended >= down for down, up in spans), outcome
    # Every action begun while the server was up (before the first stop, or after a start and
    # before the next stop) succeeded.
    ups = [(float("-inf"), spans[0][0])] + [(up, nxt[0] if nxt else float("inf"))
                                            for (_, up), nxt in zip(spans, [*spans[1:], None])]
    while_up = [o for o in outcomes if any(start <= o.started and o.ended <= end for start, end in ups)]
    assert [o for o in while_up if o.code is not None] == [], "actions failed while the server was up"
    assert any(o.started >= spans[-1][1] for o in while_up), "no action ran after the restart"
    assert sum(o.code is None for o in outcomes) > 20


def test_the_service_goes_on_across_a_server_restart(target: Target, tmp_path: Path) -> None:
    """16 HTTP callers of ``pgactions serve`` (warm pools: their actions wait on the event loop)
    while the database is stopped and started: during the outage only connection codes with
    502/503 — never a 500 — and /healthz answers; every call begun once it is back succeeds."""
    import httpx

    from .serving import serve

    profile = target.profile()
    outcomes: list[tuple[float, float, int, str | None]] = []
    health: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    with serve(tmp_path / "state", "--no-auth") as served:
        def caller(worker: int) -> None:
            with httpx.Client(base_url=served.base_url, timeout=60) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    started = time.monotonic()
                    answer = client.post("/v1/actions/query_rows:run", json={
                        "connection": profile, "inputs": {"query": "SELECT $1::text AS tag", "parameters": [f"{worker}-{n}"]}})
                    body = answer.json()
                    code = None if answer.status_code == 200 and body["rows"] == [{"tag": f"{worker}-{n}"}] \
                        else str(body.get("error", {}).get("code", body))
                    with lock:
                        outcomes.append((started, time.monotonic(), answer.status_code, code))

        callers = [threading.Thread(target=caller, args=(w,)) for w in range(16)]
        for thread in callers:
            thread.start()
        try:
            time.sleep(1.5)
            down = time.monotonic()
            stop_server(target.server)
            for _ in range(5):
                health.append(served.client.get("/healthz", timeout=5).status_code)
                time.sleep(0.2)
            start_server(target.server)
            up = time.monotonic()
            time.sleep(2.0)
        finally:
            stop.set()
            for thread in callers:
                thread.join(90)
    assert not any(thread.is_alive() for thread in callers), "a caller is stuck"
    failures = [o for o in outcomes if o[3] is not None]
    assert failures, "no call noticed the outage"
    assert {(status, code) for _, _, status, code in failures} <= {
        (status, code) for status in (502, 503) for code in CONNECTION_CODES}, sorted({o[2:] for o in failures})
    assert all(started <= up and ended >= down for started, ended, _, _ in failures)
    after = [o for o in outcomes if o[0] >= up]
    assert after and all(o[3] is None for o in after), "calls failed once the server was back"
    assert sum(o[0] < down for o in outcomes) > 50 and health == [200] * 5


def test_first_action_after_a_restart_succeeds_with_every_pooled_session_touched(target: Target) -> None:
    """Every pooled connection ran session-changing SQL (its reset is sent, its answer read by the
    next user); the server restarts while they sit idle.  The next action must get a fresh
    connection, not an error: none of the stale ones may be handed out."""
    profile = target.profile(maxConnections=5)
    with Runtime() as runtime:
        barrier = threading.Barrier(5)

        def touch() -> None:
            barrier.wait()
            runtime.run("execute_query", profile, {"query": "SELECT set_config('application_name', 'x', false), "
                                                            "pg_sleep(0.3)"})

        threads = [threading.Thread(target=touch) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(pool.idle_count == 5 for pool in runtime.pools._pools.values())
        stop_server(target.server)
        start_server(target.server)
        _, error = coded(lambda: runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}))
        assert error is None, error.payload


# == a backend killed (the postmaster restarts every backend) =====================================

@pytest.mark.parametrize("cycles", [pytest.param(1, id="once"), pytest.param(3, marks=pytest.mark.slow, id="slow")])
def test_a_killed_backend_is_connection_lost_and_the_runtime_recovers(target: Target, cycles: int) -> None:
    """SIGKILL to the backend running the action: the postmaster ends every backend and replays
    its WAL.  The action is CONNECTION_LOST; during recovery only connection codes; then every
    action succeeds again on the same Runtime."""
    profile = target.profile(maxConnections=3)
    with Runtime() as runtime:
        for _ in range(cycles):
            _kill_one_backend(runtime, profile, target)


def _concurrently(workers: int, fn: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=fn, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)


def _kill_one_backend(runtime: Runtime, profile: dict[str, Any], target: Target) -> None:
    # Three pooled connections, idle: the crash restart ends their backends too.
    all_three = threading.Barrier(3)

    def warm(_worker: int) -> None:
        all_three.wait()
        runtime.run("query_rows", profile, {"query": "SELECT pg_sleep(0.2)"})

    _concurrently(3, warm)
    pooled = target.backends()
    assert len(pooled) == 3, pooled
    killed: list[int] = []

    def kill_it() -> None:
        pid = target.wait_for_backend("kill_marker")
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_it)
    killer.start()
    started = time.monotonic()
    try:
        _, error = coded(lambda: runtime.run("query_rows", profile, {
            "query": "SELECT 'kill_marker' AS m, pg_sleep(30)", "timeout": 20}))
    finally:
        killer.join()
    assert killed, "the backend was never seen running the statement"
    assert error is not None and error.code == "CONNECTION_LOST", error and error.payload
    assert time.monotonic() - started < 10
    # Until the postmaster has ended every backend and replayed its WAL, the Runtime keeps trying:
    # connection codes only (an action may still succeed before the other backends are ended).
    deadline = time.monotonic() + 60
    codes = []
    while not (all(_process_state(pid) is None for pid in pooled) and _accepts(target.server)):
        _, error = coded(lambda: runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}))
        if error is not None:
            codes.append(error.code)
        assert time.monotonic() < deadline, codes
        time.sleep(0.05)
    assert set(codes) <= CONNECTION_CODES, codes
    # Recovered: from now on every action succeeds, several at once (the stale pooled connections
    # are never handed out).
    errors: list[Any] = []

    def run_some(worker: int) -> None:
        for i in range(20):
            kind = ("query_rows", "insert_row", "execute_query")[i % 3]
            inputs = {"query_rows": {"query": "SELECT $1::int AS i", "parameters": [i]},
                      "insert_row": {"table": "t", "columns": {"tag": f"after-kill-{worker}-{i}"}},
                      "execute_query": {"query": "SELECT set_config('search_path', 'nowhere', false)"}}[kind]
            try:
                runtime.run(kind, profile, inputs)
            except ActionError as error:
                errors.append((kind, error.payload))

    _concurrently(3, run_some)
    assert errors == []


def _accepts(server: LocalServer) -> bool:
    try:
        with psycopg.connect(server.url(database="faults"), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False
