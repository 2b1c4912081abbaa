"""Runtime.run(…, role=…): the action runs as that role inside its transaction (SET LOCAL ROLE), so
row-level security applies, and the role is gone afterwards (PostgREST's authenticator model)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pgactions import ActionError, Runtime

from .conftest import TestServer


@pytest.fixture
def authenticator(pg: TestServer) -> Iterator[dict[str, Any]]:
    """A login role with no privileges of its own (NOINHERIT), granted two web roles; a table with
    row-level security that shows each web role its own tenant's rows."""
    tag = uuid.uuid4().hex[:8]
    login, alice, bob, schema = f"auth_{tag}", f"alice_{tag}", f"bob_{tag}", f"rls_{tag}"
    with pg.admin() as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN NOINHERIT PASSWORD 'auth-pw-{tag}'")
        conn.execute(f"CREATE ROLE {alice} NOLOGIN")
        conn.execute(f"CREATE ROLE {bob} NOLOGIN")
        conn.execute(f"GRANT {alice}, {bob} TO {login}")
        conn.execute(f"GRANT CONNECT ON DATABASE pgactions_test TO {login}")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {alice}, {bob}, {login}")
        conn.execute(f"CREATE TABLE {schema}.notes (id int PRIMARY KEY, owner text NOT NULL, body text)")
        conn.execute(f"ALTER TABLE {schema}.notes ENABLE ROW LEVEL SECURITY")
        conn.execute(f"CREATE POLICY own ON {schema}.notes USING (owner = current_user) "
                     f"WITH CHECK (owner = current_user)")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.notes TO {alice}, {bob}")
        conn.execute(f"INSERT INTO {schema}.notes VALUES (1, '{alice}', 'a1'), (2, '{alice}', 'a2'), "
                     f"(3, '{bob}', 'b1')")
    url = f"postgresql://{login}:auth-pw-{tag}@{pg.host}:{pg.port}/pgactions_test?sslmode=disable"
    yield {"profile": {"url": url, "schema": schema}, "alice": alice, "bob": bob, "schema": schema}
    with pg.admin() as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        for role in (alice, bob, login):
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_role_applies_row_level_security(runtime: Runtime, authenticator: dict[str, Any]) -> None:
    query = {"query": "SELECT id, current_user AS who FROM notes ORDER BY id"}
    alice = runtime.run("query_rows", authenticator["profile"], query, role=authenticator["alice"]).data
    bob = runtime.run("query_rows", authenticator["profile"], query, role=authenticator["bob"]).data
    assert [r["id"] for r in alice["rows"]] == [1, 2]
    assert [r["id"] for r in bob["rows"]] == [3]
    assert {r["who"] for r in bob["rows"]} == {authenticator["bob"]}


def test_role_ends_with_the_action(runtime: Runtime, authenticator: dict[str, Any]) -> None:
    runtime.run("query_rows", authenticator["profile"], {"query": "SELECT 1"}, role=authenticator["alice"])
    # The same pooled connection, no role: the login role has no privileges of its own.
    with pytest.raises(ActionError) as caught:
        runtime.run("query_rows", authenticator["profile"], {"query": "SELECT * FROM notes"})
    assert caught.value.code == "PERMISSION_DENIED"


def test_reset_role_in_the_query_gains_nothing(runtime: Runtime, authenticator: dict[str, Any]) -> None:
    with pytest.raises(ActionError) as caught:
        runtime.run("execute_query", authenticator["profile"],
                    {"query": "RESET ROLE; SELECT count(*) FROM notes"}, role=authenticator["alice"])
    assert caught.value.code == "PERMISSION_DENIED"


def test_writes_are_checked_by_the_policy(runtime: Runtime, authenticator: dict[str, Any]) -> None:
    profile, bob = authenticator["profile"], authenticator["bob"]
    with pytest.raises(ActionError) as caught:
        runtime.run("insert_row", profile, {"table": "notes", "columns": {"id": 9, "owner": authenticator["alice"]}},
                    role=bob)
    assert caught.value.code == "PERMISSION_DENIED"  # the policy's WITH CHECK
    out = runtime.run("insert_row", profile, {"table": "notes", "columns": {"id": 9, "owner": bob}}, role=bob).data
    assert out["rowCount"] == 1
    gone = runtime.run("delete_rows", profile, {"table": "notes", "where": [{"column": "id", "operator": "eq", "value": 1}]}, role=bob).data
    assert gone["rowCount"] == 0  # alice's row is invisible to bob, so nothing is deleted


def test_claims_reach_policies_for_the_transaction_only(runtime: Runtime, db: Any) -> None:
    db.sql("CREATE TABLE docs (id int PRIMARY KEY, tenant text NOT NULL)")
    db.sql("INSERT INTO docs VALUES (1, 'acme'), (2, 'globex'), (3, 'acme')")
    db.sql("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    db.sql("ALTER TABLE docs FORCE ROW LEVEL SECURITY")
    db.sql("CREATE POLICY by_tenant ON docs USING (tenant = nullif(current_setting('pgactions.auth', true), '')::jsonb ->> 'tenant')")
    seen = runtime.run("find_rows", db.profile, {"table": "docs"}, claims={"tenant": "acme"}).data
    assert [r["id"] for r in seen["rows"]] == [1, 3]
    assert runtime.run("find_rows", db.profile, {"table": "docs"}).data["rows"] == []
    read = runtime.run("query_rows", db.profile, {
        "query": "SELECT current_setting('pgactions.auth', true)::jsonb ->> 'tenant' AS tenant"},
        claims={"tenant": "acme"}).data
    assert read["rows"] == [{"tenant": "acme"}]
    after = runtime.run("query_rows", db.profile, {
        "query": "SELECT coalesce(current_setting('pgactions.auth', true), '') AS claims"}).data
    assert after["rows"] == [{"claims": ""}]  # gone with the transaction that had it
