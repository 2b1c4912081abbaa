"""The records API over real HTTP: PostgREST's grammar on a stored connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import APP_PASSWORD, TestDB, TestServer
from .serving import Served, serve


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("records") / "state", "--no-auth") as served:
        yield served


@pytest.fixture
def people(service: Served, db: TestDB, pg: TestServer) -> str:
    db.sql("CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, age int, status text, "
           "created_at date)")
    db.sql("INSERT INTO people VALUES (1, 'John', 34, 'active', '2026-01-01'), (2, 'Joanna', 17, 'new', "
           "'2026-02-01'), (3, 'Mary', 51, 'inactive', '2026-03-01'), (4, 'Jo', 18, NULL, NULL)")
    db.sql("CREATE FUNCTION add_up(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'")
    profile = {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
               "password": APP_PASSWORD, "sslMode": "disable", "schema": db.schema}
    assert service.client.put(f"/v1/connections/{db.schema}", json=profile).status_code == 201
    return f"/v1/db/{db.schema}/tables/{db.schema}.people"


def test_read_with_filters_order_and_limit(service: Served, people: str) -> None:
    response = service.get(f"{people}?select=id,name&age=gte.18&status=in.(active,inactive)&order=age.desc&limit=50")
    assert response.status_code == 200
    assert response.json() == [{"id": 3, "name": "Mary"}, {"id": 1, "name": "John"}]
    assert response.headers["content-range"] == "0-1/*"
    like = service.get(f"{people}?select=name&name=ilike.*jo*&order=name").json()
    assert [r["name"] for r in like] == ["Jo", "Joanna", "John"]
    nulls = service.get(f"{people}?select=id&status=is.null").json()
    assert nulls == [{"id": 4}]
    either = service.get(f"{people}?select=id&or=(age.lt.18,name.eq.Mary)&order=id").json()
    assert either == [{"id": 2}, {"id": 3}]


def test_exact_count(service: Served, people: str) -> None:
    response = service.get(f"{people}?select=id&order=id&limit=2", Prefer="count=exact")
    assert response.headers["content-range"] == "0-1/4" and len(response.json()) == 2


def test_unknown_operator_and_column_are_422(service: Served, people: str) -> None:
    operator = service.get(f"{people}?age=near.18")
    assert operator.status_code == 422 and "near" in operator.json()["error"]["detail"]
    column = service.get(f"{people}?shoe_size=eq.9")
    assert column.status_code == 422 and "shoe_size" in column.json()["error"]["detail"]


def test_insert_upsert_update_delete(service: Served, people: str, db: TestDB) -> None:
    created = service.post(people, {"id": 5, "name": "Ann", "age": 40}, Prefer="return=representation")
    assert created.status_code == 201 and created.json()[0]["name"] == "Ann"
    many = service.post(people, [{"id": 6, "name": "Bo"}, {"id": 7, "name": "Cy"}])
    assert many.status_code == 201 and many.content == b""
    merged = service.post(people, [{"id": 6, "name": "Bob"}], Prefer="resolution=merge-duplicates")
    assert merged.status_code == 201
    assert db.sql("SELECT name FROM people WHERE id = 6") == [("Bob",)]
    patched = service.client.patch(f"{people}?id=eq.7", json={"age": 9})
    assert patched.status_code == 204 and db.sql("SELECT age FROM people WHERE id = 7") == [(9,)]
    unfiltered = service.client.delete(people)
    assert unfiltered.status_code == 422 and unfiltered.json()["error"]["code"] == "INVALID_INPUT"
    deleted = service.client.delete(f"{people}?id=in.(5,6,7)")
    assert deleted.status_code == 204 and db.sql("SELECT count(*) FROM people") == [(4,)]
    duplicate = service.post(people, {"id": 1, "name": "again"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "UNIQUE_VIOLATION"


def test_rpc_and_catalog(service: Served, people: str, db: TestDB) -> None:
    base = f"/v1/db/{db.schema}"
    added = service.post(f"{base}/rpc/{db.schema}.add_up", {"a": 2, "b": 40})
    assert added.status_code == 200 and "42" in added.text
    tables = service.get(f"{base}/tables?schema={db.schema}").json()
    assert "people" in {t["name"] for t in tables}
    assert db.schema in {s["name"] for s in service.get(f"{base}/schemas").json()}
    metadata = service.get(f"{people}/metadata").json()
    assert "id" in {c["name"] for c in metadata["columns"]}
    assert "add_up" in {f["name"] for f in service.get(f"{base}/functions?schema={db.schema}").json()}


def test_unknown_connection_is_404(service: Served) -> None:
    response = service.get("/v1/db/nowhere/tables/public.x")
    assert response.status_code == 404 and response.json()["error"]["code"] == "UNKNOWN_CONNECTION"
