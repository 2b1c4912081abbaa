"""Bugs the fuzz, fault and soak suites found (tests/test_fuzz.py, test_faults.py, test_soak.py),
each pinned by one small deterministic test of the correct behaviour.

They fail until the bug is fixed; nothing here is skipped or marked xfail.  Once fixed, a test
may move next to the other tests of its area.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from psycopg import sql

from pgactions import ActionError, Runtime

from .test_fuzz import check_error


def _run(runtime: Runtime, action: str, profile: Any, inputs: Any, context: Any = None) -> tuple[Any, Any]:
    try:
        return runtime.run(action, profile, inputs, context).data, None
    except ActionError as error:
        check_error(error)  # a catalogue code, a valid payload, nothing "unexpected"
        return None, error


@pytest.mark.parametrize("name", ["50%", "%", "a%%b"])
def test_percent_in_a_name_names_that_table(runtime: Runtime, db: Any, name: str) -> None:
    """quote_identifier (render/templating.py) uses SQLAlchemy's pyformat preparer, which doubles
    '%': table "50%" is looked up as "50%%" (UNDEFINED_TABLE), and ``| identifier`` names another
    table in SQL text.  (A profile schema holding '%' gets the wrong search_path the same way.)"""
    db.sql(f'CREATE TABLE "{name}" (v text)')
    data, error = _run(runtime, "insert_row", db.profile, {"table": name, "columns": {"v": "x"}})
    assert error is None, error.payload
    assert db.sql(f'SELECT v FROM "{name}"') == [("x",)]
    data, error = _run(runtime, "query_rows", db.profile,
                       {"query": "SELECT v FROM {{ trigger.t | identifier }}"}, {"trigger": {"t": name}})
    assert error is None and data["rows"] == [{"v": "x"}], error and error.payload


@pytest.mark.parametrize("action", ["insert_row", "find_rows"])
def test_a_name_ending_in_newline_is_not_another_table(runtime: Runtime, db: Any, action: str) -> None:
    """SQLAlchemy quotes a name only when it "requires" quotes, and its check (a regex ending in
    ``$``) passes "items\\n": the statement then names ``items\\n`` bare, which is the table
    "items".  Statements built from TableInfo.sa_table() (handlers/table_write.py) write into and
    read from the wrong table."""
    db.sql('CREATE TABLE items (v text); CREATE TABLE "items\n" (v text); INSERT INTO items VALUES (\'decoy\')')
    inputs = {"table": "items\n", "columns": {"v": "x"}} if action == "insert_row" else {"table": "items\n"}
    data, error = _run(runtime, action, db.profile, inputs)
    assert db.sql("SELECT v FROM items") == [("decoy",)], "the row went into another table"
    assert error is None, error.payload
    if action == "insert_row":
        assert db.sql('SELECT v FROM "items\n"') == [("x",)]
    else:
        assert data["rows"] == []


def test_integers_past_64_bits_stay_exact_in_every_output(runtime: Runtime, db: Any) -> None:
    """orjson.loads turns integers outside the 64-bit range into floats: Rows.parsed() and
    Output.data() (db/output.py) and ActionResult.data (runtime.py) lose digits of jsonb numbers in
    Insert/Upsert Row's "row", an independent batch's items, a transaction's step outputs and
    ``result.data``."""
    big = 2**64 + 1
    db.sql("CREATE TABLE vals (id serial PRIMARY KEY, j jsonb)")
    query = {"query": "SELECT $1::jsonb AS j", "parameters": [{"n": big}]}
    outputs = {
        "insert_row": runtime.run("insert_row", db.profile, {"table": "vals", "columns": {"j": big}}).json,
        "query_rows .data": runtime.run("query_rows", db.profile, query).data,
        "batch": runtime.run_batch("query_rows", db.profile, [{"inputs": query}]).json,
        "transaction": runtime.run("run_transaction", db.profile,
                                   {"steps": [{"action": "query_rows", "inputs": query}]}).json,
    }
    for where, output in outputs.items():
        text = output.decode() if isinstance(output, bytes) else repr(output)
        assert str(big) in text, f"{where}: {text}"


@pytest.mark.parametrize("field,value", [("table", {"a": 1}), ("table", 7), ("schema", ["a", "b"]),
                                         ("select", {"a": 1})])
def test_a_template_rendering_a_non_string_where_a_name_goes_is_a_coded_error(runtime: Runtime, db: Any,
                                                                              field: str, value: Any) -> None:
    """Inputs are validated before their templates render (runtime.py), so "{{ trigger.x }}" in a
    string field may become an object, a number or a list that the handler then trips over:
    DATABASE_ERROR "unexpected AttributeError" (table_write.table_info → quote_identifier)."""
    db.sql("CREATE TABLE items (id int PRIMARY KEY)")
    inputs: dict[str, Any] = {"table": "items", "key": {"id": 1}}
    inputs[field] = ["{{ trigger.x }}"] if field == "select" else "{{ trigger.x }}"
    _, error = _run(runtime, "get_row", db.profile, inputs, {"trigger": {"x": value}})
    assert error is not None and error.code in ("INVALID_INPUT", "TEMPLATE_ERROR"), error.payload


@pytest.mark.parametrize("steps", [[], "x", 5])
def test_a_context_whose_steps_is_not_an_object_is_a_coded_error(runtime: Runtime, db: Any, steps: Any) -> None:
    """handlers/transaction.py merges ``{**context["steps"], **outputs}``: a host (or the CLI's
    --context) passing {"steps": []} gets DATABASE_ERROR "unexpected TypeError"."""
    _, error = _run(runtime, "run_transaction", db.profile,
                    {"steps": [{"action": "query_rows", "inputs": {"query": "SELECT 1 AS one"}}]}, {"steps": steps})
    assert error is not None and error.code == "INVALID_INPUT", error.payload


@pytest.mark.parametrize("template", ["{{ trigger.s | dictsort }}", "{{ trigger.n | xmlattr }}",
                                      "{{ trigger.n | wordwrap(5) }}", "{{ trigger.s | truncate(-1) }}"])
def test_a_filter_failing_with_any_exception_is_a_template_error(runtime: Runtime, db: Any, template: str) -> None:
    """Filters that raise AttributeError or AssertionError on a value of the wrong type pass the
    template-error mapping (render/templating.py) and reach the user as DATABASE_ERROR
    "unexpected AttributeError/AssertionError"."""
    _, error = _run(runtime, "query_rows", db.profile, {"query": "SELECT $1::text AS v", "parameters": [template]},
                    {"trigger": {"s": "ab", "n": 5}})
    assert error is not None and error.code == "TEMPLATE_ERROR", error.payload


def test_invalid_input_holding_a_lone_surrogate_is_invalid_input(runtime: Runtime, db: Any) -> None:
    """jsonschema-rs raises UnicodeEncodeError while listing the errors of an input that holds a
    lone surrogate (spec/validation.py, iter_errors): it leaves Runtime.run as a raw exception."""
    try:
        runtime.run("query_rows", db.profile, {"query": "SELECT 1", "extra": "\ud800"})
    except ActionError as error:
        check_error(error)
        assert error.code == "INVALID_INPUT"
    else:
        raise AssertionError("an invalid input was accepted")


def test_a_password_holding_stars_never_shows_through_the_scrubbing(db: Any) -> None:
    """scrub() (db/errormap.py) replaces each secret by "***" in one pass, which can make the
    secret anew: password "pw***", a value "pwpw***" echoed by the server → "pw***"."""
    role, password = "fz_" + uuid.uuid4().hex[:8], "pw***"
    with db.server.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        profile = {"host": db.server.host, "port": db.server.port, "database": "pgactions_test",
                   "username": role, "password": password, "sslMode": "disable"}
        with Runtime() as runtime:
            try:
                runtime.run("query_rows", profile, {"query": "SELECT $1::int AS v", "parameters": ["pwpw***"]})
            except ActionError as error:
                check_error(error, secrets=(password,))
            else:
                raise AssertionError("'pwpw***' was taken for an integer")
    finally:
        with db.server.admin() as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_now_inside_an_object_is_stored_as_its_iso_text(runtime: Runtime, db: Any) -> None:
    """{{ now }} (a datetime) inside an object bound as jsonb: psycopg's Jsonb dumps it with the
    standard json module, which refuses datetimes; the TypeError reaches the user as DATABASE_ERROR
    "unexpected TypeError: Object of type datetime is not JSON serializable" (render/values.py
    bind_value → Jsonb).  The same for any datetime a host puts in the flow context."""
    db.sql("CREATE TABLE ev (id serial PRIMARY KEY, meta jsonb)")
    data, error = _run(runtime, "insert_row", db.profile, {"table": "ev", "columns": {"meta": {"at": "{{ now }}"}}})
    assert error is None, error.payload
    at = data["row"]["meta"]["at"]
    assert isinstance(at, str) and datetime.fromisoformat(at.replace("Z", "+00:00")).tzinfo is not None, at


@pytest.mark.parametrize("action,table,column", [("find_rows", "x%(y", "v"), ("get_row", "x%(y", "v"),
                                                 ("get_row", "items", "a%("), ("find_rows", "items", "%(")])
def test_a_name_holding_percent_paren_reads_its_rows(runtime: Runtime, db: Any, action: str, table: str,
                                                      column: str) -> None:
    """Find Rows and Get Row compile their SELECT with SQLAlchemy's numeric_dollar paramstyle
    (handlers/records.py); when a table or column name holds "%(", SQLAlchemy leaves its own
    %(name)s placeholders in the SQL instead of $n, and PostgreSQL answers SYNTAX_ERROR."""
    db.sql(sql.SQL("CREATE TABLE {} ({} text)").format(sql.Identifier(table), sql.Identifier(column)).as_string(None))
    db.sql(sql.SQL("INSERT INTO {} VALUES ('x')").format(sql.Identifier(table)).as_string(None))
    inputs: dict[str, Any] = {"table": table}
    if action == "get_row":
        inputs["key"] = {column: "x"}
    else:
        inputs["where"] = [{"column": column, "value": "x"}]
    data, error = _run(runtime, action, db.profile, inputs)
    assert error is None, error.payload
    assert (data["row"] if action == "get_row" else data["rows"][0]) == {column: "x"}
