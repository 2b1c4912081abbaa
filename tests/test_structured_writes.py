"""Update Rows and Delete Rows without SQL, the write guards (maxAffectedRows, dryRun) and the
statement-kind checks of the SQL modes."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime

pytestmark = pytest.mark.pooler_modes


def _users(db) -> list[tuple]:
    return db.sql("SELECT id, name, status FROM users ORDER BY id")


def test_structured_update(runtime: Runtime, guide_db) -> None:
    out = runtime.run("update_rows", guide_db.profile, {
        "table": "users", "set": {"status": "{{ trigger.status }}", "updated_at": "{{ now }}"},
        "where": [{"column": "email", "operator": "eq", "value": "{{ trigger.email }}"}], "returning": True,
    }, {"trigger": {"status": "paused", "email": "john@example.com"}}).data
    assert out["rowCount"] == 1 and out["rows"][0]["status"] == "paused" and out["rows"][0]["updated_at"]
    assert _users(guide_db) == [(1, "John Doe", "paused"), (2, "Mary Major", "inactive")]


@pytest.mark.parametrize(("where", "expected"), [
    ([{"column": "id", "operator": "eq", "value": "2"}], [2]),  # text compared with an integer column
    ([{"column": "name", "operator": "ne", "value": "John Doe"}], [2]),
    ([{"column": "id", "operator": "gt", "value": 1}], [2]),
    ([{"column": "id", "operator": "gte", "value": 1}], [1, 2]),
    ([{"column": "id", "operator": "lt", "value": 2}], [1]),
    ([{"column": "created_at", "operator": "lte", "value": "2026-01-12T00:00:00Z"}], [2]),
    ([{"column": "id", "operator": "in", "value": [2, 3]}], [2]),
    ([{"column": "last_login", "operator": "is null"}], [1, 2]),
    ([{"column": "last_login", "operator": "is not null"}], []),
    ([{"column": "email", "operator": "like", "value": "mary@%"}], [2]),
    ([{"column": "name", "operator": "ilike", "value": "%DOE"}], [1]),
    ([{"column": "status", "value": "active"}, {"column": "id", "operator": "lt", "value": 5}], [1]),
    ([{"or": [{"column": "id", "value": 1}, {"column": "status", "value": "inactive"}]}], [1, 2]),
    ([{"and": [{"column": "id", "value": 1}, {"or": [{"column": "status", "value": "x"},
                                                       {"column": "name", "operator": "like", "value": "J%"}]}]}], [1]),
])
def test_every_operator(runtime: Runtime, guide_db, where, expected) -> None:
    out = runtime.run("update_rows", guide_db.profile, {"table": "users", "set": {"status": "hit"}, "where": where,
                                                        "returning": True}).data
    assert sorted(r["id"] for r in out["rows"]) == expected
    assert sorted(r[0] for r in guide_db.sql("SELECT id FROM users WHERE status = 'hit'")) == expected


def test_structured_delete_and_the_all_rows_guard(runtime: Runtime, guide_db) -> None:
    guide_db.sql("DELETE FROM sessions; DELETE FROM orders")
    with pytest.raises(ActionError) as info:
        runtime.run("delete_rows", guide_db.profile, {"table": "users"})
    assert info.value.code == "INVALID_INPUT" and "allowAllRows" in info.value.payload["detail"]
    with pytest.raises(ActionError):
        runtime.run("update_rows", guide_db.profile, {"table": "users", "set": {"status": "x"}, "where": []})
    assert len(_users(guide_db)) == 2 and {u[2] for u in _users(guide_db)} == {"active", "inactive"}
    out = runtime.run("delete_rows", guide_db.profile, {"table": "users", "where": [
        {"column": "status", "value": "inactive"}]}).data
    assert out == {"rowCount": 1}
    assert runtime.run("delete_rows", guide_db.profile, {"table": "users", "allowAllRows": True}).data == {"rowCount": 1}
    assert _users(guide_db) == []


def test_structured_mode_errors_are_named(runtime: Runtime, guide_db) -> None:
    def fail(action: str, inputs: dict) -> dict:
        with pytest.raises(ActionError) as info:
            runtime.run(action, guide_db.profile, inputs)
        return info.value.payload

    err = fail("update_rows", {"table": "users", "set": {"nmae": "x"}, "where": [{"column": "id", "value": 1}]})
    assert err["code"] == "UNDEFINED_COLUMN" and err["field"] == "set"
    err = fail("delete_rows", {"table": "users", "where": [{"column": "idd", "value": 1}]})
    assert err["code"] == "UNDEFINED_COLUMN" and err["field"] == "where/0/column"
    err = fail("delete_rows", {"table": "users", "where": [{"column": "id", "operator": "between", "value": 1}]})
    assert err["code"] == "INVALID_INPUT"
    err = fail("delete_rows", {"table": "users", "where": [{"column": "id", "operator": "eq", "value": None}]})
    assert err["code"] == "INVALID_INPUT" and "is null" in err["detail"]
    err = fail("delete_rows", {"query": "DELETE FROM users", "table": "users"})
    assert err["code"] == "INVALID_INPUT" and "not both" in err["detail"]
    err = fail("delete_rows", {"where": [{"column": "id", "value": 1}]})
    assert err["code"] == "INVALID_INPUT"
    assert len(_users(guide_db)) == 2


def test_max_affected_rows_rolls_back(runtime: Runtime, guide_db) -> None:
    guide_db.sql("INSERT INTO logs (level) SELECT 'debug' FROM generate_series(1, 50)")
    for action, inputs in [
        ("delete_rows", {"query": "DELETE FROM logs WHERE level = $1", "parameters": ["debug"]}),
        ("delete_rows", {"table": "logs", "where": [{"column": "level", "value": "debug"}]}),
        ("update_rows", {"table": "logs", "set": {"level": "x"}, "allowAllRows": True}),
        ("execute_query", {"query": "DELETE FROM logs"}),
    ]:
        with pytest.raises(ActionError) as info:
            runtime.run(action, guide_db.profile, {**inputs, "maxAffectedRows": 10})
        error = info.value.payload
        assert error["code"] == "MAX_AFFECTED_ROWS" and error["rowCount"] == 50 and error["maxAffectedRows"] == 10
        assert guide_db.sql("SELECT count(*) FROM logs WHERE level = 'debug'") == [(50,)]
    out = runtime.run("delete_rows", guide_db.profile, {"query": "DELETE FROM logs", "maxAffectedRows": 50}).data
    assert out == {"rowCount": 50}


def test_dry_run_reports_and_rolls_back(runtime: Runtime, guide_db) -> None:
    out = runtime.run("update_rows", guide_db.profile, {"table": "users", "set": {"status": "gone"},
                                                        "allowAllRows": True, "returning": True, "dryRun": True}).data
    assert out["rowCount"] == 2 and out["dryRun"] is True and {r["status"] for r in out["rows"]} == {"gone"}
    out = runtime.run("insert_rows", guide_db.profile, {"table": "logs", "rows": [{"level": "a"}, {"level": "b"}],
                                                        "dryRun": True}).data
    assert out == {"rowCount": 2, "dryRun": True}
    out = runtime.run("insert_row", guide_db.profile, {"table": "logs", "columns": {"level": "c"}, "dryRun": True}).data
    assert out["dryRun"] is True and out["rowCount"] == 1
    assert {u[2] for u in _users(guide_db)} == {"active", "inactive"}
    assert guide_db.sql("SELECT count(*) FROM logs") == [(0,)]
    # The session is healthy afterwards: a real write sticks.
    runtime.run("insert_row", guide_db.profile, {"table": "logs", "columns": {"level": "real"}})
    assert guide_db.sql("SELECT level FROM logs") == [("real",)]


@pytest.mark.parametrize(("action", "query", "words"), [
    ("update_rows", "DELETE FROM users", "Update Rows runs an UPDATE statement; this query is DELETE"),
    ("update_rows", "SELECT 1", "this query is SELECT"),
    ("delete_rows", "UPDATE users SET status = 'x'", "Delete Rows runs a DELETE statement; this query is UPDATE"),
    ("delete_rows", "TRUNCATE users", "this query is TRUNCATE"),
    ("query_rows", "INSERT INTO logs (level) VALUES ('x')", "this query is INSERT"),
    ("query_rows", "SELECT 1; DELETE FROM users", "holds 2 statements"),
    ("update_rows", "UPDATE users SET status = 'a'; DELETE FROM users", "holds 2 statements"),
])
def test_sql_modes_run_only_their_kind_of_statement(runtime: Runtime, guide_db, action, query, words) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run(action, guide_db.profile, {"query": query})
    assert info.value.code == "INVALID_INPUT" and words in info.value.payload["detail"]
    assert _users(guide_db) == [(1, "John Doe", "active"), (2, "Mary Major", "inactive")]


def test_sql_modes_accept_their_kind(runtime: Runtime, guide_db) -> None:
    out = runtime.run("update_rows", guide_db.profile, {
        "query": "WITH t AS (SELECT 1 AS id) UPDATE users SET status = 'x' FROM t WHERE users.id = t.id"}).data
    assert out == {"rowCount": 1}
    assert runtime.run("query_rows", guide_db.profile, {"query": "VALUES (1)"}).data["rowCount"] == 1
    assert runtime.run("query_rows", guide_db.profile, {"query": "EXPLAIN SELECT * FROM users"}).data["rowCount"] > 0
    out = runtime.run("execute_query", guide_db.profile, {"query": "UPDATE users SET status = 'y'; DELETE FROM sessions"}).data
    assert out["success"] is True
