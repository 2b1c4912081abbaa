"""Soak: 16 threads share one Runtime and one profile capped at 4 connections, each running a
mixed series of actions.

Every result must belong to the thread that asked (each query echoes a token unique to its
thread and action; rows are tagged with their thread), every failure must be the expected one
(unique violation, division by zero, a missing table, a failed transaction step that takes the
step before it down with it), and no session state may cross from one action to the next: each
read also returns the session's search_path, application_name, statement_timeout and read-only
default, which must be the profile's and this action's own whatever another thread's SQL just
set (``SET search_path TO nowhere``, ``set_config('application_name', …)``, ``SET
statement_timeout``, ``SET default_transaction_read_only``).  pg_stat_activity never shows more
backends for the profile than maxConnections, and none once the Runtime is closed.

The default run (a few hundred actions per thread) takes well under 20 s; ``[slow]`` runs
several thousand per thread.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgactions import ActionError, Runtime
from pgactions.db.connect import search_path

from .test_fuzz import check_error

THREADS = 16
MAX_CONNECTIONS = 4

LEAKS = [
    "SET search_path TO nowhere",
    "SELECT set_config('application_name', '{leak}', false)",
    "SET statement_timeout = 7000",  # 7 s: no thread uses it, so a leak would show
    "SET default_transaction_read_only = off",
    "SELECT set_config('search_path', 'pg_catalog', false), set_config('timezone', 'Asia/Tokyo', false)",
]
READ = ("SELECT $1::text AS token, $2::int AS thread, current_setting('search_path') AS sp, "
        "current_setting('application_name') AS app, current_setting('statement_timeout') AS st, "
        "current_setting('default_transaction_read_only') AS ro, current_setting('TimeZone') AS tz")


@dataclass
class Tally:
    kinds: Counter[str] = field(default_factory=Counter)
    inserted: dict[str, int] = field(default_factory=dict)  # token → id
    rolled_back: list[str] = field(default_factory=list)  # tokens a failed transaction must not leave
    problems: list[str] = field(default_factory=list)


def _timeout_text(seconds: int) -> str:
    """statement_timeout as PostgreSQL shows it."""
    return f"{seconds // 60}min" if seconds % 60 == 0 else f"{seconds}s"


def _worker(runtime: Runtime, profile: dict[str, Any], tid: int, count: int, seed: int, tally: Tally,
            expected_sp: str, start: threading.Barrier) -> None:
    rng = random.Random(seed * 1000 + tid)
    flow = f"t{tid}"
    app = f"{profile['applicationName']} flow={flow}"
    timeout = 10 + tid  # this thread's own statement timeout: another's must never show
    leak = f"leak-{profile['applicationName']}"

    def problem(text: str) -> None:
        tally.problems.append(f"thread {tid}: {text}")

    def run(action: str, inputs: dict[str, Any]) -> tuple[Any, ActionError | None]:
        try:
            return runtime.run(action, profile, {**inputs, "timeout": timeout}, flow=flow).data, None
        except ActionError as error:
            try:
                check_error(error)
            except AssertionError as bad:
                problem(f"{action}: {bad}")
            return None, error

    start.wait()
    for i in range(count):
        token = f"{tid}:{i}:{uuid.uuid4().hex[:8]}"
        roll = rng.random()
        if roll < 0.35:
            kind = "read"
            data, error = run("query_rows", {"query": READ, "parameters": [token, tid]})
            want = {"token": token, "thread": tid, "sp": expected_sp, "app": app, "st": _timeout_text(timeout),
                    "ro": "on", "tz": "UTC"}
            if error is not None or data["rows"] != [want]:
                problem(f"read {token}: {error.payload if error else data['rows']} != {want}")
        elif roll < 0.6:
            kind = "insert"
            data, error = run("insert_row", {"table": "soak", "columns": {"thread": tid, "token": token}})
            if error is not None or data["row"]["token"] != token or data["row"]["thread"] != tid:
                problem(f"insert {token}: {error.payload if error else data}")
            else:
                tally.inserted[token] = data["insertedId"]
        elif roll < 0.75 and tally.inserted:
            kind = "get"
            mine = rng.choice(list(tally.inserted))
            data, error = run("get_row", {"table": "soak", "key": {"id": tally.inserted[mine]}})
            if error is not None or data["row"] != {"id": tally.inserted[mine], "thread": tid, "token": mine}:
                problem(f"get {mine}: {error.payload if error else data}")
        elif roll < 0.85:
            kind, expected, action, inputs = rng.choice([
                ("fail-unique", "UNIQUE_VIOLATION", "insert_row",
                 {"table": "soak", "columns": {"thread": tid, "token": next(iter(tally.inserted), "none")}}),
                ("fail-zero", "INVALID_VALUE", "query_rows",
                 {"query": "SELECT 1 / ($1::int - $1::int) AS x", "parameters": [tid]}),
                ("fail-table", "UNDEFINED_TABLE", "query_rows", {"query": "SELECT * FROM soak_nowhere"}),
            ])
            if kind == "fail-unique" and not tally.inserted:
                continue
            data, error = run(action, inputs)
            if error is None or error.code != expected:
                problem(f"{kind}: expected {expected}, got {error.payload if error else data}")
        elif roll < 0.95:
            kind = "leak"
            query = rng.choice(LEAKS).replace("{leak}", leak)
            data, error = run("execute_query", {"query": query})
            if error is not None:
                problem(f"leak {query!r}: {error.payload}")
        else:
            kind = "transaction"
            dup = next(iter(tally.inserted), None)
            fails = dup is not None and rng.random() < 0.5
            steps = [{"id": "first", "action": "insert_row",
                      "inputs": {"table": "soak", "columns": {"thread": tid, "token": token}}},
                     {"id": "echo", "action": "query_rows",
                      "inputs": {"query": "SELECT $1::bigint AS id, $2::text AS token",
                                 "parameters": ["{{ steps.first.insertedId }}", token]}}]
            if fails:
                steps.append({"action": "insert_row",
                              "inputs": {"table": "soak", "columns": {"thread": tid, "token": dup}}})
            data, error = run("run_transaction", {"steps": steps})
            if fails:
                if error is None or error.code != "UNIQUE_VIOLATION":
                    problem(f"transaction {token}: expected UNIQUE_VIOLATION, got {error.payload if error else data}")
                tally.rolled_back.append(token)
            elif error is not None:
                problem(f"transaction {token}: {error.payload}")
            else:
                first, echo = data["steps"][0]["output"], data["steps"][1]["output"]
                if first["row"]["token"] != token or echo["rows"] != [{"id": first["insertedId"], "token": token}]:
                    problem(f"transaction {token}: {data}")
                tally.inserted[token] = first["insertedId"]
        tally.kinds[kind] += 1


def _backends(db: Any, app: str) -> int:
    rows = db.sql("SELECT count(*) FROM pg_stat_activity WHERE (application_name LIKE %s OR application_name = %s) "
                  "AND pid <> pg_backend_pid()", [app + "%", f"leak-{app}"])
    return int(rows[0][0])


def soak(db: Any, per_thread: int, seed: int) -> Counter[str]:
    app = "soak-" + uuid.uuid4().hex[:8]
    print(f"soak: {THREADS} threads x {per_thread} actions, seed {seed}")  # shown when the test fails
    profile = {**db.profile, "maxConnections": MAX_CONNECTIONS, "applicationName": app}
    db.sql("CREATE TABLE soak (id bigserial PRIMARY KEY, thread int NOT NULL, token text UNIQUE NOT NULL)")
    tallies = [Tally() for _ in range(THREADS)]
    most = 0
    done = threading.Event()

    def watch() -> None:  # how many server sessions the profile holds, sampled all along
        nonlocal most
        while not done.wait(0.05):
            most = max(most, _backends(db, app))

    with Runtime() as runtime:
        start = threading.Barrier(THREADS)
        threads = [threading.Thread(target=_worker, args=(runtime, profile, tid, per_thread, seed, tallies[tid],
                                                          search_path(db.schema), start))
                   for tid in range(THREADS)]
        watcher = threading.Thread(target=watch)
        watcher.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        done.set()
        watcher.join()
        assert not any(t.is_alive() for t in threads), "a worker is stuck"
        problems = [p for tally in tallies for p in tally.problems]
        assert problems == [], f"{len(problems)} problems, first ones: {problems[:5]}"
        at_end = _backends(db, app)
        assert all(pool.size <= MAX_CONNECTIONS for pool in runtime.pools._pools.values())
    assert most <= MAX_CONNECTIONS and at_end <= MAX_CONNECTIONS, (most, at_end)
    assert most >= 2, "the threads never ran concurrently"
    deadline = time.monotonic() + 10
    while _backends(db, app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _backends(db, app) == 0, "server sessions left after runtime.close()"
    # The table holds exactly the rows each thread saw inserted, each under its own thread.
    stored = {token: (thread, id_) for id_, thread, token in db.sql("SELECT id, thread, token FROM soak")}
    expected = {token: (tid, id_) for tid, tally in enumerate(tallies) for token, id_ in tally.inserted.items()}
    assert stored == expected
    for tally in tallies:
        assert not set(tally.rolled_back) & set(stored), "a failed transaction left its first step's row"
    kinds: Counter[str] = Counter()
    for tally in tallies:
        kinds.update(tally.kinds)
    return kinds


@pytest.mark.parametrize("per_thread,seed", [pytest.param(300, 1, id="default"), pytest.param(3000, None, marks=pytest.mark.slow, id="slow")])
def test_threads_sharing_a_runtime_never_see_each_others_results(db: Any, per_thread: int, seed: int | None) -> None:
    kinds = soak(db, per_thread, seed if seed is not None else random.randrange(10**6))
    for kind in ("read", "insert", "get", "fail-unique", "fail-zero", "fail-table", "leak", "transaction"):
        assert kinds[kind] > 0, kinds
