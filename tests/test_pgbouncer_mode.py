"""Why PgBouncer mode exists: through a transaction pooler, session state and prepared statements
do not survive between transactions.  Without the mode things break; with it they do not."""

from __future__ import annotations

import psycopg
import pytest

from pgactions import ActionError, Runtime


def _through(pgbouncer, db, mode: bool) -> dict:
    url = db.profile["url"].replace(f":{db.server.port}/", f":{pgbouncer.port}/")
    return {**db.profile, "url": url, "pgbouncer": mode}


@pytest.mark.parametrize("mode", [False, True])
def test_session_state_does_not_follow_the_client(runtime: Runtime, pgbouncer, guide_db, mode: bool) -> None:
    """Another client takes the server connection our first action used; the second action lands
    on a fresh server session.  Without the mode the search path set on the first one is gone."""
    profile = _through(pgbouncer, guide_db, mode)
    query = {"query": "SELECT count(*) AS n FROM users WHERE status = $1", "parameters": ["active"]}
    assert runtime.run("query_rows", profile, query).data["rows"] == [{"n": 1}]
    with psycopg.connect(profile["url"], autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1")  # holds the server connection the first action used
        if mode:
            assert runtime.run("query_rows", profile, query).data["rows"] == [{"n": 1}]
        else:
            with pytest.raises(ActionError) as info:
                runtime.run("query_rows", profile, query)
            assert info.value.code == "UNDEFINED_TABLE"
        other.execute("COMMIT")


def test_with_the_mode_repeated_actions_and_settings_hold(runtime: Runtime, pgbouncer, guide_db) -> None:
    profile = {**_through(pgbouncer, guide_db, mode=True), "statementTimeout": 0.5}
    query = {"query": "SELECT count(*) AS n, current_setting('TimeZone') AS tz, "
                      "current_setting('statement_timeout') AS st FROM users WHERE status = $1",
             "parameters": ["active"]}
    for _ in range(12):
        assert runtime.run("query_rows", profile, query).data["rows"] == [{"n": 1, "tz": "UTC", "st": "500ms"}]
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", profile, {"query": "SELECT pg_sleep(3)"})
    assert info.value.code == "QUERY_TIMEOUT"
    # Each action is its own transaction, read-only for Query Rows.
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", profile, {"query": "SELECT nextval('logs_id_seq')"})
    assert info.value.code == "READ_ONLY_VIOLATION"
    out = runtime.run("insert_row", profile, {"table": "logs", "columns": {"level": "info"}}).data
    assert out["rowCount"] == 1 and guide_db.sql("SELECT count(*) FROM logs") == [(1,)]


def test_test_connection_through_the_pooler(pgbouncer, guide_db) -> None:
    from pgactions import test_connection

    report = test_connection(_through(pgbouncer, guide_db, mode=True))
    assert report["ok"] is True, report
    assert report["user"] == "app" and report["privileges"]["tables"] == 4


def test_settings_an_action_makes_do_not_reach_other_clients_of_the_pooler(runtime: Runtime, pgbouncer,
                                                                            guide_db) -> None:
    """Through a transaction pooler the next client may get the same server session: what an
    action's SQL set on it (a setting, a role, an advisory lock) is undone before its transaction
    ends."""
    profile = _through(pgbouncer, guide_db, mode=True)
    runtime.run("execute_query", profile, {"query": "SET work_mem = '77MB'; SELECT pg_advisory_lock(4242)"})
    runtime.run("query_rows", profile, {"query": "SELECT set_config('lock_timeout', '1234ms', false) AS v"})
    for _ in range(6):  # whichever server session the pooler hands out next
        with psycopg.connect(profile["url"], autocommit=True) as other:
            assert other.execute("SHOW work_mem").fetchone()[0] != "77MB"
            assert other.execute("SHOW lock_timeout").fetchone()[0] != "1234ms"
    with psycopg.connect(guide_db.server.admin_url, autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0
