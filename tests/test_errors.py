"""Every failure mode of the guide, provoked for real, mapped to its code with cause and fix."""

from __future__ import annotations

import threading

import psycopg
import pytest

from pgactions import ERROR_CATALOG, ActionError, Runtime
from pgactions.db.errormap import code_for_sqlstate, map_exception


def fail(runtime: Runtime, action: str, connection, inputs, context=None) -> dict:
    with pytest.raises(ActionError) as info:
        runtime.run(action, connection, inputs, context)
    payload = info.value.payload
    assert payload["code"] in ERROR_CATALOG
    assert payload["message"] and payload["cause"] and payload["fix"]
    return payload


SELECT_ONE = {"query": "SELECT 1 AS one"}


def test_role_without_grants(runtime: Runtime, pg, guide_db) -> None:
    guide_db.sql(f'GRANT USAGE ON SCHEMA "{guide_db.schema}" TO noaccess')  # sees the schema, no table rights
    profile = {"url": pg.url("noaccess", password="noaccess-pw"), "schema": guide_db.schema, "sslMode": "disable"}
    err = fail(runtime, "query_rows", profile, {"query": "SELECT * FROM users"})
    assert err["code"] == "PERMISSION_DENIED" and err["sqlstate"] == "42501"


def test_bad_syntax_reports_position(runtime: Runtime, db) -> None:
    err = fail(runtime, "query_rows", db.profile, {"query": "SELECT id FORM users"})
    assert err["code"] == "SYNTAX_ERROR" and err["sqlstate"] == "42601"
    assert err["position"] == 16  # 1-based: "FORM" reads as an alias, so "users" is where it breaks


def test_sleep_past_the_timeout(runtime: Runtime, db) -> None:
    err = fail(runtime, "query_rows", db.profile, {"query": "SELECT pg_sleep(5)", "timeout": 0.5})
    assert err["code"] == "QUERY_TIMEOUT" and err["sqlstate"] == "57014"
    # The pool is healthy afterwards and the next action gets the default timeout back.
    assert runtime.run("query_rows", db.profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]


@pytest.mark.pooler_modes
def test_undefined_table_and_column(runtime: Runtime, guide_db) -> None:
    assert fail(runtime, "query_rows", guide_db.profile, {"query": "SELECT * FROM userz"})["code"] == "UNDEFINED_TABLE"
    assert fail(runtime, "query_rows", guide_db.profile, {"query": "SELECT nme FROM users"})["code"] == "UNDEFINED_COLUMN"
    err = fail(runtime, "insert_row", guide_db.profile, {"table": "users", "columns": {"nme": "x"}})
    assert err["code"] == "UNDEFINED_COLUMN" and "email" in err["detail"]
    err = fail(runtime, "insert_row", guide_db.profile, {"table": "userz", "columns": {"name": "x"}})
    assert err["code"] == "UNDEFINED_TABLE"
    err = fail(runtime, "insert_row", guide_db.profile, {"table": f"{guide_db.schema}.users", "columns": {"name": "x"}})
    assert err["code"] == "UNDEFINED_TABLE" and "schema field" in err["detail"]
    out = runtime.run("insert_row", guide_db.profile, {"schema": guide_db.schema, "table": "users",
                                                       "columns": {"name": "x", "email": "x@example.com"}}).data
    assert out["insertedId"] == 3


@pytest.mark.pooler_modes
@pytest.mark.parametrize("columns, code", [
    ({"name": "Dup", "email": "john@example.com"}, "UNIQUE_VIOLATION"),
    ({"email": "nobody@example.com"}, "NOT_NULL_VIOLATION"),
])
def test_constraint_violations_leave_the_table_unchanged(runtime: Runtime, guide_db, columns, code) -> None:
    before = guide_db.sql("SELECT * FROM users ORDER BY id")
    err = fail(runtime, "insert_row", guide_db.profile, {"table": "users", "columns": columns})
    assert err["code"] == code
    assert err["table"] == "users"
    assert guide_db.sql("SELECT * FROM users ORDER BY id") == before


def test_foreign_key_and_check_violations(runtime: Runtime, guide_db) -> None:
    err = fail(runtime, "insert_row", guide_db.profile, {"table": "orders", "columns": {"user_id": 999, "total": 1}})
    assert err["code"] == "FOREIGN_KEY_VIOLATION"
    err = fail(runtime, "insert_row", guide_db.profile, {"table": "orders", "columns": {"user_id": 1, "total": -5}})
    assert err["code"] == "CHECK_VIOLATION" and err["constraint"] == "orders_total_check"
    assert guide_db.sql("SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.pooler_modes
def test_failed_multi_row_update_rolls_back(runtime: Runtime, guide_db) -> None:
    # The second row breaks the unique key: the first row's change must not survive either.
    err = fail(runtime, "update_rows", guide_db.profile, {
        "query": "UPDATE users SET email = 'same@example.com' WHERE id = ANY($1::int[])", "parameters": [[1, 2]]})
    assert err["code"] == "UNIQUE_VIOLATION"
    assert guide_db.sql("SELECT email FROM users ORDER BY id") == [("john@example.com",), ("mary@example.com",)]


@pytest.mark.pooler_modes
def test_invalid_value(runtime: Runtime, guide_db) -> None:
    err = fail(runtime, "query_rows", guide_db.profile, {"query": "SELECT * FROM users WHERE id = $1::int",
                                                         "parameters": ["abc"]})
    assert err["code"] == "INVALID_VALUE" and err["sqlstate"] == "22P02"


@pytest.mark.pooler_modes
def test_query_rows_is_read_only(runtime: Runtime, guide_db) -> None:
    # PostgreSQL's parser (pglast) refuses writes before anything reaches the server …
    for query in ("DELETE FROM users", "WITH d AS (DELETE FROM users RETURNING 1) SELECT * FROM d",
                  "SELECT * FROM users FOR UPDATE"):
        err = fail(runtime, "query_rows", guide_db.profile, {"query": query})
        assert err["code"] == "INVALID_INPUT" and "Query Rows runs a query that reads" in err["detail"]
    # … and the read-only transaction catches what a parser cannot see (a function that writes).
    err = fail(runtime, "query_rows", guide_db.profile, {"query": "SELECT nextval('users_id_seq')"})
    assert err["code"] == "READ_ONLY_VIOLATION"
    assert guide_db.sql("SELECT count(*) FROM users") == [(2,)]


def test_deadlock_is_reported_and_retryable(runtime: Runtime, guide_db, pg) -> None:
    """Two transactions lock rows 1 and 2 in opposite orders; ours waits first, so it is the victim."""
    with psycopg.connect(pg.url()) as other:
        other.execute(f'SET search_path = "{guide_db.schema}"')
        other.execute("UPDATE users SET name = name WHERE id = 2")  # holds row 2, transaction open
        blocker = threading.Thread(target=_lock_row_one_later, args=(other,))
        blocker.start()
        try:
            # Locks row 1, then waits for row 2; a second later `other` waits for row 1.
            err = fail(runtime, "execute_query", guide_db.profile, {"query": """
                WITH a AS (UPDATE users SET name = name WHERE id = 1 RETURNING pg_sleep(0.1))
                UPDATE users SET name = name WHERE id = 2 AND EXISTS (SELECT 1 FROM a)"""})
        finally:
            blocker.join()
            other.rollback()
    assert err["code"] == "DEADLOCK" and err["retryable"] is True and err["sqlstate"] == "40P01"


def _lock_row_one_later(conn: psycopg.Connection) -> None:
    import time

    time.sleep(1.0)
    try:
        conn.execute("UPDATE users SET name = name WHERE id = 1")
    except psycopg.Error:
        conn.rollback()


def test_unknown_action_lists_known_ones(runtime: Runtime, db) -> None:
    err = fail(runtime, "query_row", db.profile, SELECT_ONE)
    assert err["code"] == "UNKNOWN_ACTION" and "query_rows" in err["knownActions"]


def test_invalid_input_lists_every_problem(runtime: Runtime, db) -> None:
    err = fail(runtime, "insert_row", db.profile, {"columns": {}, "colour": "red", "timeout": -1})
    assert err["code"] == "INVALID_INPUT"
    paths = {e["path"] for e in err["errors"]}
    assert {"(input)", "columns", "timeout"} <= paths
    assert any("table" in e["message"] for e in err["errors"])
    assert any("colour" in e["message"] for e in err["errors"])


def test_timeout_above_the_maximum(runtime: Runtime, db) -> None:
    err = fail(runtime, "query_rows", db.profile, {"query": "SELECT 1", "timeout": 61})
    assert err["code"] == "INVALID_INPUT" and err["field"] == "timeout"


def test_every_sqlstate_maps_to_a_catalogued_code() -> None:
    """A guard: no driver exception class escapes the boundary unmapped."""
    from psycopg import errors

    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, psycopg.Error) and getattr(cls, "sqlstate", None):
            assert code_for_sqlstate(cls.sqlstate) in ERROR_CATALOG, cls
            mapped = map_exception(cls("boom"), connecting=False)
            assert mapped.code in ERROR_CATALOG
    for cls in (psycopg.OperationalError, psycopg.InterfaceError, psycopg.DataError, psycopg.ProgrammingError):
        assert map_exception(cls("x"), connecting=False).code in ERROR_CATALOG


@pytest.mark.parametrize("sqlstate, code", [
    ("23505", "UNIQUE_VIOLATION"), ("23P01", "INVALID_VALUE"), ("22003", "INVALID_VALUE"),
    ("42P01", "UNDEFINED_TABLE"), ("42883", "UNDEFINED_FUNCTION"), ("42804", "INVALID_VALUE"), ("40P01", "DEADLOCK"),
    ("40001", "SERIALIZATION_FAILURE"), ("08006", "CONNECTION_LOST"), ("XX000", "DATABASE_ERROR"),
])
def test_exact_code_first_then_class(sqlstate, code) -> None:
    assert code_for_sqlstate(sqlstate) == code


def test_unmapped_server_error_keeps_its_sqlstate(runtime: Runtime, db) -> None:
    err = fail(runtime, "execute_query", db.profile, {"query": "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'custom failure'; END $$"})
    assert err["code"] == "DATABASE_ERROR" and err["sqlstate"] == "P0001"
    assert "custom failure" in err["detail"]


@pytest.mark.parametrize("connection, action, inputs, context", [
    (None, "query_rows", {"query": "SELECT 1"}, None),
    (42, "query_rows", {"query": "SELECT 1"}, None),
    ("not a url", "query_rows", {"query": "SELECT 1"}, None),
    ("postgresql://u@127.0.0.1:notaport/db", "query_rows", {"query": "SELECT 1"}, None),
    ({"host": ["x"]}, "query_rows", {"query": "SELECT 1"}, None),
    ("DB", "query_rows", {"query": "SELECT 1", "timeout": "soon"}, None),
    ("DB", "query_rows", {"query": "SELECT 1", "parameters": "abc"}, None),
    ("DB", "query_rows", [1, 2], None),
    ("DB", "query_rows", {"query": "SELECT 1"}, ["not", "an", "object"]),
    ("DB", "query_rows", {"query": "SELECT $1", "parameters": [{1, 2}]}, None),
    ("DB", "query_rows", {"query": "SELECT 'unterminated"}, None),
    ("DB", "insert_row", {"table": "users", "columns": {"name": "{{ trigger.a.b.c }}"}}, {"trigger": {"a": 1}}),
    ("DB", "update_rows", {"query": "UPDATE users SET name = 'x' WHERE id = 1; DROP TABLE users"}, None),
    ("DB", "query_rows", {"query": "SELECT 1; DROP TABLE users"}, None),
    ("DB", "execute_query", {"query": "SELECT $1::int; DROP TABLE users", "parameters": [1]}, None),
    ("DB", "upsert_row", {"table": "users", "columns": {"name": "x"}, "conflictColumns": ["name"]}, None),
])
def test_bad_input_is_always_a_coded_error(runtime: Runtime, guide_db, connection, action, inputs, context) -> None:
    if connection == "DB":
        connection = guide_db.profile
    err = fail(runtime, action, connection, inputs, context)
    assert err["code"] in ("INVALID_INPUT", "INVALID_VALUE", "TEMPLATE_ERROR", "SYNTAX_ERROR", "INVALID_CONNECTION")
    assert guide_db.sql("SELECT count(*) FROM users") == [(2,)]


@pytest.mark.pooler_modes
def test_execute_query_runs_a_script_all_or_nothing(runtime: Runtime, guide_db) -> None:
    out = runtime.run("execute_query", guide_db.profile, {"query": """
        CREATE TABLE audit (id serial PRIMARY KEY, note text);
        INSERT INTO audit (note) VALUES ('a'), ('b');
        SELECT note FROM audit ORDER BY id"""}).data
    assert out == {"rows": [{"note": "a"}, {"note": "b"}], "success": True, "rowCount": 2}
    err = fail(runtime, "execute_query", guide_db.profile, {
        "query": "INSERT INTO audit (note) VALUES ('c'); INSERT INTO audit (id) VALUES (1)"})
    assert err["code"] == "UNIQUE_VIOLATION"
    assert guide_db.sql("SELECT count(*) FROM audit") == [(2,)]


def test_execute_query_runs_statements_that_refuse_transactions(runtime: Runtime, guide_db) -> None:
    for query in ("CREATE INDEX CONCURRENTLY idx_users_name ON users (name)", "VACUUM ANALYZE users"):
        assert runtime.run("execute_query", guide_db.profile, {"query": query}).data == {"success": True, "rowCount": 0}


def test_pgbouncer_mode_runs_statements_that_refuse_transactions(runtime: Runtime, pgbouncer, guide_db) -> None:
    """Behind a transaction pooler each action is a transaction of its own; VACUUM and CREATE INDEX
    CONCURRENTLY refuse one, so they run alone.  Outside our transaction the profile's schema is
    not on the search path (a pooler keeps no session settings): such statements name it."""
    profile = {**guide_db.profile, "url": guide_db.profile["url"].replace(f":{guide_db.server.port}/",
                                                                         f":{pgbouncer.port}/"), "pgbouncer": True}
    schema = guide_db.schema
    for query in (f'CREATE INDEX CONCURRENTLY idx_users_name ON "{schema}".users (name)', f'VACUUM ANALYZE "{schema}".users'):
        assert runtime.run("execute_query", profile, {"query": query}).data == {"success": True, "rowCount": 0}
    assert guide_db.sql("SELECT indexname FROM pg_indexes WHERE indexname = 'idx_users_name'") == [("idx_users_name",)]


def test_a_transaction_a_script_leaves_open_is_not_committed(runtime: Runtime, guide_db) -> None:
    """Transaction control in a script is refused before anything runs (the runtime decides
    where an action's transaction ends)."""
    with pytest.raises(ActionError) as info:
        runtime.run("execute_query", guide_db.profile, {"query": "BEGIN; INSERT INTO logs (level) VALUES ('x')"})
    assert info.value.code == "INVALID_INPUT" and "BEGIN" in info.value.payload["detail"]
    assert guide_db.sql("SELECT count(*) FROM logs") == [(0,)]
    assert runtime.run("query_rows", guide_db.profile, {"query": "SELECT count(*) AS n FROM logs"}).data["rows"] == [{"n": 0}]
