"""Trigger subscriptions in ``pgactions serve``: a trigger's events POSTed to a loopback receiver,
signed, retried under the same delivery id, resumed from the stored checkpoint after kill -9; URLs
under the host policy; triggers listed apart from the actions."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pgactions import ActionError
from pgactions.service.crypto import Keyring, new_secret_key
from pgactions.service.filestore import FileStore
from pgactions.service.store import SubscriptionRecord
from pgactions.service.subscriptions import check_url, delivery_id, sign
from pgactions.service.untrusted import HostPolicy

from .conftest import APP_PASSWORD, TestDB, TestServer
from .serving import Served, serve

SECRET = "a-webhook-secret-of-ours-0123456789"


class Receiver:
    """A loopback webhook: records each request's headers and body; answers 500 to the first
    ``fail`` requests, or a redirect to ``redirect`` when set."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail = 0
        self.redirect: str | None = None
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    failing = receiver.fail > 0
                    if failing:
                        receiver.fail -= 1
                if receiver.redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", receiver.redirect)
                elif failing:
                    self.send_response(500)
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]

    def ok_ids(self, column: str = "id") -> list[Any]:
        """The rows of every accepted delivery (the last request of each delivery id), in order."""
        with self.lock:
            requests = list(self.requests)
        accepted: dict[str, list[Any]] = {}
        for headers, body in requests:
            document = json.loads(body)
            accepted[headers["x-pgactions-delivery"]] = [e["after"][column] for e in document["events"]]
        return [value for rows in accepted.values() for value in rows]

    def wait(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not get what was expected within {timeout}s: {self.bodies()}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("subscriptions") / "state", "--no-auth") as served:
        yield served


def _profile(pg: TestServer, db: TestDB) -> dict[str, Any]:
    return {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
            "password": APP_PASSWORD, "sslMode": "disable", "schema": db.schema}


def _table(db: TestDB, served: Served, pg: TestServer, rows: int = 0) -> str:
    db.sql("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
    if rows:
        db.sql(f"INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {rows}) g")
    assert served.client.put(f"/v1/connections/{db.schema}", json=_profile(pg, db),
                             headers=served.headers()).status_code in (200, 201)
    return f"{db.schema}.items"


def _subscribe(served: Served, db: TestDB, url: str, **inputs: Any) -> dict[str, Any]:
    body = {"trigger": "new_rows", "connectionId": db.schema, "url": url, "secret": SECRET,
            "inputs": {"table": f"{db.schema}.items", "orderBy": "id", "startFrom": "beginning", **inputs}}
    response = served.post("/v1/subscriptions", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _insert(db: TestDB, first: int, last: int) -> None:
    db.sql(f"INSERT INTO items SELECT g, 'item ' || g FROM generate_series({first}, {last}) g")


# -- deliveries ------------------------------------------------------------------------------------

def test_rows_are_delivered_signed_in_order(service: Served, db: TestDB, pg: TestServer, receiver: Receiver) -> None:
    _table(db, service, pg, rows=3)
    made = _subscribe(service, db, receiver.url, batchSize=2)
    assert made["secret"] == "********" and made["status"] == "starting" and made["id"].startswith("sub_")
    receiver.wait(lambda: receiver.ok_ids() == [1, 2, 3])
    _insert(db, 4, 5)
    receiver.wait(lambda: receiver.ok_ids() == [1, 2, 3, 4, 5])
    for headers, body in receiver.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-pgactions-signature"], expected)
        document = json.loads(body)
        assert document["subscription"] == made["id"] and document["trigger"] == "new_rows"
        assert document["delivery"] == headers["x-pgactions-delivery"]
        assert headers["content-type"] == "application/json"
        assert document["events"][0]["op"] == "insert" and document["events"][0]["table"] == f"{db.schema}.items"
    assert len({h["x-pgactions-delivery"] for h, _ in receiver.requests}) == len(receiver.requests)  # no retries

    def state() -> dict[str, Any]:
        return dict(service.get(f"/v1/subscriptions/{made['id']}").json())

    receiver.wait(lambda: state()["delivered"] == 5)
    shown = state()
    assert shown["status"] == "active" and shown["lastDelivery"] and shown["lastError"] is None
    assert shown["secret"] == "********" and shown["checkpoint"]["position"] == [5]
    listed = service.get("/v1/subscriptions").json()
    assert made["id"] in {s["id"] for s in listed} and all(s["secret"] == "********" for s in listed)
    assert service.client.delete(f"/v1/subscriptions/{made['id']}").status_code == 204


def test_failed_deliveries_are_retried_with_the_same_delivery_id(service: Served, db: TestDB, pg: TestServer,
                                                                 receiver: Receiver) -> None:
    _table(db, service, pg, rows=2)
    receiver.fail = 2
    made = _subscribe(service, db, receiver.url)
    receiver.wait(lambda: len(receiver.requests) == 3)
    deliveries = [h["x-pgactions-delivery"] for h, _ in receiver.requests]
    bodies = [b for _, b in receiver.requests]
    assert len(set(deliveries)) == 1 and len(set(bodies)) == 1  # the same batch, byte for byte
    assert [h["x-pgactions-attempt"] for h, _ in receiver.requests] == ["1", "2", "3"]
    assert receiver.ok_ids() == [1, 2]
    shown = service.get(f"/v1/subscriptions/{made['id']}").json()
    receiver.wait(lambda: service.get(f"/v1/subscriptions/{made['id']}").json()["status"] == "active")
    assert shown["delivered"] in (0, 2)
    time.sleep(1.5)
    assert len(receiver.requests) == 3  # accepted: never sent again
    service.client.delete(f"/v1/subscriptions/{made['id']}")


def test_delete_stops_deliveries(service: Served, db: TestDB, pg: TestServer, receiver: Receiver) -> None:
    _table(db, service, pg, rows=1)
    made = _subscribe(service, db, receiver.url)
    receiver.wait(lambda: receiver.ok_ids() == [1])
    assert service.client.delete(f"/v1/subscriptions/{made['id']}").status_code == 204
    _insert(db, 2, 3)
    time.sleep(3)
    assert receiver.ok_ids() == [1]
    gone = service.get(f"/v1/subscriptions/{made['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
    again = service.client.delete(f"/v1/subscriptions/{made['id']}")
    assert again.status_code == 404


def test_redirects_are_not_followed(service: Served, db: TestDB, pg: TestServer, receiver: Receiver) -> None:
    elsewhere = Receiver()
    try:
        for target in ("http://169.254.169.254/latest/meta-data/", elsewhere.url):
            receiver.requests.clear()
            receiver.redirect = target
            db.sql("DROP TABLE IF EXISTS items")
            _table(db, service, pg, rows=1)
            made = _subscribe(service, db, receiver.url)
            receiver.wait(lambda: len(receiver.requests) >= 2)
            shown = service.get(f"/v1/subscriptions/{made['id']}").json()
            assert shown["status"] == "retrying" and "redirect" in shown["lastError"], shown
            assert shown["delivered"] == 0 and shown["checkpoint"] is None
            assert elsewhere.requests == []
            service.client.delete(f"/v1/subscriptions/{made['id']}")
    finally:
        elsewhere.close()


def test_restart_after_kill_9_resumes_from_the_checkpoint(tmp_path: Path, db: TestDB, pg: TestServer,
                                                          receiver: Receiver) -> None:
    """At least once: killed mid-stream, the service starts again from the stored checkpoint; a row
    is delivered twice only within the batch that was in flight, under the same delivery id."""
    state = tmp_path / "state"
    with serve(state, "--no-auth") as served:
        _table(db, served, pg, rows=40)
        made = _subscribe(served, db, receiver.url, batchSize=5)
        receiver.wait(lambda: len(receiver.ok_ids()) >= 10)
        served.process.kill()  # SIGKILL, mid-stream
        served.process.wait()
    first_run = list(receiver.requests)
    _insert(db, 41, 60)
    with serve(state, "--no-auth") as served:
        receiver.wait(lambda: set(receiver.ok_ids()) == set(range(1, 61)))
        shown = served.get(f"/v1/subscriptions/{made['id']}").json()
        receiver.wait(lambda: served.get(f"/v1/subscriptions/{made['id']}").json()["checkpoint"]["position"] == [60])
        assert shown["status"] == "active"
    ids = receiver.ok_ids()
    assert sorted(set(ids)) == list(range(1, 61))
    # Every delivery id is a batch; a repeated row is only in a batch sent again under its first id.
    by_delivery: dict[str, list[list[int]]] = {}
    for headers, body in receiver.requests:
        by_delivery.setdefault(headers["x-pgactions-delivery"], []).append(
            [e["after"]["id"] for e in json.loads(body)["events"]])
    seen: set[int] = set()
    for batches in by_delivery.values():
        rows = set(batches[0])
        assert not rows & seen, "a row came again in another delivery than the one in flight"
        for again in batches[1:]:
            assert again[: len(batches[0])] == batches[0]  # the same batch, from the same checkpoint
            rows |= set(again)
        seen |= rows
    repeated = [d for d, b in by_delivery.items() if len(b) > 1]
    assert len(repeated) <= 1
    if repeated:  # the batch in flight at the kill: sent before, and again after the restart
        assert any(h["x-pgactions-delivery"] == repeated[0] for h, _ in first_run)
    # The secret never lies in clear in the state directory.
    for path in state.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# -- refusals --------------------------------------------------------------------------------------

def test_metadata_and_link_local_urls_are_refused(service: Served, db: TestDB, pg: TestServer) -> None:
    _table(db, service, pg)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/hook", "http://0.0.0.0:9/",
                "http://[::ffff:169.254.169.254]/"):
        response = service.post("/v1/subscriptions", {"trigger": "new_rows", "connectionId": db.schema, "url": url,
                                                      "inputs": {"table": "items", "orderBy": "id"}})
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "INVALID_CONNECTION" and error["field"] == "url", (url, error)
    for url in ("ftp://example.com/x", "http://user:pw@127.0.0.1/x", "not a url", "http:///nohost"):
        error = service.post("/v1/subscriptions", {"trigger": "new_rows", "connectionId": db.schema, "url": url,
                                                   "inputs": {"table": "items", "orderBy": "id"}}).json()["error"]
        assert error["code"] == "INVALID_CONNECTION" and error["field"] == "url", (url, error)


def test_bad_bodies(service: Served, db: TestDB, pg: TestServer, receiver: Receiver) -> None:
    _table(db, service, pg)
    base = {"trigger": "new_rows", "connectionId": db.schema, "url": receiver.url,
            "inputs": {"table": "items", "orderBy": "id"}}

    def error(body: Any) -> dict[str, Any]:
        return dict(service.post("/v1/subscriptions", body).json()["error"])

    assert error([1])["code"] == "INVALID_INPUT"
    assert error({**base, "extra": 1})["field"] == "extra"
    assert error({k: v for k, v in base.items() if k != "url"})["field"] == "url"
    assert error({**base, "inputs": {"table": "items"}})["code"] == "INVALID_INPUT"
    assert error({**base, "secret": "short"})["field"] == "secret"
    assert error({**base, "trigger": "query_rows"})["code"] == "UNKNOWN_ACTION"
    assert error({**base, "connectionId": "nothing-here"})["code"] == "UNKNOWN_CONNECTION"
    assert error({**base, "inputs": {"table": "no_such_table", "orderBy": "id"}})["code"] == "UNDEFINED_TABLE"
    made = service.post("/v1/subscriptions", base)  # no secret: one is made and shown once
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    assert service.get(f"/v1/subscriptions/{made.json()['id']}").json()["secret"] == "********"
    service.client.delete(f"/v1/subscriptions/{made.json()['id']}")


def test_scoped_keys_may_not_subscribe(tmp_path: Path, db: TestDB, pg: TestServer, receiver: Receiver) -> None:
    with serve(tmp_path / "state") as served:
        served.key = served.create_key("admin")
        _table(db, served, pg)
        scoped = served.create_key("scoped", "--connections", db.schema)
        body = {"trigger": "new_rows", "connectionId": db.schema, "url": receiver.url,
                "inputs": {"table": "items", "orderBy": "id"}}
        refused = served.post("/v1/subscriptions", body, key=scoped)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
        assert served.post("/v1/subscriptions", body, key="pga_wrong").status_code == 401
        assert served.post("/v1/subscriptions", body).status_code == 201
        assert served.get("/v1/triggers", key="").status_code == 401


# -- triggers apart from actions -------------------------------------------------------------------

def test_triggers_are_listed_apart_and_not_runnable(service: Served) -> None:
    listed = service.get("/v1/triggers").json()
    assert [t["id"] for t in listed] == ["new_or_updated_rows", "new_rows", "notification", "row_changes"]
    assert all(t["kind"] == "trigger" for t in listed)
    described = service.get("/v1/triggers/new_rows").json()
    assert described["input"]["required"] == ["table", "orderBy"] and "event" in described
    assert service.get("/v1/triggers/query_rows").json()["error"]["code"] == "UNKNOWN_ACTION"
    actions = {a["id"] for a in service.get("/v1/actions").json()}
    assert "new_rows" not in actions
    run = service.post("/v1/actions/new_rows:run", {"connection": "postgresql://x@127.0.0.1/x", "inputs": {}})
    assert run.status_code == 404 and run.json()["error"]["code"] == "UNKNOWN_ACTION"
    paths = service.get("/openapi.json").json()["paths"]
    assert {"/v1/subscriptions", "/v1/subscriptions/{id}", "/v1/triggers", "/v1/triggers/{id}"} <= set(paths)


# -- units -----------------------------------------------------------------------------------------

def test_check_url_after_dns() -> None:
    table = {"hooks.example.com": ["93.184.216.34"], "rebind.example.com": ["93.184.216.34", "169.254.169.254"],
             "meta.example.com": ["169.254.169.254"]}
    policy = HostPolicy(None, [], resolver=lambda host, port: table[host])
    target = check_url("https://hooks.example.com/in?x=1", policy)
    assert (target.address, target.port, target.target, target.host_header()) == \
        ("93.184.216.34", 443, "/in?x=1", "hooks.example.com")
    assert target.request_url() == "https://93.184.216.34:443/in?x=1"  # pinned: DNS is not asked again
    for url in ("https://rebind.example.com/", "http://meta.example.com/"):
        with pytest.raises(ActionError) as info:
            check_url(url, policy)
        assert info.value.code == "INVALID_CONNECTION" and info.value.payload["field"] == "url"
    allow_only = HostPolicy(["10.0.0.0/8"], [], resolver=lambda host, port: table[host])
    with pytest.raises(ActionError) as outside:
        check_url("https://hooks.example.com/", allow_only)
    assert "allow-hosts" in outside.value.payload["detail"]
    assert sign("k", b"{}") == "sha256=" + hmac.new(b"k", b"{}", hashlib.sha256).hexdigest()
    assert delivery_id("s", 0, None) == delivery_id("s", 0, None) != delivery_id("s", 1, None)


def test_file_store_subscriptions_and_leases(tmp_path: Path) -> None:
    keyring = Keyring(new_secret_key())
    store = FileStore(tmp_path / "state", keyring)
    record = SubscriptionRecord(id="sub_1", trigger="new_rows", connection_id="main", inputs={"table": "t"},
                                url="https://hooks.example.com/x?token=abc", secret=SECRET, created=1.0)
    store.put_subscription(record)
    assert store.get_subscription("sub_1") == record and store.list_subscriptions() == [record]
    assert store.update_subscription("sub_1", checkpoint={"p": 1}, delivered=3)
    assert store.get_subscription("sub_1").checkpoint == {"p": 1}  # type: ignore[union-attr]
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes() and b"token=abc" not in path.read_bytes()
    lease = store.lease_subscription("sub_1")
    assert lease is not None and lease.held()
    other = FileStore(tmp_path / "state", keyring)
    assert other.lease_subscription("sub_1") is None  # one holder, across stores and processes
    lease.release()
    again = other.lease_subscription("sub_1")
    assert again is not None
    assert store.delete_subscription("sub_1") and not store.update_subscription("sub_1", status="active")
    assert store.get_subscription("sub_1") is None  # a late update does not bring it back
    again.release()
    assert not list((tmp_path / "state" / "subscriptions").iterdir()) or \
        all(p.name == ".lock" for p in (tmp_path / "state" / "subscriptions").iterdir())


def test_postgres_store_subscriptions_and_leases(pg: TestServer) -> None:
    import uuid

    import psycopg

    from pgactions.service.pgstore import PostgresStore

    keyring = Keyring(new_secret_key())
    schema = "sub_" + uuid.uuid4().hex[:12]
    url = pg.admin_url
    one, two = PostgresStore(url, keyring, schema=schema), PostgresStore(url, keyring, schema=schema)
    try:
        record = SubscriptionRecord(id="sub_2", trigger="new_rows", connection_id="main", inputs={"table": "t"},
                                    url="https://hooks.example.com/x", secret=SECRET, created=2.0)
        one.put_subscription(record)
        assert two.get_subscription("sub_2") == record and [r.id for r in two.list_subscriptions()] == ["sub_2"]
        assert two.update_subscription("sub_2", status="active", checkpoint={"p": [1]})
        assert one.get_subscription("sub_2").checkpoint == {"p": [1]}  # type: ignore[union-attr]
        with psycopg.connect(url, autocommit=True) as conn:
            stored = conn.execute(f'SELECT record::text FROM "{schema}".subscriptions').fetchall()
        assert SECRET not in stored[0][0]
        lease = one.lease_subscription("sub_2")
        assert lease is not None and lease.held() and two.lease_subscription("sub_2") is None
        lease.release()
        taken = two.lease_subscription("sub_2")
        assert taken is not None
        with psycopg.connect(url, autocommit=True) as conn:  # the holder's session dies: its lease ends
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'pgactions-leases' AND pid <> pg_backend_pid() "
                         "AND backend_start > now() - interval '1 hour'")
        time.sleep(2.5)
        assert not taken.held()
        assert one.lease_subscription("sub_2") is not None
        assert one.delete_subscription("sub_2") and not two.update_subscription("sub_2", status="active")
    finally:
        one.close()
        two.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_notifications_then_sigterm_leaves_no_session(tmp_path: Path, db: TestDB, pg: TestServer,
                                                      receiver: Receiver) -> None:
    """A LISTEN subscription delivers NOTIFYs; SIGTERM ends its thread promptly and closes its session."""
    channel = f"hooks_{db.schema}"
    with serve(tmp_path / "state", "--no-auth") as served:
        _table(db, served, pg)
        made = served.post("/v1/subscriptions", {"trigger": "notification", "connectionId": db.schema,
                                                 "url": receiver.url, "secret": SECRET,
                                                 "inputs": {"channel": channel}})
        assert made.status_code == 201, made.text

        def listening() -> bool:
            return bool(db.sql("SELECT 1 FROM pg_stat_activity WHERE query = %s", [f'LISTEN "{channel}"']))

        receiver.wait(listening)
        db.sql(f"NOTIFY \"{channel}\", 'hello'")
        receiver.wait(lambda: any(e.get("payload") == "hello" for b in receiver.bodies() for e in b["events"]))
        started = time.monotonic()
        assert served.stop() == -15
        assert time.monotonic() - started < 10
    assert not listening()


def test_two_services_on_one_state_run_each_subscription_once(tmp_path: Path, db: TestDB, pg: TestServer,
                                                               receiver: Receiver) -> None:
    """Two processes share the state: the lease lets one deliver; killed, the other takes over."""
    state = tmp_path / "state"
    with serve(state, "--no-auth") as first, serve(state, "--no-auth") as second:
        _table(db, first, pg, rows=10)
        made = _subscribe(first, db, receiver.url, batchSize=3)
        receiver.wait(lambda: receiver.ok_ids() == list(range(1, 11)))
        time.sleep(2.5)  # both processes have looked for subscriptions since
        _insert(db, 11, 20)
        receiver.wait(lambda: receiver.ok_ids() == list(range(1, 21)))
        assert len({h["x-pgactions-delivery"] for h, _ in receiver.requests}) == len(receiver.requests)
        first.process.kill()
        first.process.wait()
        _insert(db, 21, 30)
        receiver.wait(lambda: set(receiver.ok_ids()) == set(range(1, 31)))
        assert second.get(f"/v1/subscriptions/{made['id']}").json()["status"] == "active"
