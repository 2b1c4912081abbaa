"""The 60 s timeout (server and client side) and the 10 MB output cap with bounded memory."""

from __future__ import annotations

import os
import signal
import threading
import time
import tracemalloc

import pytest

from pgactions import ActionError, Limits, Runtime


@pytest.mark.pooler_modes
def test_server_side_timeout_cancels_the_statement(runtime: Runtime, db) -> None:
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        runtime.run("execute_query", db.profile, {"query": "SELECT pg_sleep(10)", "timeout": 1})
    assert info.value.code == "QUERY_TIMEOUT"
    assert time.monotonic() - started < 5


def test_host_configured_maximum(db) -> None:
    with Runtime(Limits(default_timeout=2, max_timeout=2)) as rt:
        with pytest.raises(ActionError) as info:
            rt.run("query_rows", db.profile, {"query": "SELECT 1", "timeout": 3})
        assert info.value.code == "INVALID_INPUT"
        with pytest.raises(ActionError) as info:
            rt.run("query_rows", db.profile, {"query": "SELECT pg_sleep(4)"})  # default: 2 s
        assert info.value.code == "QUERY_TIMEOUT"


@pytest.mark.pooler_modes
def test_client_side_timeout_when_the_server_stops_answering(runtime: Runtime, db, local_server) -> None:
    """The backend is frozen (SIGSTOP): statement_timeout cannot fire, the watchdog must."""
    if os.geteuid() != 0 and os.environ.get("USER") != "postgres":
        pytest.skip("needs permission to signal the server's processes")
    pid_holder: dict[str, int] = {}

    def freeze_backend() -> None:
        for _ in range(100):
            rows = db.sql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT 42 AS frozen%' "
                          "AND pid <> pg_backend_pid()")
            if rows:
                pid_holder["pid"] = rows[0][0]
                os.kill(rows[0][0], signal.SIGSTOP)
                return
            time.sleep(0.05)

    freezer = threading.Thread(target=freeze_backend)
    freezer.start()
    started = time.monotonic()
    try:
        with pytest.raises(ActionError) as info:
            runtime.run("query_rows", db.profile, {"query": "SELECT 42 AS frozen, pg_sleep(0.5)", "timeout": 1})
    finally:
        freezer.join()
        if "pid" in pid_holder:
            os.kill(pid_holder["pid"], signal.SIGCONT)
    elapsed = time.monotonic() - started
    assert "pid" in pid_holder, "the backend was never seen running the query"
    assert info.value.code == "QUERY_TIMEOUT"
    assert elapsed < 8  # timeout 1 s + cancel grace + abandon grace
    # The abandoned connection was discarded: the next action works on a fresh one.
    assert runtime.run("query_rows", db.profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]


BIG_QUERY = "SELECT g AS id, repeat('x', 1000) AS payload FROM generate_series(1, $1::int) g"


@pytest.mark.pooler_modes
def test_result_too_large_stops_reading(db) -> None:
    with Runtime(Limits(max_result_bytes=100_000)) as rt:
        with pytest.raises(ActionError) as info:
            rt.run("query_rows", db.profile, {"query": BIG_QUERY, "parameters": [1000]})
        assert info.value.code == "RESULT_TOO_LARGE"
        assert any("LIMIT" in fix for fix in info.value.payload["fix"])
        ok = rt.run("query_rows", db.profile, {"query": BIG_QUERY + " LIMIT 50", "parameters": [1000]})
        assert ok.data["rowCount"] == 50 and len(ok.json) <= 100_000


def test_output_just_under_the_cap_passes(db) -> None:
    with Runtime() as rt:
        result = rt.run("query_rows", db.profile, {"query": BIG_QUERY, "parameters": [9000]})
    assert result.data["rowCount"] == 9000
    assert 9_000_000 < len(result.json) <= 10 * 1024 * 1024


def test_memory_stays_bounded_for_a_huge_result(runtime: Runtime, db) -> None:
    """A result of ~500 MB is cut off at the 10 MB cap with far less than that in memory."""
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(ActionError) as info:
            runtime.run("query_rows", db.profile, {"query": BIG_QUERY, "parameters": [500_000]})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "RESULT_TOO_LARGE"
    assert peak < 40 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"
    assert time.monotonic() - started < 30  # the rest of the query was cancelled, not read
    assert runtime.run("query_rows", db.profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]


def test_uncapped_stream_of_many_rows(db) -> None:
    with Runtime(Limits(max_result_bytes=10**9)) as rt:
        out = rt.run("query_rows", db.profile, {"query": "SELECT g FROM generate_series(1, 200000) g"}).data
    assert out["rowCount"] == 200_000 and out["rows"][-1] == {"g": 200_000}


@pytest.mark.pooler_modes
def test_public_api_fallback_streams_and_caps(db, monkeypatch) -> None:
    """Without the prepared-statement streaming (a psycopg whose internals moved), the public
    stream() path gives the same outputs and the same cap."""
    from pgactions.db import streaming as prepared_stream

    monkeypatch.setattr(prepared_stream, "SUPPORTED", False)
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    with Runtime(Limits(max_result_bytes=100_000)) as rt:
        assert rt.run("execute_query", db.profile, {
            "query": "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g"}).data == {
            "success": True, "rowCount": 3}
        assert rt.run("update_rows", db.profile, {"query": "UPDATE t SET v = 'x' WHERE id > $1",
                                                  "parameters": [1]}).data == {"rowCount": 2}
        assert rt.run("query_rows", db.profile, {"query": "SELECT * FROM t ORDER BY id"}).data == {
            "rows": [{"id": 1, "v": "v1"}, {"id": 2, "v": "x"}, {"id": 3, "v": "x"}], "rowCount": 3}
        with pytest.raises(ActionError) as info:
            rt.run("query_rows", db.profile, {"query": BIG_QUERY, "parameters": [1000]})
        assert info.value.code == "RESULT_TOO_LARGE"
