"""``pgactions serve`` driven over real HTTP (httpx → uvicorn on loopback → the suite's PostgreSQL):
the action endpoints answer what the CLI prints, errors carry the status of the table, stored
connections keep their secrets, idempotent retries run once, metrics move, shutdown is clean."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import APP_PASSWORD, TestDB, TestServer
from .serving import Served, serve


@pytest.fixture(scope="module")
def open_service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    """Auth off (--no-auth): the action endpoints themselves."""
    with serve(tmp_path_factory.mktemp("open") / "state", "--no-auth") as served:
        yield served


@pytest.fixture
def table(db: TestDB) -> TestDB:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2))")
    db.sql("INSERT INTO items VALUES (1, 'pen', 1.50), (2, 'book', 12.00)")
    return db


def run(served: Served, action: str, db: TestDB, inputs: dict[str, Any], **extra: Any) -> httpx.Response:
    return served.post(f"/v1/actions/{action}:run", {"connection": db.profile, "inputs": inputs, **extra})


def test_health_needs_no_key(open_service: Served) -> None:
    response = open_service.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert open_service.client.get("/readyz").status_code == 200


def test_list_and_describe_actions(open_service: Served) -> None:
    listing = open_service.get("/v1/actions").json()
    assert {"query_rows", "insert_row", "upsert_rows"} <= {a["id"] for a in listing}
    described = open_service.get("/v1/actions/query_rows").json()
    assert described["id"] == "query_rows" and "query" in described["input"]["properties"]
    missing = open_service.get("/v1/actions/no_such_action")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "UNKNOWN_ACTION"


def test_run_answers_exactly_what_the_cli_prints(open_service: Served, table: TestDB) -> None:
    inputs = {"query": "SELECT id, name, price FROM items WHERE id = $1", "parameters": ["{{ trigger.id }}"]}
    context = {"trigger": {"id": 2}}
    response = run(open_service, "query_rows", table, inputs, context=context)
    assert response.status_code == 200
    assert response.json()["rows"] == [{"id": 2, "name": "book", "price": "12.00"}]
    profile = json.dumps(table.profile)
    (open_service.state_dir.parent / "profile.json").write_text(profile)
    cli = subprocess.run([sys.executable, "-m", "pgactions", "run", "query_rows", "-c",
                          str(open_service.state_dir.parent / "profile.json"), "--input", json.dumps(inputs),
                          "--context", json.dumps(context)], capture_output=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.rstrip(b"\n") == response.content


def test_options_are_the_cli_flags(open_service: Served, table: TestDB) -> None:
    query = {"query": "SELECT price FROM items ORDER BY id"}
    as_number = run(open_service, "query_rows", table, query, options={"numericAsNumber": True}).json()
    assert as_number["rows"][0]["price"] == 1.5
    capped = run(open_service, "query_rows", table, query, options={"maxResultBytes": 10})
    assert capped.status_code == 413 and capped.json()["error"]["code"] == "RESULT_TOO_LARGE"
    dry = run(open_service, "update_rows", table, {"query": "UPDATE items SET name = 'x'"}, options={"dryRun": True})
    assert dry.status_code == 200 and dry.json()["rowCount"] == 2
    assert table.sql("SELECT count(*) FROM items WHERE name = 'x'") == [(0,)]
    slow = run(open_service, "query_rows", table, {"query": "SELECT pg_sleep(5)"}, options={"timeout": 0.3})
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "QUERY_TIMEOUT"
    wrong = run(open_service, "query_rows", table, query, options={"colour": "blue"})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "colour"


@pytest.mark.parametrize(("action", "inputs", "status", "code"), [
    ("query_rows", {"query": "SELECT * FROM no_such_table"}, 404, "UNDEFINED_TABLE"),
    ("query_rows", {"query": "SELEC 1"}, 422, "SYNTAX_ERROR"),
    ("query_rows", {"querry": "SELECT 1"}, 422, "INVALID_INPUT"),
    ("query_rows", {"query": "SELECT {{ trigger.missing.deeper }}"}, 422, "TEMPLATE_ERROR"),
    ("insert_row", {"table": "items", "columns": {"id": 1, "name": "dup"}}, 409, "UNIQUE_VIOLATION"),
    ("insert_row", {"table": "items", "columns": {"id": 3}}, 409, "NOT_NULL_VIOLATION"),
    ("query_rows", {"query": "SELECT 1/0"}, 422, "INVALID_VALUE"),
])
def test_errors_carry_the_status_of_the_table(open_service: Served, table: TestDB, action: str,
                                               inputs: dict[str, Any], status: int, code: str) -> None:
    response = run(open_service, action, table, inputs)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert set(response.json()["error"]) >= {"code", "message", "cause", "fix", "retryable"}
    assert "x-request-id" in response.headers


def test_connection_failures_are_502_or_503(open_service: Served, pg: TestServer) -> None:
    refused = open_service.post("/v1/actions/query_rows:run", {
        "connection": f"postgresql://app@127.0.0.1:{_closed_port()}/x?connect_timeout=2",
        "inputs": {"query": "SELECT 1"}})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "CONNECTION_REFUSED"
    assert refused.headers["retry-after"] == "1"
    wrong_password = open_service.post("/v1/actions/query_rows:run", {
        "connection": pg.url(password="not-the-password") + "?sslmode=disable", "inputs": {"query": "SELECT 1"}})
    assert wrong_password.status_code == 502
    assert wrong_password.json()["error"]["code"] == "AUTHENTICATION_FAILED"
    assert "not-the-password" not in wrong_password.text


def _closed_port() -> int:
    from .serving import free_port

    return free_port()


def test_bad_bodies_are_422_never_500(open_service: Served) -> None:
    for body in (b"", b"{", b"[]", b'"text"', b'{"inputs": {}}', b'{"connection": 5, "inputs": {}}'):
        response = open_service.client.post("/v1/actions/query_rows:run", content=body,
                                            headers={"content-type": "application/json"})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] in ("INVALID_INPUT", "INVALID_CONNECTION")
    assert open_service.get("/v1/nowhere").status_code == 404
    assert open_service.client.delete("/v1/actions").status_code == 405


def test_body_limit(open_service: Served) -> None:
    big = {"connection": "postgresql://x@127.0.0.1/x", "inputs": {"query": "SELECT 1", "parameters": ["x" * (21 << 20)]}}
    response = open_service.post("/v1/actions/query_rows:run", big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "REQUEST_TOO_LARGE"


def test_batch_with_failed_items_answers_200_ok_false(open_service: Served, table: TestDB) -> None:
    items = [{"inputs": {"table": "items", "columns": {"id": 10, "name": "a"}}},
             {"inputs": {"table": "items", "columns": {"id": 1, "name": "dup"}}}]
    response = open_service.post("/v1/actions/insert_row:batch", {"connection": table.profile, "items": items})
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False and [i["ok"] for i in body["items"]] == [True, False]
    assert body["items"][1]["error"]["code"] == "UNIQUE_VIOLATION"
    whole = open_service.post("/v1/actions/insert_row:batch",
                              {"connection": table.profile, "items": items, "mode": "transaction"})
    assert whole.status_code == 409
    assert table.sql("SELECT count(*) FROM items") == [(3,)]  # the transaction batch changed nothing


def test_connection_test_reports(open_service: Served, table: TestDB) -> None:
    report = open_service.post("/v1/connections:test", {"connection": table.profile}).json()
    assert report["ok"] is True and [s["name"] for s in report["steps"]][:2] == ["dns", "tcp"]
    failed = open_service.post("/v1/connections:test", {"connection": {"host": "127.0.0.1", "port": _closed_port()}})
    assert failed.status_code == 200
    assert failed.json()["ok"] is False and failed.json()["failedStep"] == "tcp"


def test_stored_connection_keeps_its_secret(open_service: Served, table: TestDB, pg: TestServer) -> None:
    profile = {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
               "password": APP_PASSWORD, "sslMode": "disable", "schema": table.schema}
    created = open_service.client.put("/v1/connections/shop", json=profile)
    assert created.status_code == 201, created.text
    assert APP_PASSWORD not in created.text and created.json()["connection"]["password"] == "********"
    shown = open_service.get("/v1/connections/shop")
    assert APP_PASSWORD not in shown.text and shown.json()["connection"]["host"] == pg.host
    for path in open_service.state_dir.rglob("*"):
        if path.is_file():
            assert APP_PASSWORD.encode() not in path.read_bytes(), path
    rows = open_service.post("/v1/actions/query_rows:run",
                             {"connectionId": "shop", "inputs": {"query": "SELECT count(*) AS n FROM items"}})
    assert rows.json()["rows"] == [{"n": 2}]
    # Saved again as shown (mask and all): the stored password is kept.
    again = open_service.client.put("/v1/connections/shop", json=shown.json()["connection"])
    assert again.status_code == 200
    assert open_service.post("/v1/actions/query_rows:run",
                             {"connectionId": "shop", "inputs": {"query": "SELECT 1 AS one"}}).status_code == 200
    assert {"id": "shop"} in open_service.get("/v1/connections").json()
    assert open_service.client.delete("/v1/connections/shop").status_code == 204
    gone = open_service.post("/v1/actions/query_rows:run", {"connectionId": "shop", "inputs": {"query": "SELECT 1"}})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "UNKNOWN_CONNECTION"
    assert APP_PASSWORD not in open_service.settled_log()


def test_idempotent_retry_runs_once(open_service: Served, table: TestDB) -> None:
    body = {"connection": table.profile, "inputs": {"table": "items", "columns": {"id": 50, "name": "once"}}}
    first = open_service.post("/v1/actions/insert_row:run", body, Idempotency_Key="order-50")
    second = open_service.post("/v1/actions/insert_row:run", body, Idempotency_Key="order-50")
    assert first.status_code == second.status_code == 200
    assert second.content == first.content and second.headers.get("idempotent-replayed") == "true"
    assert table.sql("SELECT count(*) FROM items WHERE id = 50") == [(1,)]
    other = dict(body, inputs={"table": "items", "columns": {"id": 51, "name": "other"}})
    reused = open_service.post("/v1/actions/insert_row:run", other, Idempotency_Key="order-50")
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert table.sql("SELECT count(*) FROM items WHERE id = 51") == [(0,)]


def test_metrics_move(open_service: Served, table: TestDB) -> None:
    def value(name: str) -> float:
        text = open_service.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))
    before = value('pgactions_actions_total{action="query_rows",code="OK"}')
    errors_before = value('pgactions_errors_total{code="UNDEFINED_TABLE"}')
    run(open_service, "query_rows", table, {"query": "SELECT * FROM items"})
    run(open_service, "query_rows", table, {"query": "SELECT * FROM nope"})
    assert value('pgactions_actions_total{action="query_rows",code="OK"}') == before + 1
    assert value('pgactions_errors_total{code="UNDEFINED_TABLE"}') == errors_before + 1
    text = open_service.get("/metrics").text
    assert 'pgactions_rows_total{action="query_rows",direction="read"}' in text
    assert "pgactions_action_duration_seconds_bucket" in text and "pgactions_pool_connections{" in text
    assert "SELECT" not in text  # never SQL text in labels


def test_request_id_reaches_the_log_and_application_name(open_service: Served, table: TestDB, pg: TestServer) -> None:
    seen: list[Any] = []

    def watch() -> None:
        deadline = time.monotonic() + 10
        with pg.admin() as conn:
            while time.monotonic() < deadline and not seen:
                seen.extend(conn.execute("SELECT application_name FROM pg_stat_activity "
                                         "WHERE application_name LIKE %s", ["%req=trace-42%"]).fetchall())
                time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    response = open_service.post("/v1/actions/query_rows:run",
                                 {"connection": table.profile, "inputs": {"query": "SELECT pg_sleep(1)"},
                                  "flow": "orders"}, X_Request_Id="trace-42")
    watcher.join()
    assert response.headers["x-request-id"] == "trace-42"
    assert seen and "flow=orders" in seen[0][0]
    log = open_service.log_with('"requestId": "trace-42"', '"requestId":"trace-42"')
    lines = [json.loads(line) for line in log.splitlines() if '"requestId": "trace-42"' in line
             or '"requestId":"trace-42"' in line]
    assert lines and lines[-1]["action"] == "query_rows" and lines[-1]["code"] == "OK"
    assert "pg_sleep" not in log  # the audit line never holds inputs


@pytest.mark.parametrize("pool", ["cold", "warm"])
def test_client_disconnect_cancels_and_rolls_back(open_service: Served, table: TestDB, pg: TestServer,
                                                  pool: str) -> None:
    # A cold pool: the action opens its connection in a worker thread; a warm one: it waits for
    # the server on the event loop (pgactions.db.cooperative).  Both cancel alike.
    profile = {**table.profile, "applicationName": f"disconnect-{pool}"}
    if pool == "warm":
        warm = open_service.post("/v1/actions/query_rows:run", {"connection": profile, "inputs": {"query": "SELECT 1"}})
        assert warm.status_code == 200
    body = {"connection": profile,
            "inputs": {"query": "INSERT INTO items VALUES (77, 'ghost', 0); SELECT pg_sleep(20)"}}
    with pytest.raises(httpx.ReadTimeout):
        open_service.client.post("/v1/actions/execute_query:run", json=body, timeout=1.0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with pg.admin() as conn:
            running = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                   "AND query LIKE %s", ["%pg_sleep(20)%"]).fetchone()
        if running == (0,):
            break
        time.sleep(0.1)
    assert running == (0,)  # cancelled on the server, not left to sleep
    assert table.sql("SELECT count(*) FROM items WHERE id = 77") == [(0,)]


def test_graceful_shutdown_finishes_in_flight_and_leaves_no_backend(tmp_path: Path, table: TestDB,
                                                                    pg: TestServer) -> None:
    result: dict[str, Any] = {}
    with serve(tmp_path / "state", "--no-auth") as served:
        def call() -> None:
            result["response"] = httpx.post(served.base_url + "/v1/actions/query_rows:run", timeout=30, json={
                "connection": table.profile, "inputs": {"query": "SELECT true AS slept FROM pg_sleep(1.5)"},
                "flow": "shutdown-test"})
        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        code = served.stop()
        caller.join()
    assert code in (0, -15)  # uvicorn exits by the signal it handled, after the graceful part
    assert result["response"].status_code == 200 and result["response"].json()["rows"] == [{"slept": True}]
    with pg.admin() as conn:
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                            ["%flow=shutdown-test%"]).fetchone()
    assert left == (0,)


@pytest.fixture(scope="module")
def closed_service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("closed") / "state") as served:
        yield served


def test_auth_is_on_by_default(closed_service: Served, table: TestDB) -> None:
    body = {"connection": table.profile, "inputs": {"query": "SELECT 1 AS one"}}
    missing = closed_service.post("/v1/actions/query_rows:run", body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "UNAUTHORIZED"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert closed_service.post("/v1/actions/query_rows:run", body, key="pga_not-a-key").status_code == 401
    assert closed_service.client.get("/healthz").status_code == 200
    key = closed_service.create_key("flows")
    assert closed_service.post("/v1/actions/query_rows:run", body, key=key).json()["rows"] == [{"one": 1}]
    assert closed_service.keys("revoke", "--name", "flows").returncode == 0
    time.sleep(1.2)  # the authenticator's cache lasts at most a second
    assert closed_service.post("/v1/actions/query_rows:run", body, key=key).status_code == 401
    assert key not in closed_service.settled_log()


def test_scopes(closed_service: Served, table: TestDB) -> None:
    reader = closed_service.create_key("reader", "--read-only")
    writes = {"connection": table.profile, "inputs": {"table": "items", "columns": {"id": 60, "name": "x"}}}
    refused = closed_service.post("/v1/actions/insert_row:run", writes, key=reader)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    only_query = closed_service.create_key("only-query", "--actions", "query_rows")
    assert closed_service.post("/v1/actions/insert_row:run", writes, key=only_query).status_code == 403
    pinned = closed_service.create_key("tenant", "--context", '{"tenant": "acme"}')
    sql = closed_service.post("/v1/actions/query_rows:run",
                              {"connection": table.profile, "inputs": {"query": "SELECT 1"}}, key=pinned)
    assert sql.status_code == 403
    stored_only = closed_service.create_key("stored", "--connections", "shop")
    inline = closed_service.post("/v1/actions/query_rows:run",
                                 {"connection": table.profile, "inputs": {"query": "SELECT 1"}}, key=stored_only)
    assert inline.status_code == 403
    assert table.sql("SELECT count(*) FROM items WHERE id = 60") == [(0,)]


def test_pinned_values_reach_templates_and_cannot_be_overridden(closed_service: Served, table: TestDB) -> None:
    key = closed_service.create_key("pinned", "--context", '{"tenant": "acme"}')
    body = {"connection": table.profile, "context": {"auth": {"tenant": "evil"}},
            "inputs": {"table": "items", "columns": {"id": 70, "name": "{{ auth.tenant }}"}}}
    assert closed_service.post("/v1/actions/insert_row:run", body, key=key).status_code == 200
    assert table.sql("SELECT name FROM items WHERE id = 70") == [("acme",)]


def test_pinned_values_reach_row_level_security(closed_service: Served, db: TestDB) -> None:
    db.sql("CREATE TABLE docs (id int PRIMARY KEY, tenant text NOT NULL)")
    db.sql("INSERT INTO docs VALUES (1, 'acme'), (2, 'globex'), (3, 'acme')")
    db.sql("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    db.sql("ALTER TABLE docs FORCE ROW LEVEL SECURITY")  # the login role owns it: policies apply anyway
    db.sql("CREATE POLICY by_tenant ON docs USING (tenant = nullif(current_setting('pgactions.auth', true), '')::jsonb ->> 'tenant')")
    key = closed_service.create_key("acme-reader", "--context", '{"tenant": "acme"}')
    found = closed_service.post("/v1/actions/find_rows:run", {"connection": db.profile,
                                                              "inputs": {"table": "docs"}}, key=key)
    assert found.status_code == 200, found.text
    assert sorted(r["id"] for r in found.json()["rows"]) == [1, 3]


def test_a_kept_secret_only_goes_where_it_went(open_service: Served, table: TestDB, pg: TestServer) -> None:
    """Saving a profile back with the mask keeps the password — but not when the host, port, user,
    TLS settings or libpq options change: the stored password would go to a server of the caller's."""
    profile = {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
               "password": APP_PASSWORD, "sslMode": "disable", "schema": table.schema}
    assert open_service.client.put("/v1/connections/keep", json=profile).status_code == 201
    shown = open_service.get("/v1/connections/keep").json()["connection"]
    for change in ({"host": "127.0.0.2"}, {"port": 1}, {"username": "postgres"}, {"sslMode": "allow"},
                   {"extraOptions": {"hostaddr": "127.0.0.2"}}):
        moved = open_service.client.put("/v1/connections/keep", json={**shown, **change})
        assert moved.status_code == 422, (change, moved.text)
        assert moved.json()["error"]["code"] == "INVALID_CONNECTION" and moved.json()["error"]["field"] == "password"
    harmless = open_service.client.put("/v1/connections/keep", json={**shown, "applicationName": "flows"})
    assert harmless.status_code == 200
    assert open_service.post("/v1/actions/query_rows:run",
                             {"connectionId": "keep", "inputs": {"query": "SELECT 1 AS one"}}).status_code == 200
    resent = open_service.client.put("/v1/connections/keep", json={**shown, "port": pg.port, "password": APP_PASSWORD,
                                                                   "host": "localhost"})
    assert resent.status_code == 200  # with the password sent again, the destination may change


def test_review_findings_stay_fixed(closed_service: Served, open_service: Served, table: TestDB) -> None:
    """From the security review: each was a reproduced attack."""
    pinned = closed_service.create_key("pinned-review", "--context", '{"tenant": "acme"}')
    # a pinned key may not run call_function (query_to_xml runs any SQL, set_config included)
    sneaky = closed_service.post("/v1/actions/call_function:run", {"connection": table.profile, "inputs": {
        "name": "query_to_xml", "schema": "pg_catalog",
        "arguments": ["select set_config('pgactions.auth', '{}', true)", True, False, ""]}}, key=pinned)
    assert sneaky.status_code == 403
    # nor save or delete stored connections (every caller uses them)
    moved = closed_service.client.put("/v1/connections/any", json={"host": "127.0.0.1"},
                                      headers=closed_service.headers(pinned))
    assert moved.status_code == 403
    # a batch item's own context cannot replace the pinned auth values
    items = [{"inputs": {"table": "items", "columns": {"id": 80, "name": "{{ auth.tenant }}"}},
              "context": {"auth": {"tenant": "other"}}}]
    done = closed_service.post("/v1/actions/insert_row:batch", {"connection": table.profile, "items": items}, key=pinned)
    assert done.status_code == 200, done.text
    assert table.sql("SELECT name FROM items WHERE id = 80") == [("acme",)]
    # hostile numbers are 422, never 500
    huge = 10 ** 40
    for body in ({"connection": {"host": "127.0.0.1", "port": huge}, "inputs": {"query": "SELECT 1"}},
                 {"connection": table.profile, "inputs": {"query": "SELECT 1"}, "options": {"timeout": huge}}):
        assert open_service.post("/v1/actions/query_rows:run", body).status_code == 422
    replayed = open_service.post("/v1/actions/insert_row:run", {"connection": table.profile, "inputs": {
        "table": "items", "columns": {"id": 81, "name": "n", "price": huge}}}, Idempotency_Key="big-number")
    assert replayed.status_code < 500, replayed.text
    # the records API answers 401 before reading a body
    assert closed_service.client.post("/v1/db/x/tables/t", json=[{"a": 1}]).status_code == 401
    assert closed_service.client.post("/v1/db/x/rpc/f", json={}).status_code == 401


def test_idempotent_batches_and_keys_reusing_a_name(closed_service: Served, table: TestDB) -> None:
    key = closed_service.create_key("batcher")
    items = [{"inputs": {"table": "items", "columns": {"id": 90 + i, "name": "b"}}} for i in range(3)]
    body = {"connection": table.profile, "items": items}
    first = closed_service.post("/v1/actions/insert_row:batch", body, key=key, Idempotency_Key="batch-1")
    again = closed_service.post("/v1/actions/insert_row:batch", body, key=key, Idempotency_Key="batch-1")
    assert first.status_code == again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
    assert table.sql("SELECT count(*) FROM items WHERE id BETWEEN 90 AND 92") == [(3,)]
    assert closed_service.keys("revoke", "--name", "batcher").returncode == 0
    successor = closed_service.create_key("batcher")  # the name again, another key
    other = {"connection": table.profile, "items": [{"inputs": {"table": "items", "columns": {"id": 95, "name": "c"}}}]}
    fresh = closed_service.post("/v1/actions/insert_row:batch", other, key=successor, Idempotency_Key="batch-1")
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers  # not the old key's answer


def test_concurrent_calls_share_a_small_pool_in_order(open_service: Served, table: TestDB) -> None:
    """16 callers at once on a profile of 2 connections: all answered, each with its own row
    (the excess waits its turn on the event loop; nothing is refused below the per-connection
    limit of 16)."""
    profile = {**table.profile, "maxConnections": 2, "applicationName": "small-pool"}

    def call(n: int) -> httpx.Response:
        return httpx.post(open_service.base_url + "/v1/actions/query_rows:run", timeout=60,
                          json={"connection": profile, "inputs": {"query": "SELECT $1::int AS n, pg_sleep(0.05) IS NULL AS s",
                                                                  "parameters": [n]}})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(call, range(48)))
    assert [r.status_code for r in responses] == [200] * 48
    assert [r.json()["rows"][0]["n"] for r in responses] == list(range(48))
