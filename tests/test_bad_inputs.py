"""Bad inputs get one clear error with the right code, field and wording, and change nothing."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime


def _text(error: ActionError) -> str:
    return f"{error.payload['message']} {error.payload.get('detail', '')}"


def _error(run, *args, **kwargs) -> ActionError:
    with pytest.raises(ActionError) as info:
        run(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("action", ["query_rows", "execute_query"])
@pytest.mark.parametrize("query", ["SELECT $0", "SELECT $0, $1"])
def test_dollar_zero_is_not_a_placeholder(runtime: Runtime, db, action: str, query: str) -> None:
    error = _error(runtime.run, action, db.profile, {"query": query, "parameters": ["a"]})
    assert error.code == "INVALID_INPUT"
    assert "$0 is not a placeholder" in _text(error)


def test_dollar_zero_without_parameters(runtime: Runtime, db) -> None:
    error = _error(runtime.run, "query_rows", db.profile, {"query": "SELECT $0"})
    assert error.code == "INVALID_INPUT"
    assert "$0 is not a placeholder" in _text(error)


@pytest.mark.parametrize("action", ["query_rows", "execute_query", "update_rows", "delete_rows"])
@pytest.mark.parametrize("query", ["", "   ", "-- nothing", "/* nothing */", ";", "-- a\n/* b */ ;\n"])
def test_empty_query(runtime: Runtime, db, action: str, query: str) -> None:
    error = _error(runtime.run, action, db.profile, {"query": query})
    assert error.code == "INVALID_INPUT"
    assert "the query is empty" in _text(error), error.payload


@pytest.mark.parametrize("action", ["query_rows", "execute_query"])
def test_lone_surrogate_in_a_parameter(runtime: Runtime, db, action: str) -> None:
    error = _error(runtime.run, action, db.profile, {"query": "SELECT $1::text AS v", "parameters": ["a\ud800b"]})
    assert error.code == "INVALID_VALUE"
    assert error.payload["field"] == "parameters/0"


def test_lone_surrogate_in_the_second_parameter(runtime: Runtime, db) -> None:
    error = _error(runtime.run, "query_rows", db.profile,
                   {"query": "SELECT $1::text AS a, $2::text AS b", "parameters": ["fine", "\udfff"]})
    assert error.code == "INVALID_VALUE"
    assert error.payload["field"] == "parameters/1"


def test_lone_surrogate_from_a_template(runtime: Runtime, db) -> None:
    error = _error(runtime.run, "query_rows", db.profile,
                   {"query": "SELECT $1::text AS v", "parameters": ["{{ trigger.v }}"]}, {"trigger": {"v": "\ud800"}})
    assert error.code == "INVALID_VALUE"
    assert error.payload["field"] == "parameters/0"


def test_the_session_works_after_a_lone_surrogate(runtime: Runtime, db) -> None:
    profile = {**db.profile, "maxConnections": 1}
    _error(runtime.run, "query_rows", profile, {"query": "SELECT $1::text AS v", "parameters": ["\ud800"]})
    assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS ok"}).data["rows"] == [{"ok": 1}]


@pytest.fixture
def keyed(db):
    db.sql("CREATE TABLE k (id int PRIMARY KEY, email text CONSTRAINT k_email_key UNIQUE, name text)")
    db.sql("INSERT INTO k VALUES (1, 'a@x.com', 'A')")
    return db


def test_unknown_constraint_in_upsert_rows(runtime: Runtime, keyed) -> None:
    error = _error(runtime.run, "upsert_rows", keyed.profile,
                   {"table": "k", "constraint": "no_such_constraint",
                    "rows": [{"id": 1, "email": "a@x.com", "name": "changed"}, {"id": 2, "email": "b@x.com", "name": "B"}]})
    assert error.payload.get("sqlstate") == "42704"
    assert error.code == "UNDEFINED_OBJECT", error.payload
    assert "row 0:" not in error.payload.get("detail", "")
    assert "rowIndex" not in error.payload
    assert "no_such_constraint" in _text(error)
    assert keyed.sql("SELECT id, email, name FROM k ORDER BY id") == [(1, "a@x.com", "A")]


def test_unknown_constraint_in_upsert_row(runtime: Runtime, keyed) -> None:
    error = _error(runtime.run, "upsert_rows", keyed.profile,
                   {"table": "k", "constraint": "nope", "rows": [{"id": 5, "email": "e@x.com"}]})
    assert error.code == "UNDEFINED_OBJECT"
    assert "row 0:" not in error.payload.get("detail", "")


def test_known_constraint_in_upsert_rows_works(runtime: Runtime, keyed) -> None:
    """The control: the same call with the table's real constraint name."""
    out = runtime.run("upsert_rows", keyed.profile,
                      {"table": "k", "constraint": "k_email_key",
                       "rows": [{"id": 1, "email": "a@x.com", "name": "changed"}]}).data
    assert out["updated"] == 1


@pytest.mark.parametrize("action,query", [
    ("query_rows", "SELECT current_setting('standard_conforming_strings') AS s, {{ trigger.t }}::text AS t"),
    ("execute_query", "SET standard_conforming_strings = off; SELECT '{{ trigger.t }}' AS t"),
    ("execute_query", "SELECT set_config('standard_conforming_strings', 'off', false), {{ trigger.t }}::text"),
    ("execute_query", "SELECT set_config('STANDARD_CONFORMING_STRINGS', 'off', false), {{ trigger.t }}::text"),
])
def test_templated_sql_that_mentions_standard_conforming_strings_is_refused(runtime: Runtime, db, action: str,
                                                                            query: str) -> None:
    profile = {**db.profile, "maxConnections": 1}
    error = _error(runtime.run, action, profile, {"query": query}, {"trigger": {"t": "x"}})
    assert error.code == "INVALID_INPUT"
    assert "standard_conforming_strings" in _text(error)
    shown = runtime.run("query_rows", profile, {"query": "SHOW standard_conforming_strings"}).data["rows"]
    assert shown == [{"standard_conforming_strings": "on"}]


def test_templated_sql_after_a_step_switched_standard_conforming_strings_off(runtime: Runtime, guide_db) -> None:
    profile = {**guide_db.profile, "maxConnections": 1}
    error = _error(runtime.run, "run_transaction", profile, {"steps": [
        {"action": "insert_row", "inputs": {"table": "logs", "columns": {"level": "info", "message": "m"}}},
        {"action": "execute_query", "inputs": {"query": "SET standard_conforming_strings = off"}},
        {"id": "read", "action": "query_rows",
         "inputs": {"query": "SELECT name, email FROM {{ trigger.t | identifier }}"}},
    ]}, {"trigger": {"t": "users"}})
    assert error.code == "INVALID_INPUT"
    assert error.payload["step"] == "read" and error.payload["rolledBack"] is True
    assert "standard_conforming_strings" in _text(error)
    assert "john@example.com" not in str(error.payload)  # nothing of the table leaked into the error
    assert guide_db.sql("SELECT count(*) FROM logs")[0][0] == 0
    shown = runtime.run("query_rows", profile, {"query": "SHOW standard_conforming_strings"}).data["rows"]
    assert shown == [{"standard_conforming_strings": "on"}]


def test_templated_value_after_a_step_switched_standard_conforming_strings_off(runtime: Runtime, guide_db) -> None:
    """A template in the SQL text becomes a bound value: it too is refused once the setting is off."""
    error = _error(runtime.run, "run_transaction", guide_db.profile, {"steps": [
        {"action": "execute_query", "inputs": {"query": "SET standard_conforming_strings = off"}},
        {"action": "query_rows", "inputs": {"query": "SELECT '{{ trigger.t }}' AS t"}},
    ]}, {"trigger": {"t": "\\' OR true --"}})
    assert error.code == "INVALID_INPUT"
    assert "standard_conforming_strings" in _text(error)


SECRET = "Zq8s3cretPW"


@pytest.mark.parametrize("url", [
    f"postgresql://app:{SECRET}@db.example.com:notaport/app",
    f"postgresql://app:{SECRET}@db.example.com:99999/app",
    f"postgresql://app:{SECRET}@[::1/app",
    "postgresql://[/app",
    f"postgresql://app:{SECRET}@db.example.com:-5/app",
    f"postgresql://app:{SECRET}@db.example.com/app?sslmode=sometimes",
    f"postgresql://app:{SECRET}@db.example.com/app?connect_timeout=soon",
    "not a url at all",
])
@pytest.mark.parametrize("shape", ["string", "profile"])
def test_malformed_url_raises_action_error_only(runtime: Runtime, url: str, shape: str) -> None:
    connection = url if shape == "string" else {"url": url}
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", connection, {"query": "SELECT 1"})
    assert info.value.code in ("INVALID_CONNECTION", "INVALID_INPUT"), info.value.payload
    assert SECRET not in str(info.value.payload)


def test_malformed_url_in_a_batch_raises_action_error_only(runtime: Runtime) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run_batch("query_rows", f"postgresql://app:{SECRET}@[::1/app", [{"inputs": {"query": "SELECT 1"}}],
                          "transaction")
    assert info.value.code in ("INVALID_CONNECTION", "INVALID_INPUT")


def test_the_identifier_escape_found_in_review_stays_closed(runtime: Runtime, db) -> None:
    """The repro: a session left with standard_conforming_strings off, then a hostile name through
    the identifier filter after a backslash string, read password hashes. The next action now
    starts with the setting on, so PostgreSQL and our lexer agree on where the string ends."""
    profile = {**db.profile, "maxConnections": 1}
    runtime.run("execute_query", profile, {"query": "SET standard_conforming_strings = off"})
    hostile = "x\" FROM (SELECT 1) s --"
    query = {"query": "SELECT 'C:\\' AS a, {{ trigger.t | identifier }} AS b --'"}
    try:
        out = runtime.run("query_rows", profile, query, {"trigger": {"t": hostile}}).data
    except ActionError as error:
        assert error.code in ("UNDEFINED_COLUMN", "SYNTAX_ERROR"), error.payload
    else:
        raise AssertionError(f"the hostile name ran as SQL: {out}")
    assert runtime.run("query_rows", profile, {"query": "SHOW standard_conforming_strings"}).data["rows"] == [
        {"standard_conforming_strings": "on"}]
