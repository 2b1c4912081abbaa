"""Running the service for real: several processes on one PostgreSQL state store, worker
processes, the per-connection limit under 16 threads, /healthz while every thread is busy, CORS
closed unless configured, bad configuration refused at start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .conftest import APP_PASSWORD, TestDB, TestServer
from .serving import serve

SECRET_KEY = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="  # a Fernet key for these tests only


def test_two_services_share_one_postgresql_store(tmp_path: Path, pg: TestServer, db: TestDB) -> None:
    schema = "pgactions_state"  # the store's own schema, made by the first service
    with pg.admin() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    state_url = pg.url(sslmode="disable")
    env = dict(os.environ, PGACTIONS_SECRET_KEY=SECRET_KEY)
    db.sql("CREATE TABLE t (id int)")
    profile = {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
               "password": APP_PASSWORD, "sslMode": "disable", "schema": db.schema}
    with serve(tmp_path / "a", "--state-url", state_url, env=env) as first, \
            serve(tmp_path / "b", "--state-url", state_url, "--workers", "2", env=env) as second:
        created = subprocess.run([sys.executable, "-m", "pgactions", "keys", "create", "--name", "shared",
                                  "--state-url", state_url], capture_output=True, text=True, env=env, timeout=60)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["key"]
        saved = first.client.put("/v1/connections/shared-db", json=profile, headers=first.headers(key))
        assert saved.status_code == 201, saved.text
        for served in (first, second, second):  # two calls on the second: both workers, likely
            ran = served.post("/v1/actions/insert_row:run", {"connectionId": "shared-db",
                                                            "inputs": {"table": "t", "columns": {"id": 1}}}, key=key)
            assert ran.status_code == 200, ran.text
        assert db.sql("SELECT count(*) FROM t") == [(3,)]
        with pg.admin() as conn:
            rows = conn.execute(f"SELECT * FROM {schema}.connections").fetchall()
        assert rows and APP_PASSWORD not in repr(rows)
        revoked = subprocess.run([sys.executable, "-m", "pgactions", "keys", "revoke", "--name", "shared",
                                  "--state-url", state_url], capture_output=True, text=True, env=env, timeout=60)
        assert revoked.returncode == 0, revoked.stderr
        time.sleep(1.2)  # the authenticators' cache lasts at most a second
        for served in (first, second):
            assert served.get("/v1/connections", key=key).status_code == 401
    with pg.admin() as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_per_connection_limit_refuses_rather_than_queues(tmp_path: Path, db: TestDB) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("threads: 16\nlimits:\n  perConnection: 4\n")
    with serve(tmp_path / "state", "--no-auth", "--config", str(config)) as served:
        body = {"connection": db.profile, "inputs": {"query": "SELECT true AS slept FROM pg_sleep(1)"}}

        def call(_: int) -> httpx.Response:
            return httpx.post(served.base_url + "/v1/actions/query_rows:run", json=body, timeout=60)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(call, range(16)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 4 and 429 in statuses and set(statuses) <= {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "RATE_LIMITED" and refused.headers["retry-after"] == "1"


def test_healthz_answers_while_every_thread_is_busy(tmp_path: Path, db: TestDB) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("threads: 2\n")
    with serve(tmp_path / "state", "--no-auth", "--config", str(config)) as served:
        body = {"connection": db.profile, "inputs": {"query": "SELECT true AS slept FROM pg_sleep(2)"}}
        busy = [threading.Thread(target=httpx.post, args=(served.base_url + "/v1/actions/query_rows:run",),
                                 kwargs={"json": body, "timeout": 60}) for _ in range(3)]
        for thread in busy:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        health = served.client.get("/healthz", timeout=1.5)
        answered_in = time.monotonic() - started
        for thread in busy:
            thread.join()
    assert health.status_code == 200
    assert answered_in < 1.5  # not queued behind the sleeping actions (which take 2 s and more)


def test_cors_is_off_unless_configured(tmp_path: Path) -> None:
    origin = {"Origin": "https://flows.example.com", "Access-Control-Request-Method": "POST"}
    with serve(tmp_path / "closed", "--no-auth") as served:
        preflight = served.client.options("/v1/actions/query_rows:run", headers=origin)
        assert "access-control-allow-origin" not in preflight.headers
    config = tmp_path / "serve.yaml"
    config.write_text("cors:\n  origins: [\"https://flows.example.com\"]\n")
    with serve(tmp_path / "open", "--no-auth", "--config", str(config)) as served:
        preflight = served.client.options("/v1/actions/query_rows:run", headers=origin)
        assert preflight.headers["access-control-allow-origin"] == "https://flows.example.com"
        other = served.client.options("/v1/actions/query_rows:run",
                                      headers={**origin, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


@pytest.mark.parametrize(("content", "message"), [
    ("colour: blue\n", "unknown key"),
    ("auth:\n  jwt:\n    secret: short\n", "32 characters"),
    ("toolsets:\n  mine: [no_such_action]\n", "no_such_action"),
    ("port: [1]\n", "port"),
])
def test_bad_configuration_is_refused_at_start(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(content)
    done = subprocess.run([sys.executable, "-m", "pgactions", "serve", "--config", str(config), "--state-dir",
                           str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_defaults_are_closed(tmp_path: Path) -> None:
    from argparse import Namespace

    from pgactions.service.config import load_config

    config = load_config(Namespace())
    assert (config.host, config.auth_enabled, config.cors_origins) == ("127.0.0.1", True, ())
    assert config.body_bytes == 20 * 1024 * 1024


def test_serve_demo_starts_everything_and_cleans_up(tmp_path: Path) -> None:
    from .serving import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pgactions", "serve", "--demo", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline() if process.stdout else ""
        assert f"http://127.0.0.1:{port}/" in banner and "'demo'" in banner
        deadline = time.monotonic() + 30
        while True:
            try:
                ran = httpx.post(f"http://127.0.0.1:{port}/v1/actions/query_rows:run", timeout=10, json={
                    "connectionId": "demo", "inputs": {"query": "SELECT count(*) AS users FROM users"}})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ran.json()["rows"] == [{"users": 2}]
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=60)
    assert "Traceback" not in errors
    ready = next(line for line in errors.splitlines() if line.startswith("PostgreSQL ready"))
    data_dir = ready.split("its data in ", 1)[1].split(",", 1)[0]
    assert not Path(data_dir).exists()  # the server was stopped and its data deleted
    assert subprocess.run(["pgrep", "-f", data_dir], capture_output=True).returncode == 1


def test_a_stalled_body_gets_request_timeout(tmp_path: Path) -> None:
    """A client that sends the headers and then nothing, or part of the body and then nothing:
    answered 408 REQUEST_TIMEOUT after limits.bodySeconds, while other requests go on being served."""
    config = tmp_path / "serve.yaml"
    config.write_text("limits:\n  bodySeconds: 1\n")
    head = (b"POST /v1/actions/query_rows:run HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n")
    with serve(tmp_path / "state", "--no-auth", "--config", str(config)) as served:
        for part in (b"", b'{"connection": "postgresql://x@127.0.0.1/x", '):
            with socket.create_connection(("127.0.0.1", served.port), timeout=10) as stalled:
                stalled.sendall(head)
                if part:
                    time.sleep(0.2)  # the rest comes apart from the headers, so the body is awaited
                    stalled.sendall(part)
                assert served.client.get("/healthz").status_code == 200  # not held up meanwhile
                started = time.monotonic()
                answer = b""
                while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                    chunk = stalled.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            waited = time.monotonic() - started
            status_line, _, body = answer.partition(b"\r\n\r\n")
            assert status_line.startswith(b"HTTP/1.1 408"), answer
            assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
            assert waited < 8  # one second's limit, not the client's patience


def test_an_answer_too_large_to_keep_is_not_replayed_nor_run_again(tmp_path: Path, db: TestDB) -> None:
    db.sql("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    config = tmp_path / "serve.yaml"
    config.write_text("limits:\n  idempotentBytes: 1024\n")
    body = {"connection": db.profile, "inputs": {
        "query": "INSERT INTO notes SELECT g, repeat('x', 100) FROM generate_series(1, 20) g RETURNING *"}}
    with serve(tmp_path / "state", "--no-auth", "--config", str(config)) as served:
        first = served.post("/v1/actions/execute_query:run", body, Idempotency_Key="bulk-1")
        retry = served.post("/v1/actions/execute_query:run", body, Idempotency_Key="bulk-1")
        small = {"connection": db.profile, "inputs": {"query": "INSERT INTO notes VALUES (99, 'short')"}}
        kept = [served.post("/v1/actions/execute_query:run", small, Idempotency_Key="one") for _ in range(2)]
    assert first.status_code == 200 and len(first.content) > 1024  # the first caller gets it all
    assert first.json()["rowCount"] == 20
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "REPLAY_UNAVAILABLE"
    assert retry.json()["error"]["status"] == 200 and retry.headers.get("idempotent-replayed") == "true"
    assert db.sql("SELECT count(*) FROM notes WHERE id <= 20") == [(20,)]  # ran once
    assert [r.status_code for r in kept] == [200, 200] and kept[1].content == kept[0].content
