"""The notification trigger (LISTEN/NOTIFY) and its per-table helper.

Events from the helper carry rows in the JSON forms of query results; a row too big for a
notification comes as its key and the listener fetches it.  The listener survives a terminated
backend and a server restart: it reconnects, LISTENs again, reports the gap, and never leaves a
session behind (counted in pg_stat_activity by its application_name).  The restart runs on a
throwaway server of this module's own, so the suite's shared server is never restarted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from pgactions import ActionError, Runtime
from pgactions.devtools.local_server import LocalServer
from pgactions.triggers.notify import (
    KEY_ONLY_BYTES,
    install_notify_trigger,
    notify_trigger_names,
    open_notification,
    remove_notify_trigger,
)

from .conftest import APP_PASSWORD


def _collect(source: Any, want: int, timeout: float = 10) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    end = time.monotonic() + timeout
    while len(events) < want and time.monotonic() < end:
        events += source.poll(0.5).events
    return events


def _sessions(admin: psycopg.Connection[Any], app: str) -> int:
    return int(admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                             [app]).fetchone()[0])


def _wait_sessions(admin: psycopg.Connection[Any], app: str, count: int, timeout: float = 10) -> int:
    end = time.monotonic() + timeout
    while (found := _sessions(admin, app)) != count and time.monotonic() < end:
        time.sleep(0.05)
    return found


def test_plain_notifications(db) -> None:
    channel = "Orders changed!"  # any name: quoted for LISTEN
    with open_notification(db.profile, {"channel": channel}, None) as source:
        assert source.poll(0).events == []  # listening now
        db.sql("SELECT pg_notify(%s, 'hello'), pg_notify(%s, ''), pg_notify('other', 'x')", [channel, channel])
        events = _collect(source, 2)
        assert events == [{"op": "notification", "channel": channel, "payload": "hello"},
                          {"op": "notification", "channel": channel, "payload": ""}]
        db.sql("SELECT pg_notify(%s, '{\"not\": \"ours\"}')", [channel])
        assert _collect(source, 1)[0]["payload"] == '{"not": "ours"}'  # JSON of another shape stays text
        checkpoint = source.poll(0).checkpoint
        assert checkpoint["trigger"] == "notification" and checkpoint["listening"].endswith("Z")


def test_bad_inputs(db) -> None:
    for inputs in ({}, {"channel": ""}, {"channel": "x", "table": "t"}, {"channel": "a" * 64}):
        with pytest.raises(ActionError) as caught:
            open_notification(db.profile, inputs, None)
        assert caught.value.code == "INVALID_INPUT"
    with pytest.raises(ActionError):
        open_notification(db.profile, {"channel": "x"}, {"trigger": "notification", "channel": "y"})


TYPED = """
CREATE TABLE typed (id bigint PRIMARY KEY, amount numeric(30,10), at timestamptz, day date, blob bytea,
                    tags text[], doc jsonb, ratio double precision, big bigint, note text)
"""


def test_table_helper_events_have_the_json_forms_of_query_results(runtime: Runtime, db) -> None:
    db.sql(TYPED)
    channel = "typed_changes"
    installed = install_notify_trigger(runtime, db.profile, "typed", channel)
    assert installed["table"] == f"{db.schema}.typed" and installed["key"] == ["id"]
    with open_notification(db.profile, {"channel": channel}, None, runtime=runtime) as source:
        source.poll(0)
        db.sql("INSERT INTO typed VALUES (1, 12345678901234567890.0123456789, '2026-01-15 12:30:00+02', "
               "'2026-01-15', '\\x00ff10', '{a,b}', '{\"k\": [1, 2.50]}', 1.5, 9007199254740993, 'x')")
        db.sql("UPDATE typed SET note = 'y' WHERE id = 1")
        expected = runtime.run("find_rows", db.profile, {"table": "typed"}).data["rows"][0]
        db.sql("DELETE FROM typed WHERE id = 1")
        db.sql("TRUNCATE typed")
        insert, update, delete, truncate = _collect(source, 4)
    table = f"{db.schema}.typed"
    assert insert["op"] == "insert" and insert["table"] == table and insert["channel"] == channel
    assert insert["key"] == {"id": 1}
    assert insert["after"] == {**expected, "note": "x"}
    assert insert["after"]["amount"] == "12345678901234567890.0123456789"  # numeric as text
    assert insert["after"]["at"] == "2026-01-15T10:30:00Z" and insert["after"]["big"] == "9007199254740993"
    assert update["op"] == "update" and update["after"] == expected
    assert delete["op"] == "delete" and delete["before"] == expected and "after" not in delete
    assert truncate == {"op": "truncate", "table": table, "channel": channel}
    remove_notify_trigger(runtime, db.profile, "typed", channel)
    function, trigger = notify_trigger_names(db.schema, "typed", channel)
    assert db.sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE %s", [trigger + "%"]) == [(0,)]
    assert db.sql("SELECT count(*) FROM pg_proc WHERE proname = %s", [function]) == [(0,)]
    remove_notify_trigger(runtime, db.profile, "typed", channel)  # nothing there: nothing happens


def test_a_row_too_big_for_a_notification_is_sent_by_key_and_fetched(db) -> None:
    db.sql("CREATE TABLE docs (region text, n int, body text, PRIMARY KEY (region, n))")
    channel = "docs_changes"
    with psycopg.connect(db.server.url(), autocommit=True) as conn:  # the helper on a plain connection
        conn.execute(f'SET search_path = "{db.schema}"')
        install_notify_trigger(conn, None, "docs", channel)
    big = "é" * KEY_ONLY_BYTES  # 15,800 bytes in UTF-8: far over the 8,000-byte limit
    with open_notification(db.profile, {"channel": channel}, None) as source:
        source.poll(0)
        db.sql("INSERT INTO docs VALUES ('eu', 1, 'small')")
        db.sql("INSERT INTO docs VALUES ('eu', 2, %s)", [big])
        db.sql("DELETE FROM docs WHERE n = 2")
        small, large, deleted = _collect(source, 3)
        assert small["after"] == {"region": "eu", "n": 1, "body": "small"}
        assert large["op"] == "insert" and large["key"] == {"region": "eu", "n": 2}
        assert large["after"] is None or large["after"]["body"] == big  # fetched by key (gone if deleted first)
        assert deleted == {"op": "delete", "table": f"{db.schema}.docs", "channel": channel,
                           "key": {"region": "eu", "n": 2}, "rowOmitted": True}
        db.sql("INSERT INTO docs VALUES ('eu', 3, %s)", [big])
        fetched, = _collect(source, 1)
        assert fetched["after"] == {"region": "eu", "n": 3, "body": big}
        payloads = db.sql("SELECT 1")  # the writer's transaction was never refused
        assert payloads == [(1,)]


def test_a_terminated_backend_reconnects_reports_the_gap_and_leaks_nothing(pg, db) -> None:
    app = "listen-" + uuid.uuid4().hex[:8]
    channel = "kill_me"
    with pg.admin() as admin:
        source = open_notification(db.profile, {"channel": channel}, None, application_name=app)
        try:
            source.poll(0)
            first = source.backend_pid
            assert _sessions(admin, app) == 1
            for round_ in range(3):
                admin.execute("SELECT pg_terminate_backend(%s)", [source.backend_pid])
                db.sql("SELECT pg_notify(%s, 'lost')", [channel])  # nobody listens: lost (documented)
                gap = source.poll(5).events
                while not gap:
                    gap = source.poll(1).events
                assert gap[0]["op"] == "gap" and gap[0]["channel"] == channel
                assert gap[0]["since"] <= gap[0]["until"] and "reason" in gap[0]
                assert all(e["payload"] != "lost" for e in gap[1:] if e["op"] == "notification")
                db.sql("SELECT pg_notify(%s, %s)", [channel, f"after {round_}"])
                assert [e["payload"] for e in _collect(source, 1)] == [f"after {round_}"]
                assert source.backend_pid != first
                assert _wait_sessions(admin, app, 1) == 1
        finally:
            source.close()
        assert _wait_sessions(admin, app, 0) == 0


def test_a_new_source_from_a_checkpoint_reports_the_time_it_was_not_listening(db) -> None:
    with open_notification(db.profile, {"channel": "cp"}, None) as source:
        checkpoint = source.poll(0).checkpoint
    time.sleep(0.05)
    with open_notification(db.profile, {"channel": "cp"}, checkpoint) as again:
        gap, = again.poll(0).events
    assert gap["op"] == "gap" and gap["since"] == checkpoint["listening"] and gap["until"] > gap["since"]


# == a server restart, on a server of this module's own ==============================================

@pytest.fixture(scope="module")
def own_server(pg: Any) -> Iterator[LocalServer]:
    if pg.local is None:
        pytest.skip("needs local PostgreSQL binaries (PGACTIONS_TEST_DSN points elsewhere)")
    server = LocalServer(ssl=False, max_connections=20, bindir=pg.local._bindir).start()
    try:
        server.psql(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
        server.psql("CREATE DATABASE listen OWNER app")
        yield server
    finally:
        server.stop()


def _pg_ctl(server: LocalServer, *args: str) -> None:
    server._run([str(server._bindir / "pg_ctl"), "-D", str(server.datadir), *args])


def test_a_server_restart_and_an_outage_are_gaps_then_listening_resumes(own_server: LocalServer) -> None:
    app = "listen-restart"
    url = f"postgresql://app:{quote(APP_PASSWORD, safe='')}@127.0.0.1:{own_server.port}/listen"
    profile = {"url": url, "sslMode": "disable", "connectTimeout": 2}

    def admin() -> psycopg.Connection[Any]:
        return psycopg.connect(own_server.url(database="listen"), autocommit=True)

    source = open_notification(profile, {"channel": "c"}, None, application_name=app, max_backoff=0.5)
    try:
        source.poll(0)
        own_server.restart()
        events = _collect(source, 1, timeout=20)
        assert events[0]["op"] == "gap" and "reason" in events[0]
        with admin() as conn:
            conn.execute("SELECT pg_notify('c', 'back')")
            assert [e["payload"] for e in _collect(source, 1)] == ["back"]
            assert _wait_sessions(conn, app, 1) == 1
        # A longer outage: polls while the server is down give nothing and raise nothing.
        _pg_ctl(own_server, "-m", "fast", "-w", "stop")
        try:
            for _ in range(4):
                assert source.poll(0.3).events == []
            assert not source.connected
        finally:
            _pg_ctl(own_server, "-w", "-l", str(own_server.root / "server.log"), "start")
        events = _collect(source, 1, timeout=20)
        gaps = [e for e in events if e["op"] == "gap"]
        assert len(gaps) == 1
        with admin() as conn:
            assert _wait_sessions(conn, app, 1) == 1
            conn.execute("SELECT pg_notify('c', 'again')")
            assert [e["payload"] for e in _collect(source, 1)] == ["again"]
    finally:
        source.close()
    with admin() as conn:
        assert _wait_sessions(conn, app, 0) == 0
