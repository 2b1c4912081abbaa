"""One action's session state never reaches the next.  The profile allows one connection, so every
action runs on the same server session (checked with pg_backend_pid()); whatever a user's SQL
changed on it (search_path, role, timeouts, temp tables, locks, LISTEN, cursors, prepared
statements, application_name) is gone when the next action starts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pgactions import ActionError, Runtime


@pytest.fixture
def one(db) -> dict[str, Any]:
    """A profile with a single pooled connection: each action reuses the same server session."""
    return {**db.profile, "maxConnections": 1}


@pytest.fixture
def other_schema(db) -> Iterator[str]:
    """A second schema with its own table w (the test's schema has one too)."""
    name = "st_" + uuid.uuid4().hex[:10]
    db.sql(f'CREATE SCHEMA "{name}"; CREATE TABLE "{name}".w (v text); CREATE TABLE w (v text)')
    yield name
    db.sql(f'DROP SCHEMA "{name}" CASCADE')


def _pid(runtime: Runtime, profile: dict[str, Any]) -> int:
    return runtime.run("query_rows", profile, {"query": "SELECT pg_backend_pid() AS pid"}).data["rows"][0]["pid"]


def _value(runtime: Runtime, profile: dict[str, Any], query: str) -> Any:
    rows = runtime.run("query_rows", profile, {"query": query}).data["rows"]
    return next(iter(rows[0].values()))


def _where_rows_are(db, schema: str) -> tuple[int, int]:
    own = db.sql("SELECT count(*) FROM w")[0][0]
    other = db.sql(f'SELECT count(*) FROM "{schema}".w')[0][0]
    return own, other


@pytest.mark.parametrize("action,query", [
    ("execute_query", "SET search_path TO {schema}, public"),
    ("query_rows", "SELECT set_config('search_path', '{schema}, public', false)"),
    ("execute_query", "SELECT set_config('search_path', '{schema}, public', false)"),
])
def test_search_path_does_not_reach_the_next_action(runtime: Runtime, db, one, other_schema: str,
                                                    action: str, query: str) -> None:
    pid = _pid(runtime, one)
    runtime.run(action, one, {"query": query.format(schema=other_schema)})
    runtime.run("insert_row", one, {"table": "w", "columns": {"v": "here"}})
    assert _pid(runtime, one) == pid
    assert _where_rows_are(db, other_schema) == (1, 0)
    assert _value(runtime, one, "SELECT (current_schemas(false))[1] AS s") == db.schema


def test_search_path_set_in_a_transaction_step_does_not_reach_the_next_action(
        runtime: Runtime, db, one, other_schema: str) -> None:
    pid = _pid(runtime, one)
    out = runtime.run("run_transaction", one, {"steps": [
        {"action": "execute_query", "inputs": {"query": f"SET search_path TO {other_schema}, public"}},
        {"action": "insert_row", "inputs": {"table": "w", "columns": {"v": "inside"}}},
    ]}).data
    assert out["committed"] is True
    assert _where_rows_are(db, other_schema) == (0, 1)  # inside the transaction the SET applied
    runtime.run("insert_row", one, {"table": "w", "columns": {"v": "after"}})
    assert _pid(runtime, one) == pid
    assert _where_rows_are(db, other_schema) == (1, 1)


def test_search_path_set_in_a_failed_transaction_does_not_reach_the_next_action(
        runtime: Runtime, db, one, other_schema: str) -> None:
    with pytest.raises(ActionError):
        runtime.run("run_transaction", one, {"steps": [
            {"action": "execute_query", "inputs": {"query": f"SET search_path TO {other_schema}, public"}},
            {"action": "execute_query", "inputs": {"query": "SELECT 1/0"}},
        ]})
    runtime.run("insert_row", one, {"table": "w", "columns": {"v": "after"}})
    assert _where_rows_are(db, other_schema) == (1, 0)


@pytest.fixture
def member_role(pg) -> Iterator[str]:
    name = "x_" + uuid.uuid4().hex[:10]
    with pg.admin() as conn:
        conn.execute(f"CREATE ROLE {name} NOLOGIN")
        conn.execute(f"GRANT {name} TO app")
    yield name
    with pg.admin() as conn:
        conn.execute(f"DROP ROLE {name}")


@pytest.mark.parametrize("action,query", [
    ("execute_query", "SET ROLE {role}"),
    ("query_rows", "SELECT set_config('role', '{role}', false)"),
])
def test_role_does_not_reach_the_next_action(runtime: Runtime, one, member_role: str, action: str, query: str) -> None:
    pid = _pid(runtime, one)
    runtime.run(action, one, {"query": query.format(role=member_role)})
    rows = runtime.run("query_rows", one, {"query": "SELECT current_user AS c, session_user AS s"}).data["rows"]
    assert rows == [{"c": "app", "s": "app"}]
    assert _pid(runtime, one) == pid


def test_role_set_in_the_same_action_applies_there(runtime: Runtime, one, member_role: str) -> None:
    """The control: the SET ROLE itself works, so the test above shows a reset."""
    out = runtime.run("execute_query", one, {"query": f"SET ROLE {member_role}; SELECT current_user AS c"}).data
    assert out["rows"] == [{"c": member_role}]


def test_statement_timeout_does_not_reach_the_next_action(runtime: Runtime, one) -> None:
    pid = _pid(runtime, one)
    runtime.run("execute_query", one, {"query": "SET statement_timeout = '1ms'"})
    rows = runtime.run("query_rows", one, {"query": "SELECT pg_sleep(0.05), 1 AS ok"}).data["rows"]
    assert rows[0]["ok"] == 1
    assert _value(runtime, one, "SHOW statement_timeout") == "1min"
    assert _pid(runtime, one) == pid


def test_statement_timeout_via_set_config_in_a_read_does_not_reach_the_next_action(runtime: Runtime, one) -> None:
    runtime.run("query_rows", one, {"query": "SELECT set_config('statement_timeout', '1ms', false)"})
    rows = runtime.run("query_rows", one, {"query": "SELECT pg_sleep(0.05), 1 AS ok"}).data["rows"]
    assert rows[0]["ok"] == 1


def test_standard_conforming_strings_is_on_again(runtime: Runtime, one) -> None:
    pid = _pid(runtime, one)
    runtime.run("execute_query", one, {"query": "SET standard_conforming_strings = off"})
    assert _value(runtime, one, "SHOW standard_conforming_strings") == "on"
    assert _pid(runtime, one) == pid


def test_read_only_default_is_on_again(runtime: Runtime, db, one) -> None:
    """A read that switched the session's read-only default off cannot let the next read write."""
    db.sql("CREATE TABLE t (a int)")
    db.sql("CREATE FUNCTION w() RETURNS int LANGUAGE plpgsql AS $$ BEGIN INSERT INTO t VALUES (1); RETURN 1; END $$")
    runtime.run("query_rows", one, {"query": "SELECT set_config('default_transaction_read_only', 'off', false)"})
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", one, {"query": "SELECT w()"})
    assert info.value.code == "READ_ONLY_VIOLATION"
    assert db.sql("SELECT count(*) FROM t")[0][0] == 0


@pytest.mark.parametrize("setting", [
    "SET TimeZone = 'America/New_York'", "SET DateStyle = 'SQL, DMY'", "SET IntervalStyle = 'sql_standard'",
    "SET extra_float_digits = -10", "SET client_encoding = 'LATIN1'", "SET bytea_output = 'escape'",
])
def test_output_settings_do_not_reach_the_next_action(runtime: Runtime, one, setting: str) -> None:
    """What values look like in JSON does not depend on what an earlier action set."""
    query = ("SELECT '2026-01-15 10:30:00+00'::timestamptz AS t, '2026-01-15'::date AS d, "
             "interval '1 day 2 hours' AS i, 0.1::float8 AS f, 'é' AS e, '\\x00ff'::bytea AS b")
    before = runtime.run("query_rows", one, {"query": query}).data["rows"]
    runtime.run("execute_query", one, {"query": setting})
    assert runtime.run("query_rows", one, {"query": query}).data["rows"] == before


def test_temp_table_is_gone(runtime: Runtime, one) -> None:
    pid = _pid(runtime, one)
    runtime.run("execute_query", one, {"query": "CREATE TEMP TABLE tmp_leftover (a int)"})
    assert _value(runtime, one, "SELECT count(*) AS n FROM pg_class WHERE relname = 'tmp_leftover'") == 0
    assert _pid(runtime, one) == pid
    runtime.run("execute_query", one, {"query": "CREATE TEMP TABLE tmp_leftover (a int)"})  # no clash


def test_advisory_lock_is_released(runtime: Runtime, pg, one) -> None:
    key = uuid.uuid4().int % 2**31
    pid = _pid(runtime, one)
    runtime.run("query_rows", one, {"query": f"SELECT pg_advisory_lock({key})"})
    with pg.admin() as conn:
        held = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
                            [key]).fetchall()
    assert held == []
    assert _pid(runtime, one) == pid


def test_advisory_lock_taken_in_a_write_is_released(runtime: Runtime, pg, one) -> None:
    key = uuid.uuid4().int % 2**31
    runtime.run("execute_query", one, {"query": f"SELECT pg_advisory_lock({key})"})
    with pg.admin() as conn:
        held = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
                            [key]).fetchall()
    assert held == []


def test_listen_does_not_reach_the_next_action(runtime: Runtime, one) -> None:
    pid = _pid(runtime, one)
    runtime.run("execute_query", one, {"query": "LISTEN leftover_channel"})
    assert _value(runtime, one, "SELECT array(SELECT pg_listening_channels()) AS ch") == []
    assert _pid(runtime, one) == pid


def test_held_cursor_does_not_reach_the_next_action(runtime: Runtime, one) -> None:
    pid = _pid(runtime, one)
    runtime.run("execute_query", one, {"query": "DECLARE c CURSOR WITH HOLD FOR SELECT 1"})
    # The query's own unnamed portal is listed too: count the named ones.
    assert _value(runtime, one, "SELECT count(*) AS n FROM pg_cursors WHERE name <> ''") == 0
    assert _pid(runtime, one) == pid
    runtime.run("execute_query", one, {"query": "DECLARE c CURSOR WITH HOLD FOR SELECT 1"})  # no clash


def test_prepared_statement_does_not_reach_the_next_action(runtime: Runtime, one) -> None:
    runtime.run("execute_query", one, {"query": "PREPARE p AS SELECT 1"})
    assert _value(runtime, one, "SELECT count(*) AS n FROM pg_prepared_statements WHERE name = 'p'") == 0
    runtime.run("execute_query", one, {"query": "PREPARE p AS SELECT 1"})  # no "already exists"


def test_prepared_statement_in_a_script_does_not_reach_the_next_action(runtime: Runtime, one) -> None:
    runtime.run("execute_query", one, {"query": "SELECT 1; PREPARE p2 AS SELECT 1; EXECUTE p2"})
    runtime.run("execute_query", one, {"query": "PREPARE p2 AS SELECT 1"})


@pytest.mark.parametrize("action,query", [
    ("execute_query", "DO $$ BEGIN EXECUTE 'PREPARE p3 AS SELECT 1'; END $$"),
    ("query_rows", "SELECT prepare_p3()"),
])
def test_prepared_statement_made_by_dynamic_sql_does_not_reach_the_next_action(
        runtime: Runtime, db, one, action: str, query: str) -> None:
    """The parser cannot see a PREPARE run by a function or a DO block: the reset must still undo it."""
    db.sql("CREATE FUNCTION prepare_p3() RETURNS int LANGUAGE plpgsql AS $$ "
           "BEGIN EXECUTE 'PREPARE p3 AS SELECT 1'; RETURN 1; END $$")
    runtime.run(action, one, {"query": query})
    assert _value(runtime, one, "SELECT count(*) AS n FROM pg_prepared_statements WHERE name = 'p3'") == 0
    runtime.run(action, one, {"query": query})  # no "prepared statement p3 already exists"


def test_application_name_is_the_profile_s_again(runtime: Runtime, one) -> None:
    pid = _pid(runtime, one)
    runtime.run("query_rows", one, {"query": "SELECT set_config('application_name', 'someone else', false)"})
    assert _value(runtime, one, "SELECT current_setting('application_name') AS a") == "pgactions"
    runtime.run("execute_query", one, {"query": "SET application_name = 'someone else'"})
    assert _value(runtime, one, "SELECT current_setting('application_name') AS a") == "pgactions"
    assert _pid(runtime, one) == pid


def test_application_name_as_seen_by_the_server(runtime: Runtime, pg, one) -> None:
    """After the action the idle session shows the profile's name in pg_stat_activity."""
    pid = _pid(runtime, one)
    runtime.run("execute_query", one, {"query": "SET application_name = 'someone else'"})
    with pg.admin() as conn:
        name = conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    assert name == ("pgactions",)


def test_warm_reads_keep_the_same_backend(runtime: Runtime, one) -> None:
    pids = {_pid(runtime, one) for _ in range(10)}
    runtime.run("execute_query", one, {"query": "SET work_mem = '8MB'"})
    pids |= {_pid(runtime, one) for _ in range(5)}
    assert len(pids) == 1
    assert _value(runtime, one, "SHOW work_mem") != "8MB"


def test_a_failed_action_leaves_the_session_clean_too(runtime: Runtime, db, one, other_schema: str) -> None:
    pid = _pid(runtime, one)
    with pytest.raises(ActionError):
        runtime.run("query_rows", one, {"query": f"SELECT set_config('search_path', '{other_schema}, public', false), "
                                                 "1/0"})
    runtime.run("query_rows", one, {"query": f"SELECT set_config('search_path', '{other_schema}, public', false)"})
    with pytest.raises(ActionError):
        runtime.run("execute_query", one, {"query": "SELECT 1/0"})
    runtime.run("insert_row", one, {"table": "w", "columns": {"v": "here"}})
    assert _where_rows_are(db, other_schema) == (1, 0)
    assert _pid(runtime, one) == pid
