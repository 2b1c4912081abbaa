"""Profiles, pooling and secrets."""

from __future__ import annotations

import logging

import pytest

from pgactions import ActionError, ConnectionProfile, Runtime, load_profile

from .conftest import APP_PASSWORD, TestServer


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

    from pgactions.db.pool import ConnectionPool, PoolTimeout

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

    from pgactions.db.pool import ConnectionPool

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

    profile = {**db.profile, "maxConnections": 1, "connectTimeout": 2}
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


# -- profiles --------------------------------------------------------------------------------


@pytest.fixture
def fresh_profiles():
    from pgactions.connection.profiles import forget_profiles

    forget_profiles()
    yield forget_profiles
    forget_profiles()


def test_environment_variables_are_defaults(monkeypatch, fresh_profiles) -> None:
    monkeypatch.setenv("PGHOST", "env-host")
    monkeypatch.setenv("PGPORT", "6000")
    monkeypatch.setenv("PGUSER", "env-user")
    monkeypatch.setenv("PGPASSWORD", "env-secret-pw")
    monkeypatch.setenv("PGSSLMODE", "require")
    p = load_profile({"database": "app"})
    assert (p.host, p.port, p.username, p.password, p.sslMode, p.database) == (
        "env-host", 6000, "env-user", "env-secret-pw", "require", "app")
    q = load_profile({"url": "postgresql://u@url-host/db", "port": 7000})  # fields, then the URL, win
    assert (q.host, q.port, q.username) == ("url-host", 7000, "u")
    monkeypatch.setenv("PGPORT", "not-a-port")
    fresh_profiles()  # profiles already seen keep the defaults they were parsed with
    with pytest.raises(ActionError) as info:
        load_profile({"database": "app"})
    assert [e["path"] for e in info.value.payload["errors"]] == ["PGPORT"]
    monkeypatch.setenv("PGACTIONS_IGNORE_PG_ENV", "1")  # a multi-tenant host turns them off
    fresh_profiles()
    assert load_profile({"database": "app"}).host == "localhost"


def test_url_query_options() -> None:
    p = load_profile("postgresql://u:pw@h/db?sslmode=verify-ca&sslrootcert=/etc/ca.pem&sslcert=/c.crt"
                     "&sslkey=/c.key&connect_timeout=4&keepalives_idle=30&target_session_attrs=read-write"
                     "&pgbouncer=true")
    assert (p.sslMode, p.sslRootCert, p.sslCert, p.sslKey, p.connectTimeout, p.pgbouncer) == (
        "verify-ca", "/etc/ca.pem", "/c.crt", "/c.key", 4.0, True)
    assert dict(p.extraOptions) == {"keepalives_idle": "30", "target_session_attrs": "read-write"}
    kwargs = p.connect_kwargs()
    assert kwargs["keepalives_idle"] == "30" and kwargs["sslkey"] == "/c.key"


def test_extra_options_are_checked_and_named() -> None:
    with pytest.raises(ActionError) as info:
        load_profile({"host": "h", "extraOptions": {"keepalives": True, "password": "x1x2x3x4", "colour": "red"},
                      "maxConnections": 0, "idleTimeout": "soon", "sslKey": 42})
    errors = {e["path"]: e["message"] for e in info.value.payload["errors"]}
    assert set(errors) == {"extraOptions/password", "extraOptions/colour", "maxConnections", "idleTimeout", "sslKey"}
    assert "password field" in errors["extraOptions/password"]
    assert "not a libpq connection option" in errors["extraOptions/colour"]
    assert "42" not in errors["sslKey"] and "x1x2x3x4" not in str(info.value.payload)
    assert load_profile({"extraOptions": {"keepalives": True}}).connect_kwargs()["keepalives"] == "1"


def test_secrets_never_in_repr() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
    p = load_profile({"password": "pw-hunter2", "sslKey": key, "sslPassword": "phrase-9876",
                      "extraOptions": {"oauth_client_secret": "oauth-s3cret"}})
    text = repr(p) + str(p)
    for secret in ("pw-hunter2", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", "phrase-9876", "oauth-s3cret"):
        assert secret not in text
        assert secret in " ".join(p.secrets())


def test_connection_form_lists_every_field_once() -> None:
    import yaml

    from pgactions.spec.manifests import load_schema

    form = yaml.safe_load((__import__("pathlib").Path(__file__).parents[1] / "connections" / "postgresql.yaml").read_text())
    listed = [f for group in form["form"] for f in group["fields"]] + [f for alt in form["alternatives"] for f in alt["fields"]]
    assert sorted(listed) == sorted(load_schema("connection.schema.json")["properties"])
    secret = {k for k, v in load_schema("connection.schema.json")["properties"].items() if v.get("x-secret")}
    assert set(form["secrets"]) == secret


def test_statement_timeout_of_the_profile(runtime: Runtime, db) -> None:
    profile = {**db.profile, "statementTimeout": 0.5}
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", profile, {"query": "SELECT pg_sleep(3)"})
    assert info.value.code == "QUERY_TIMEOUT"
    # The action's own timeout input wins over the profile's.
    out = runtime.run("query_rows", profile, {"query": "SELECT pg_sleep(0.8), 1 AS ok", "timeout": 5}).data
    assert out["rows"][0]["ok"] == 1
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", {**db.profile, "statementTimeout": 600}, {"query": "SELECT 1"})
    assert info.value.payload["field"] == "connection.statementTimeout"


# -- pooling ---------------------------------------------------------------------------------


def _backends(pg, application_name_like: str = "pgactions%") -> list[tuple]:
    import psycopg

    with psycopg.connect(pg.admin_url, autocommit=True) as admin:
        return admin.execute("SELECT pid, application_name, state FROM pg_stat_activity "
                             "WHERE usename = 'app' AND application_name LIKE %s", [application_name_like]).fetchall()


def test_application_name_carries_flow_and_step(runtime: Runtime, db, pg) -> None:
    profile = {**db.profile, "applicationName": "acme-flows"}
    query = {"query": "SELECT current_setting('application_name') AS app"}
    tagged = runtime.run("query_rows", profile, query, flow="orders-sync", step="insert_order").data["rows"][0]["app"]
    assert tagged == "acme-flows flow=orders-sync step=insert_order"
    assert [b[1] for b in _backends(pg, "acme-flows%")] == [tagged]  # what a DBA sees in pg_stat_activity
    plain = runtime.run("query_rows", profile, query).data["rows"][0]["app"]
    assert plain == "acme-flows"
    long = runtime.run("query_rows", profile, query, flow="f" * 80, step="é").data["rows"][0]["app"]
    assert len(long) == 63 and long.startswith("acme-flows flow=fff")


def test_hard_cap_on_connections_per_profile(runtime: Runtime, db, pg) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    profile = {**db.profile, "maxConnections": 2, "applicationName": "capped"}
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(_backends(pg, "capped%")))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as executor:
            list(executor.map(lambda i: runtime.run("query_rows", profile, {"query": "SELECT pg_sleep(0.05)"}),
                              range(40)))
    finally:
        stop.set()
        watcher.join()
    assert peak == 2


def test_idle_connections_are_closed(runtime: Runtime, db, pg) -> None:
    import time

    profile = {**db.profile, "idleTimeout": 1, "applicationName": "idler"}
    runtime.run("query_rows", profile, {"query": "SELECT 1"})
    assert len(_backends(pg, "idler%")) == 1
    deadline = time.monotonic() + 5
    while _backends(pg, "idler%") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _backends(pg, "idler%") == []  # closed by the reaper, with no action running
    assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]


def test_closing_the_runtime_closes_every_pool(db, pg) -> None:
    with Runtime() as rt:
        for name in ("close-a", "close-b"):
            rt.run("query_rows", {**db.profile, "applicationName": name}, {"query": "SELECT 1"})
        assert len(_backends(pg, "close-%")) == 2
    assert _backends(pg, "close-%") == []


def test_hundreds_of_failing_actions_leak_nothing(db, pg) -> None:
    """Errors, timeouts, oversized results and cancellations, 300 in all, from 6 threads: afterwards
    the server holds no more connections than the pool's cap, and the pool still works."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pgactions import Limits

    profile = {**db.profile, "maxConnections": 4, "applicationName": "leakcheck"}
    failures = [
        {"query": "SELECT 1/0"},
        {"query": "SELECT * FROM no_such_table"},
        {"query": "SELECT pg_sleep(2)", "timeout": 0.05},
        {"query": "SELECT repeat('x', 1000) FROM generate_series(1, 5000)"},
        {"query": "SELECT pg_sleep(2)", "cancel": True},
    ]
    codes: dict[str, int] = {}
    lock = threading.Lock()

    with Runtime(Limits(max_result_bytes=100_000)) as rt:
        def one(i: int) -> None:
            inputs = dict(failures[i % len(failures)])
            cancel = threading.Event() if inputs.pop("cancel", False) else None
            if cancel is not None:
                threading.Timer(0.05, cancel.set).start()
            try:
                rt.run("query_rows", profile, inputs, cancel=cancel)
            except ActionError as exc:
                with lock:
                    codes[exc.code] = codes.get(exc.code, 0) + 1

        with ThreadPoolExecutor(max_workers=6) as executor:
            list(executor.map(one, range(300)))
        assert codes == {"INVALID_VALUE": 60, "UNDEFINED_TABLE": 60,
                         "QUERY_TIMEOUT": 60, "RESULT_TOO_LARGE": 60, "CANCELLED": 60}
        assert len(_backends(pg, "leakcheck%")) <= 4
        assert rt.run("query_rows", profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]
    assert _backends(pg, "leakcheck%") == []


def test_cancelling_an_action_rolls_it_back(runtime: Runtime, db) -> None:
    import threading

    db.sql("CREATE TABLE t (x int)")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(ActionError) as info:
        runtime.run("execute_query", db.profile, {"query": "INSERT INTO t SELECT 1 FROM pg_sleep(5)"}, cancel=cancel)
    assert info.value.code == "CANCELLED" and info.value.retryable
    assert db.sql("SELECT count(*) FROM t") == [(0,)]
    already = threading.Event()
    already.set()
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", db.profile, {"query": "SELECT 1"}, cancel=already)
    assert info.value.code == "CANCELLED"


def test_troubleshooting_table_matches_the_catalogue() -> None:
    """docs/connections.md: every code is catalogued, every fix is one of that code's fixes, and
    every connection failure the suite provokes has a row."""
    from pathlib import Path

    from pgactions import ERROR_CATALOG

    from .test_connection_failures import SCENARIOS

    text = (Path(__file__).parents[1] / "docs" / "connections.md").read_text()
    table = text.split("## Troubleshooting", 1)[1]
    rows = [line.split("|")[1:4] for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) >= 10
    for _symptom, code, fix in rows:
        code, fix = code.strip().strip("`"), fix.strip()
        if code == "—":
            continue
        assert code in ERROR_CATALOG, code
        assert fix in ERROR_CATALOG[code].fix, (code, fix)
    assert {s.code for s in SCENARIOS} <= {code.strip().strip("`") for _s, code, _f in rows}


# -- malformed connections: one INVALID_CONNECTION, never another exception, never the secret -------

_SECRET = "Malformed-S3cret-pw-6620"


@pytest.mark.parametrize("connection", [
    f"postgresql://app:{_SECRET}@[::1:55432/shop",
    f"postgresql://app:{_SECRET}@[::1/shop",
    f"postgresql://app:{_SECRET}@db:99999/shop",
    f"postgresql://app:{_SECRET}@db:54x2/shop",
    f"mysql://app:{_SECRET}@db/shop",
    f"postgresql://app:{_SECRET}@db/shop?sslmode=sometimes",
    f"postgresql://app:{_SECRET}@db/shop?colour=red",
    f"postgresql://app:{_SECRET}@db/shop?connect_timeout=1",
    f"app:{_SECRET}@db/shop",
    "",
    {"url": f"postgresql://app:{_SECRET}@[::1/x"},
    {"url": f"mysql://app:{_SECRET}@db/x"},
    {"host": "db\x00", "password": _SECRET},
    {"statementTimeout": float("nan"), "password": _SECRET},
    {"extraOptions": {"keepalives_idle": float("inf")}, "password": _SECRET},
    {1: "x", "password": _SECRET},
    {"extraOptions": {1: "x", "b": "y"}, "password": _SECRET},
    42,
    None,
], ids=lambda c: repr(c)[:40])
def test_malformed_connections_raise_only_invalid_connection(connection, runtime: Runtime) -> None:
    for attempt in (lambda: load_profile(connection),
                    lambda: runtime.run("query_rows", connection, {"query": "SELECT 1"})):
        with pytest.raises(ActionError) as info:
            attempt()
        assert info.value.code == "INVALID_CONNECTION", info.value.payload
        assert info.value.payload["errors"] and info.value.payload["field"] == info.value.payload["errors"][0]["path"]
        assert _SECRET not in str(info.value.payload) + repr(info.value)


def test_url_problems_are_named_by_the_url() -> None:
    with pytest.raises(ActionError) as info:
        load_profile("postgresql://u@h/db?colour=red&sslmode=sometimes&port=99999")
    assert {e["path"] for e in info.value.payload["errors"]} == {"url: colour", "url: sslMode", "url: port"}
    with pytest.raises(ActionError) as info:
        load_profile({"url": "postgresql://u@h/db?colour=red", "extraOptions": {"shade": "dark"}})
    assert {e["path"] for e in info.value.payload["errors"]} == {"url: colour", "extraOptions/shade"}


def test_multi_host_urls(pg: TestServer, runtime: Runtime) -> None:
    """libpq's host lists: every host kept (urllib alone reads "h1:5432,h2:5432" as one host and
    the last port); hosts with different ports are refused, not read wrongly."""
    profile = load_profile("postgresql://u@h1:5433,[::1]:5433,h3:5433/db")
    assert (profile.host, profile.port) == ("h1,::1,h3", 5433)
    assert load_profile("postgresql://u@h1,h2/db").host == "h1,h2"
    for url in ("postgresql://u@h1:5432,h2:5433/db", "postgresql://u@h1,h2:5433/db", "postgresql://u@h1,,h2/db"):
        with pytest.raises(ActionError) as info:
            load_profile(url)
        assert info.value.code == "INVALID_CONNECTION" and info.value.payload["errors"][0]["path"] == "url"
    # The first host refuses (nothing listens on 127.0.0.2); libpq goes on to the next.
    url = pg.url().replace(f"@{pg.host}:{pg.port}", f"@127.0.0.2:{pg.port},{pg.host}:{pg.port}")
    assert url != pg.url() and load_profile(url).host == f"127.0.0.2,{pg.host}"
    assert runtime.run("query_rows", url, {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]


def test_url_and_field_options_are_merged() -> None:
    p = load_profile({"url": "postgresql://u@h/db?keepalives_idle=30&target_session_attrs=any",
                      "extraOptions": {"target_session_attrs": "read-write", "keepalives": 1}})
    assert dict(p.extraOptions) == {"keepalives_idle": "30", "target_session_attrs": "read-write", "keepalives": "1"}


def test_url_options_search_path() -> None:
    p = load_profile("postgresql://u@h/db?options=-c%20search_path%3Dsales,public%20-c%20work_mem%3D4MB")
    assert p.schema == "sales" and dict(p.extraOptions) == {"options": "-c work_mem=4MB"}
    q = load_profile("postgresql://u@h/db?options=-csearch_path%3Dhr")
    assert q.schema == "hr" and q.extraOptions == ()
    r = load_profile("postgresql://u@h/db?options=-c%20search_path%3D")  # empty: no schema, nothing left
    assert r.schema is None and r.extraOptions == ()


def test_profile_file_errors_name_the_file_not_its_content(tmp_path) -> None:
    broken = tmp_path / "prod.yaml"
    broken.write_text(f"host: [db\npassword: {_SECRET}\n")
    with pytest.raises(ActionError) as info:
        load_profile(str(broken))
    detail = info.value.payload["detail"]
    assert info.value.code == "INVALID_CONNECTION" and str(broken) in detail and "line" in detail
    assert _SECRET not in str(info.value.payload)
    with pytest.raises(ActionError) as info:
        load_profile(str(tmp_path / "missing.yaml"))
    assert "there is no profile file" in info.value.payload["detail"]


def test_libpq_option_values_are_checked_before_connecting() -> None:
    """libpq refuses these only when connecting, in words that read like a network failure."""
    with pytest.raises(ActionError) as info:
        load_profile({"extraOptions": {"keepalives_idle": "soon", "target_session_attrs": "bogus",
                                       "tcp_user_timeout": 1.5}})
    errors = {e["path"]: e["message"] for e in info.value.payload["errors"]}
    assert info.value.code == "INVALID_CONNECTION"
    assert set(errors) == {"extraOptions/keepalives_idle", "extraOptions/target_session_attrs",
                           "extraOptions/tcp_user_timeout"}
    assert "read-write" in errors["extraOptions/target_session_attrs"]
    ok = load_profile({"extraOptions": {"keepalives": True, "keepalives_idle": 30, "target_session_attrs": "primary",
                                        "channel_binding": "require"}})
    assert dict(ok.extraOptions)["keepalives"] == "1"
