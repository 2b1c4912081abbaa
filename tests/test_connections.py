"""Profiles, pooling and secrets."""

from __future__ import annotations

import logging

import pytest

from pgactions import ActionError, ConnectionProfile, Runtime, load_profile, test_connection

from .conftest import APP_PASSWORD


def test_url_and_fields() -> None:
    p = load_profile("postgresql://u%40x:p%2Fw@db.example.com:6543/app?sslmode=verify-full&application_name=flows")
    assert (p.host, p.port, p.database, p.username, p.password, p.sslMode, p.applicationName) == (
        "db.example.com", 6543, "app", "u@x", "p/w", "verify-full", "flows")
    q = load_profile({"url": "postgresql://u:pw@h/app", "port": 7000, "schema": "sales"})
    assert (q.host, q.port, q.schema, q.password) == ("h", 7000, "sales", "pw")


def test_invalid_profile_names_the_field() -> None:
    with pytest.raises(ActionError) as info:
        load_profile({"host": "h", "port": "abc", "sslMode": "sometimes", "password": 12345})
    paths = {e["path"] for e in info.value.payload["errors"]}
    assert paths == {"port", "sslMode", "password"}
    assert "12345" not in str(info.value.payload)


def test_password_never_in_repr() -> None:
    p = ConnectionProfile(host="h", password="hunter2-secret")
    assert "hunter2-secret" not in repr(p) and "hunter2-secret" not in str(p) and "***" in repr(p)


def test_pool_reuses_one_connection(runtime: Runtime, db) -> None:
    pids = {runtime.run("query_rows", db.profile, {"query": "SELECT pg_backend_pid() AS pid"}).data["rows"][0]["pid"]
            for _ in range(10)}
    assert len(pids) == 1


def test_pool_survives_failures_without_leaking(runtime: Runtime, db, pg) -> None:
    for i in range(60):
        with pytest.raises(ActionError):
            runtime.run("query_rows", db.profile, {"query": "SELECT 1/0" if i % 2 else "SELECT * FROM nope"})
    import psycopg

    with psycopg.connect(pg.admin_url) as admin:
        (count,), = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                                  "AND application_name = 'pgactions'").fetchall()
    assert count <= 5  # the pool's size, not one per failed action


def test_application_name_and_search_path(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE only_here (x int)")
    profile = {**db.profile, "applicationName": "flow-42"}
    row = runtime.run("query_rows", profile, {
        "query": "SELECT current_setting('application_name') AS app, count(*) AS n FROM only_here"}).data["rows"][0]
    assert row == {"app": "flow-42", "n": 0}


def test_secrets_absent_from_logs_and_errors(runtime: Runtime, pg, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="pgactions")
    wrong = "Wr0ng-" + APP_PASSWORD
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", pg.url(password=wrong), {"query": "SELECT 1"})
    assert wrong not in str(info.value.payload) and wrong not in repr(info.value)
    # The server echoing the password back (here: in the SQL text of an error) is scrubbed too.
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", pg.url(), {"query": f"SELECT '{APP_PASSWORD}'::int"})
    assert APP_PASSWORD not in str(info.value.payload)
    assert wrong not in caplog.text and APP_PASSWORD not in caplog.text


def test_test_connection_report(pg, ssl_server) -> None:
    report = test_connection({"url": pg.url(), "sslMode": "require"})
    assert report["ok"] is True
    assert report["ssl"]["inUse"] is True and report["ssl"]["protocol"].startswith("TLS")
    assert report["superuser"] is False and report["standby"] is False
    assert any("not verified" in w for w in report["warnings"])
    plain = test_connection({"url": pg.url(), "sslMode": "disable"})
    assert plain["ssl"]["inUse"] is False and any("SSL is not in use" in w for w in plain["warnings"])
    admin = test_connection({"url": pg.admin_url, "sslMode": "disable"})
    assert any("superuser" in w for w in admin["warnings"])


def test_prepared_statements_survive_a_table_change(runtime: Runtime, db) -> None:
    """After repeated runs a statement is prepared on the server; another session then alters
    the table.  The next run must see the new column, not fail on a stale cached plan."""
    db.sql("CREATE TABLE items (id int PRIMARY KEY, name text)")
    db.sql("INSERT INTO items VALUES (1, 'one')")
    query = {"query": "SELECT * FROM items WHERE id = $1", "parameters": [1]}
    for _ in range(8):
        assert runtime.run("query_rows", db.profile, query).data["rows"] == [{"id": 1, "name": "one"}]
    db.sql("ALTER TABLE items ADD COLUMN price numeric DEFAULT 2.5")
    assert runtime.run("query_rows", db.profile, query).data["rows"] == [{"id": 1, "name": "one", "price": "2.5"}]


def test_pool_replaces_a_connection_the_server_closed(runtime: Runtime, db, pg) -> None:
    """A pooled connection terminated by the server while idle is replaced, not reported."""
    import psycopg

    first = runtime.run("query_rows", db.profile, {"query": "SELECT pg_backend_pid() AS pid"}).data["rows"][0]["pid"]
    with psycopg.connect(pg.admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [first])
    import time

    time.sleep(0.2)
    second = runtime.run("query_rows", db.profile, {"query": "SELECT pg_backend_pid() AS pid"}).data["rows"][0]["pid"]
    assert second != first


def test_pool_caps_connections_and_waits(pg) -> None:
    import psycopg

    from pgactions.pool import ConnectionPool, PoolTimeout

    pool = ConnectionPool(lambda: psycopg.connect(pg.url(), autocommit=True), max_size=1, wait_timeout=0.3)
    try:
        conn = pool.get()
        with pytest.raises(PoolTimeout):
            pool.get()
        pool.put(conn)
        assert pool.get() is conn  # the warm one comes back
        pool.put(conn)
        assert pool.size == 1
    finally:
        pool.close()
    assert conn.closed


def test_pool_discards_a_connection_left_in_a_transaction(pg) -> None:
    import psycopg

    from pgactions.pool import ConnectionPool

    pool = ConnectionPool(lambda: psycopg.connect(pg.url(), autocommit=True), max_size=2, wait_timeout=1)
    try:
        conn = pool.get()
        conn.execute("BEGIN")
        pool.put(conn)
        assert conn.closed and pool.size == 0
        fresh = pool.get()
        assert fresh is not conn
        pool.put(fresh)
    finally:
        pool.close()


def test_exhausted_pool_is_too_many_connections(db) -> None:
    import threading

    from pgactions import Runtime as Rt

    profile = {**db.profile, "maxConnections": 1, "connectTimeout": 1}
    with Rt() as rt:
        rt.pools.pool(rt_profile := __import__("pgactions").load_profile(profile)).wait_timeout = 0.3
        busy = threading.Thread(target=lambda: rt.run("query_rows", rt_profile, {"query": "SELECT pg_sleep(1.5)"}))
        busy.start()
        import time

        time.sleep(0.3)
        try:
            with pytest.raises(ActionError) as info:
                rt.run("query_rows", rt_profile, {"query": "SELECT 1"})
        finally:
            busy.join()
        assert info.value.code == "TOO_MANY_CONNECTIONS"
        assert rt.run("query_rows", rt_profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]


def test_pool_survives_a_server_restart(runtime: Runtime, db, local_server) -> None:
    before = runtime.run("query_rows", db.profile, {"query": "SELECT pg_postmaster_start_time() AS t"}).data
    local_server.restart()
    after = runtime.run("query_rows", db.profile, {"query": "SELECT pg_postmaster_start_time() AS t"}).data
    assert after["rows"][0]["t"] != before["rows"][0]["t"]


def test_pool_reuses_an_ssl_connection(runtime: Runtime, db, ssl_server) -> None:
    profile = {**db.profile, "sslMode": "require"}
    rows = [runtime.run("query_rows", profile, {
        "query": "SELECT pg_backend_pid() AS pid, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}).data["rows"][0]
        for _ in range(10)]
    assert {r["pid"] for r in rows} == {rows[0]["pid"]} and rows[0]["ssl"] is True


def test_concurrent_actions_share_a_capped_pool(runtime: Runtime, db, pg) -> None:
    from concurrent.futures import ThreadPoolExecutor

    profile = {**db.profile, "maxConnections": 3}

    def one(i: int) -> int:
        out = runtime.run("query_rows", profile, {"query": "SELECT $1::int * 2 AS v, pg_backend_pid() AS pid",
                                                  "parameters": [i]}).data["rows"][0]
        assert out["v"] == i * 2
        return out["pid"]

    with ThreadPoolExecutor(max_workers=8) as executor:
        pids = set(executor.map(one, range(400)))
    assert 1 <= len(pids) <= 3


def test_a_failed_statement_keeps_its_connection(runtime: Runtime, db) -> None:
    """A server error leaves the connection idle and clean: the next action reuses it."""
    pid = runtime.run("query_rows", db.profile, {"query": "SELECT pg_backend_pid() AS p"}).data["rows"][0]["p"]
    for query in ("SELECT 1/0", "SELECT * FROM nope", "SELECT g/(g-3) FROM generate_series(1, 5000) g"):
        with pytest.raises(ActionError):
            runtime.run("query_rows", db.profile, {"query": query})
        assert runtime.run("query_rows", db.profile, {"query": "SELECT pg_backend_pid() AS p"}).data["rows"][0]["p"] == pid
