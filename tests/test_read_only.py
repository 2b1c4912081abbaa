"""Read-only is enforced by the server, not only by the parser check: a read step inside a
transaction, a read alone and a batch of reads cannot write, whatever the SQL hides; and
transaction control in an action's SQL is refused before anything runs (the runtime decides where
a transaction ends)."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime

WRITING_FUNCTION = ("CREATE FUNCTION w() RETURNS int LANGUAGE plpgsql AS $$ "
                    "BEGIN INSERT INTO t VALUES (1); RETURN 1; END $$")


@pytest.fixture
def tdb(guide_db):
    guide_db.sql("CREATE TABLE t (a int)")
    guide_db.sql(WRITING_FUNCTION)
    return guide_db


def _count(db, table: str) -> int:
    return db.sql(f"SELECT count(*) FROM {table}")[0][0]


def _exists(db, table: str) -> bool:
    return db.sql("SELECT to_regclass(%s) IS NOT NULL", [f'"{db.schema}".{table}'])[0][0]


def _text(error: ActionError) -> str:
    return f"{error.payload['message']} {error.payload.get('detail', '')}"


def _insert_user(email: str) -> dict:
    return {"action": "insert_row", "inputs": {"table": "users", "columns": {"name": "N", "email": email}}}


# -- reads inside a transaction ---------------------------------------------------------------------

def test_explain_analyze_delete_in_a_read_step_is_refused(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", tdb.profile, {"steps": [
            _insert_user("new@x.com"),
            {"id": "sneak", "action": "query_rows", "inputs": {"query": "EXPLAIN ANALYZE DELETE FROM users"}},
        ]})
    assert info.value.code == "READ_ONLY_VIOLATION", info.value.payload
    assert info.value.payload["step"] == "sneak" and info.value.payload["rolledBack"] is True
    assert _count(tdb, "users") == 2  # the DELETE did not run, and step 1 was rolled back


def test_explain_analyze_delete_alone_is_refused(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", tdb.profile, {"query": "EXPLAIN ANALYZE DELETE FROM users"})
    assert info.value.code == "READ_ONLY_VIOLATION"
    assert _count(tdb, "users") == 2


def test_select_into_in_a_read_step_is_refused(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", tdb.profile, {"steps": [
            {"action": "query_rows", "inputs": {"query": "SELECT * INTO sneaky FROM users"}},
        ]})
    assert info.value.payload["stepIndex"] == 0
    assert not _exists(tdb, "sneaky")


def test_select_into_alone_is_refused(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError):
        runtime.run("query_rows", tdb.profile, {"query": "SELECT * INTO sneaky FROM users"})
    assert not _exists(tdb, "sneaky")


def test_writing_function_in_a_read_step_is_refused(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", tdb.profile, {"steps": [
            _insert_user("new@x.com"),
            {"action": "query_rows", "inputs": {"query": "SELECT w()"}},
        ]})
    assert info.value.code == "READ_ONLY_VIOLATION"
    assert info.value.payload["stepIndex"] == 1
    assert _count(tdb, "t") == 0 and _count(tdb, "users") == 2


def test_read_step_cannot_switch_read_only_off(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError):
        runtime.run("run_transaction", tdb.profile, {"steps": [
            _insert_user("new@x.com"),
            {"action": "query_rows",
             "inputs": {"query": "SELECT set_config('transaction_read_only', 'off', true), w()"}},
        ]})
    assert _count(tdb, "t") == 0 and _count(tdb, "users") == 2


def test_writing_function_called_by_a_read_alone_is_refused(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", tdb.profile, {"query": "SELECT w()"})
    assert info.value.code == "READ_ONLY_VIOLATION"
    assert _count(tdb, "t") == 0


def test_writing_function_via_a_template_alone_is_refused(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", tdb.profile, {"query": "SELECT w(), {{ trigger.x }}::int AS x"},
                    {"trigger": {"x": 1}})
    assert info.value.code == "READ_ONLY_VIOLATION"
    assert _count(tdb, "t") == 0


@pytest.mark.parametrize("mode", ["transaction", "single", "independent"])
def test_batch_of_reads_with_a_writing_function_is_refused(runtime: Runtime, tdb, mode: str) -> None:
    items = [{"inputs": {"query": "SELECT w(), $1::int AS n", "parameters": [n]}} for n in (1, 2)]
    if mode == "independent":
        out = runtime.run_batch("query_rows", tdb.profile, items, mode).data
        assert [item["error"]["code"] for item in out["items"]] == ["READ_ONLY_VIOLATION"] * 2
    else:
        with pytest.raises(ActionError) as info:
            runtime.run_batch("query_rows", tdb.profile, items, mode)
        assert info.value.code == "READ_ONLY_VIOLATION"
    assert _count(tdb, "t") == 0


def test_batch_of_reads_after_a_write_batch_is_still_read_only(runtime: Runtime, tdb) -> None:
    """A write batch then a read batch on the same session: the read one is read-only again."""
    profile = {**tdb.profile, "maxConnections": 1}
    runtime.run_batch("insert_row", profile, [{"inputs": {"table": "t", "columns": {"a": 5}}}], "transaction")
    with pytest.raises(ActionError) as info:
        runtime.run_batch("query_rows", profile, [{"inputs": {"query": "SELECT w()"}}], "transaction")
    assert info.value.code == "READ_ONLY_VIOLATION"
    assert tdb.sql("SELECT a FROM t") == [(5,)]


def test_read_steps_work_and_later_writes_commit(runtime: Runtime, tdb) -> None:
    out = runtime.run("run_transaction", tdb.profile, {"steps": [
        {"id": "first", **_insert_user("a@x.com")},
        {"id": "read", "action": "query_rows",
         "inputs": {"query": "SELECT count(*)::int AS n FROM users"}},
        {"id": "find", "action": "find_rows",
         "inputs": {"table": "users", "select": ["email"], "where": [{"column": "email", "value": "a@x.com"}]}},
        {"id": "fetched", "action": "get_row", "inputs": {"table": "users", "key": {"id": "{{ steps.first.insertedId }}"},
                                                      "select": ["email"]}},
        {"id": "second", **_insert_user("{{ steps.fetched.row.email }}.copy")},
        {"id": "third", "action": "insert_row", "inputs": {"table": "t", "columns": {"a": "{{ steps.read.rows[0].n }}"}}},
    ]}).data
    assert out["committed"] is True
    assert out["steps"][1]["output"]["rows"] == [{"n": 3}]  # a read step sees the transaction's own rows
    assert out["steps"][2]["output"]["rows"] == [{"email": "a@x.com"}]
    assert out["steps"][3]["output"]["row"] == {"email": "a@x.com"}
    emails = [row[0] for row in tdb.sql("SELECT email FROM users ORDER BY id")]
    assert emails[2:] == ["a@x.com", "a@x.com.copy"]
    assert tdb.sql("SELECT a FROM t") == [(3,)]


def test_a_write_after_a_failed_read_is_not_attempted(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError):
        runtime.run("run_transaction", tdb.profile, {"steps": [
            _insert_user("a@x.com"),
            {"action": "query_rows", "inputs": {"query": "SELECT w()"}},
            _insert_user("b@x.com"),
        ]})
    assert _count(tdb, "users") == 2 and _count(tdb, "t") == 0


# -- transaction control ----------------------------------------------------------------------------

CONTROL = [
    ("COMMIT", "COMMIT"), ("commit", "COMMIT"), ("/* x */ commit; -- y", "COMMIT"), ("END", "COMMIT"),
    ("end transaction", "COMMIT"), ("COMMIT AND CHAIN", "COMMIT"), ("ROLLBACK", "ROLLBACK"), ("abort", "ROLLBACK"),
    ("BEGIN", "BEGIN"), ("begin isolation level serializable", "BEGIN"), ("START TRANSACTION", "START TRANSACTION"),
    ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"), ("SAVEPOINT s", "SAVEPOINT"),
    ("RELEASE SAVEPOINT s", "RELEASE SAVEPOINT"), ("ROLLBACK TO SAVEPOINT s", "ROLLBACK TO SAVEPOINT"),
    ("COMMIT PREPARED 'x'", "COMMIT PREPARED"), ("-- only a comment\nCoMmIt", "COMMIT"),
]


@pytest.mark.parametrize("statement,word", CONTROL)
def test_transaction_control_alone_is_refused(runtime: Runtime, tdb, statement: str, word: str) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("execute_query", tdb.profile, {"query": statement})
    assert info.value.code == "INVALID_INPUT"
    assert word in _text(info.value)


@pytest.mark.parametrize("statement,word", CONTROL)
def test_transaction_control_in_a_script_is_refused_and_nothing_is_written(
        runtime: Runtime, tdb, statement: str, word: str) -> None:
    script = f"INSERT INTO t VALUES (1); {statement}; INSERT INTO t VALUES (2)"
    with pytest.raises(ActionError) as info:
        runtime.run("execute_query", tdb.profile, {"query": script})
    assert info.value.code == "INVALID_INPUT"
    assert word in _text(info.value)
    assert _count(tdb, "t") == 0


@pytest.mark.parametrize("guard", [{"dryRun": True}, {"maxAffectedRows": 100}, {"maxAffectedRows": 0}])
@pytest.mark.parametrize("statement", ["COMMIT", "/* x */ commit; -- y", "END", "ROLLBACK"])
def test_transaction_control_with_write_guards_writes_nothing(runtime: Runtime, tdb, statement: str,
                                                              guard: dict) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("execute_query", tdb.profile,
                    {"query": f"INSERT INTO t VALUES (1); {statement}; INSERT INTO t VALUES (2)", **guard})
    assert info.value.code == "INVALID_INPUT"
    assert _count(tdb, "t") == 0


@pytest.mark.parametrize("statement", ["COMMIT", "INSERT INTO t VALUES (1); COMMIT", "END", "ROLLBACK",
                                       "BEGIN", "SAVEPOINT s"])
def test_transaction_control_in_a_later_step_leaves_step_one_uncommitted(runtime: Runtime, tdb,
                                                                         statement: str) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", tdb.profile, {"steps": [
            _insert_user("a@x.com"),
            {"action": "execute_query", "inputs": {"query": statement}},
            _insert_user("b@x.com"),
        ]})
    assert info.value.code == "INVALID_INPUT" and info.value.payload["stepIndex"] == 1
    assert _count(tdb, "users") == 2 and _count(tdb, "t") == 0


def test_a_failing_step_after_a_write_leaves_it_uncommitted(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", tdb.profile, {"steps": [
            _insert_user("a@x.com"),
            {"action": "execute_query", "inputs": {"query": "INSERT INTO t VALUES (1)"}},
            {"action": "execute_query", "inputs": {"query": "SELECT 1/0"}},
        ]})
    assert info.value.payload["stepIndex"] == 2
    assert _count(tdb, "users") == 2 and _count(tdb, "t") == 0


@pytest.mark.parametrize("query", [
    "DO $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$",
    "DO $$ BEGIN INSERT INTO t VALUES (1); ROLLBACK; INSERT INTO t VALUES (2); END $$",
    "INSERT INTO t VALUES (3); DO $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$",
])
def test_commit_inside_a_do_block_is_refused_by_the_server(runtime: Runtime, tdb, query: str) -> None:
    with pytest.raises(ActionError):
        runtime.run("execute_query", tdb.profile, {"query": query})
    assert _count(tdb, "t") == 0


def test_commit_inside_a_procedure_is_refused_by_the_server(runtime: Runtime, tdb) -> None:
    tdb.sql("CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO t VALUES (1); COMMIT; "
            "INSERT INTO t VALUES (2); END $$")
    with pytest.raises(ActionError):
        runtime.run("execute_query", tdb.profile, {"query": "CALL p()"})
    assert _count(tdb, "t") == 0
    with pytest.raises(ActionError):
        runtime.run("call_function", tdb.profile, {"name": "p"})
    assert _count(tdb, "t") == 0


def test_commit_inside_a_do_block_in_a_transaction_step(runtime: Runtime, tdb) -> None:
    with pytest.raises(ActionError):
        runtime.run("run_transaction", tdb.profile, {"steps": [
            _insert_user("a@x.com"),
            {"action": "execute_query", "inputs": {"query": "DO $$ BEGIN COMMIT; END $$"}},
        ]})
    assert _count(tdb, "users") == 2
