"""An action that answers with an error has changed nothing: every write path whose output passes
the cap answers RESULT_TOO_LARGE and leaves the table as it was (read back afterwards); write
guards (maxAffectedRows, dryRun) roll back too; and a value from the flow is rendered once only,
whatever path runs it (batch modes, a transaction's later step)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgactions import ActionError, Limits, Runtime

CAP = 100_000
ROWS = 200  # 200 rows of 1,000 characters: about twice the cap when returned
BIG = "b" * 150_000  # one value larger than the cap on its own
PART = "p" * 40_000  # three of these together pass the cap; one alone does not


@pytest.fixture
def capped() -> Iterator[Runtime]:
    with Runtime(Limits(max_result_bytes=CAP)) as rt:
        yield rt


@pytest.fixture
def table(db):
    """t: ROWS rows of 1,000 characters, and a unique key k for upserts."""
    db.sql("CREATE TABLE t (id serial PRIMARY KEY, k text UNIQUE, v text NOT NULL)")
    db.sql("INSERT INTO t (k, v) SELECT 'k' || g, repeat('x', 1000) FROM generate_series(1, %s) g", [ROWS])
    return db


def _snapshot(db) -> list[tuple]:
    return db.sql("SELECT id, k, v FROM t ORDER BY id")


def _too_large(run, *args) -> ActionError:
    with pytest.raises(ActionError) as info:
        run(*args)
    assert info.value.code == "RESULT_TOO_LARGE", info.value.payload
    return info.value


# -- single actions whose output passes the cap ------------------------------------------------------

WRITES_OVER_THE_CAP = {
    "delete_rows structured": ("delete_rows", {"table": "t", "allowAllRows": True, "returning": True}),
    "delete_rows sql": ("delete_rows", {"query": "DELETE FROM t RETURNING *"}),
    "update_rows structured": ("update_rows", {"table": "t", "set": {"v": "y" * 1000}, "allowAllRows": True,
                                               "returning": True}),
    "update_rows sql": ("update_rows", {"query": "UPDATE t SET v = upper(v) RETURNING *"}),
    "execute_query insert returning": ("execute_query", {
        "query": "INSERT INTO t (v) SELECT repeat('n', 1000) FROM generate_series(1, 200) RETURNING *"}),
    "execute_query script": ("execute_query", {
        "query": "INSERT INTO t (k, v) VALUES ('script', 's'); UPDATE t SET v = 'changed' WHERE id = 1; "
                 "SELECT repeat('x', 200000) AS big"}),
    "insert_row big value": ("insert_row", {"table": "t", "columns": {"k": "new", "v": BIG}}),
    "upsert_row new row": ("upsert_row", {"table": "t", "columns": {"k": "new", "v": BIG}, "conflictColumns": ["k"]}),
    "upsert_row existing row": ("upsert_row", {"table": "t", "columns": {"k": "k1", "v": BIG},
                                               "conflictColumns": ["k"]}),
    "insert_rows returning": ("insert_rows", {"table": "t", "returning": True,
                                              "rows": [{"v": "r" * 1000} for _ in range(200)]}),
    "upsert_rows returning": ("upsert_rows", {"table": "t", "conflictColumns": ["k"], "returning": True,
                                              "rows": [{"k": f"k{i}", "v": "u" * 1000} for i in range(1, 201)]}),
    "run_transaction": ("run_transaction", {"steps": [
        {"action": "insert_row", "inputs": {"table": "t", "columns": {"k": f"tx{i}", "v": PART}}} for i in range(3)]}),
    "run_transaction with a big read step": ("run_transaction", {"steps": [
        {"action": "insert_row", "inputs": {"table": "t", "columns": {"k": "tx", "v": "small"}}},
        {"action": "query_rows", "inputs": {"query": "SELECT * FROM t"}}]}),
}


@pytest.mark.parametrize("case", list(WRITES_OVER_THE_CAP))
def test_output_over_the_cap_changes_nothing(capped: Runtime, table, case: str) -> None:
    action, inputs = WRITES_OVER_THE_CAP[case]
    before = _snapshot(table)
    _too_large(capped.run, action, table.profile, inputs)
    assert _snapshot(table) == before


def test_call_function_whose_value_passes_the_cap_changes_nothing(capped: Runtime, table) -> None:
    table.sql("CREATE FUNCTION big_insert() RETURNS text LANGUAGE plpgsql AS $$ BEGIN "
              "INSERT INTO t (k, v) VALUES ('fn', 'f'); RETURN repeat('x', 200000); END $$")
    before = _snapshot(table)
    _too_large(capped.run, "call_function", table.profile, {"name": "big_insert"})
    assert _snapshot(table) == before


def test_call_function_set_returning_over_the_cap_changes_nothing(capped: Runtime, table) -> None:
    table.sql("CREATE FUNCTION big_rows() RETURNS SETOF t LANGUAGE plpgsql AS $$ BEGIN "
              "RETURN QUERY INSERT INTO t (v) SELECT repeat('s', 1000) FROM generate_series(1, 200) RETURNING *; END $$")
    before = _snapshot(table)
    _too_large(capped.run, "call_function", table.profile, {"name": "big_rows"})
    assert _snapshot(table) == before


def test_the_same_writes_under_the_cap_commit(capped: Runtime, table) -> None:
    """The control: with a small output the same paths do commit (the cap is what stopped them)."""
    capped.run("insert_row", table.profile, {"table": "t", "columns": {"k": "small", "v": PART}})
    capped.run("run_transaction", table.profile, {"steps": [
        {"action": "insert_row", "inputs": {"table": "t", "columns": {"k": "tx0", "v": PART}}}]})
    assert table.sql("SELECT count(*) FROM t")[0][0] == ROWS + 2


# -- batches ----------------------------------------------------------------------------------------

def _insert_items(*values: str, prefix: str = "item") -> list[dict]:
    return [{"inputs": {"table": "t", "columns": {"k": f"{prefix}{i}", "v": "{{ trigger.v }}"}},
             "context": {"trigger": {"v": value}}} for i, value in enumerate(values)]


def test_batch_transaction_mode_over_the_cap_changes_nothing(capped: Runtime, table) -> None:
    before = _snapshot(table)
    _too_large(capped.run_batch, "insert_row", table.profile, _insert_items(PART, PART, PART), "transaction")
    assert _snapshot(table) == before


def test_batch_transaction_mode_with_one_oversized_item_changes_nothing(capped: Runtime, table) -> None:
    before = _snapshot(table)
    _too_large(capped.run_batch, "insert_row", table.profile, _insert_items("small", BIG, "small"), "transaction")
    assert _snapshot(table) == before


@pytest.mark.parametrize("action,query", [
    ("execute_query", "INSERT INTO t (k, v) VALUES ($1, $2) RETURNING *"),
    ("update_rows", "UPDATE t SET v = $2 WHERE k = $1 RETURNING *"),
])
def test_batch_single_mode_over_the_cap_changes_nothing(capped: Runtime, table, action: str, query: str) -> None:
    keys = ["s0", "s1", "s2"] if action == "execute_query" else ["k1", "k2", "k3"]
    items = [{"inputs": {"query": query, "parameters": [key, PART]}} for key in keys]
    before = _snapshot(table)
    _too_large(capped.run_batch, action, table.profile, items, "single")
    assert _snapshot(table) == before


def test_batch_single_mode_with_one_oversized_item_changes_nothing(capped: Runtime, table) -> None:
    items = [{"inputs": {"query": "INSERT INTO t (k, v) VALUES ($1, $2) RETURNING *", "parameters": [key, value]}}
             for key, value in (("s0", "small"), ("s1", BIG), ("s2", "small"))]
    before = _snapshot(table)
    _too_large(capped.run_batch, "execute_query", table.profile, items, "single")
    assert _snapshot(table) == before


def test_batch_independent_mode_rolls_back_only_the_oversized_items(capped: Runtime, table) -> None:
    out = capped.run_batch("insert_row", table.profile, _insert_items("small-a", BIG, "small-b", BIG),
                           "independent").data
    assert (out["mode"], out["ok"], out["succeeded"], out["failed"]) == ("independent", False, 2, 2)
    assert [item["ok"] for item in out["items"]] == [True, False, True, False]
    assert [item["index"] for item in out["items"]] == [0, 1, 2, 3]
    assert out["items"][1]["error"]["code"] == "RESULT_TOO_LARGE"
    assert out["items"][3]["error"]["code"] == "RESULT_TOO_LARGE"
    assert out["items"][0]["output"]["row"]["v"] == "small-a"
    added = table.sql("SELECT k, v FROM t WHERE k LIKE 'item%%' ORDER BY k")
    assert added == [("item0", "small-a"), ("item2", "small-b")]


# -- write guards -----------------------------------------------------------------------------------

GUARDED = {
    "delete_rows sql": ("delete_rows", {"query": "DELETE FROM t"}),
    "delete_rows structured": ("delete_rows", {"table": "t", "allowAllRows": True}),
    "update_rows sql": ("update_rows", {"query": "UPDATE t SET v = 'guarded'"}),
    "execute_query": ("execute_query", {"query": "UPDATE t SET v = 'guarded'"}),
    "insert_rows": ("insert_rows", {"table": "t", "rows": [{"v": "g"} for _ in range(ROWS)]}),
}


@pytest.mark.parametrize("case", list(GUARDED))
def test_max_affected_rows_rolls_back(runtime: Runtime, table, case: str) -> None:
    action, inputs = GUARDED[case]
    before = _snapshot(table)
    with pytest.raises(ActionError) as info:
        runtime.run(action, table.profile, {**inputs, "maxAffectedRows": 5})
    assert info.value.code == "MAX_AFFECTED_ROWS"
    assert info.value.payload["rowCount"] == ROWS and info.value.payload["maxAffectedRows"] == 5
    assert _snapshot(table) == before


@pytest.mark.parametrize("case", list(GUARDED))
def test_dry_run_reports_and_rolls_back(runtime: Runtime, table, case: str) -> None:
    action, inputs = GUARDED[case]
    before = _snapshot(table)
    out = runtime.run(action, table.profile, {**inputs, "dryRun": True}).data
    assert out["dryRun"] is True and out["rowCount"] == ROWS
    assert _snapshot(table) == before


def test_guards_inside_a_transaction(runtime: Runtime, table) -> None:
    """A dry-run step is rolled back while the others commit; a guarded step that trips rolls
    back the whole transaction."""
    before = _snapshot(table)
    out = runtime.run("run_transaction", table.profile, {"steps": [
        {"id": "dry", "action": "delete_rows", "inputs": {"query": "DELETE FROM t", "dryRun": True}},
        {"id": "add", "action": "insert_row", "inputs": {"table": "t", "columns": {"k": "kept", "v": "v"}}},
    ]}).data
    assert out["committed"] is True and out["steps"][0]["output"]["rowCount"] == ROWS
    assert out["steps"][0]["output"]["dryRun"] is True
    after = _snapshot(table)
    assert after[:-1] == before and after[-1][1:] == ("kept", "v")
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", table.profile, {"steps": [
            {"id": "add", "action": "insert_row", "inputs": {"table": "t", "columns": {"k": "lost", "v": "v"}}},
            {"id": "wipe", "action": "delete_rows", "inputs": {"query": "DELETE FROM t", "maxAffectedRows": 5}},
        ]})
    assert info.value.code == "MAX_AFFECTED_ROWS" and info.value.payload["step"] == "wipe"
    assert _snapshot(table) == after


# -- values are rendered once -----------------------------------------------------------------------

TEMPLATE_TEXT = "{{ 7*7 }}"


@pytest.fixture
def plain(db):
    db.sql("CREATE TABLE r (id serial PRIMARY KEY, k text UNIQUE, v text)")
    return db


def _stored(db) -> list[str]:
    return [row[0] for row in db.sql("SELECT v FROM r ORDER BY id")]


@pytest.mark.parametrize("mode", ["single", "transaction", "independent"])
def test_batch_insert_row_stores_a_template_looking_value_as_is(runtime: Runtime, plain, mode: str) -> None:
    items = [{"inputs": {"table": "r", "columns": {"v": "{{ trigger.v }}"}}, "context": {"trigger": {"v": TEMPLATE_TEXT}}},
             {"inputs": {"table": "r", "columns": {"v": "{{ trigger.v }}"}}, "context": {"trigger": {"v": "plain"}}}]
    runtime.run_batch("insert_row", plain.profile, items, mode)
    assert _stored(plain) == [TEMPLATE_TEXT, "plain"]


@pytest.mark.parametrize("mode", ["single", "transaction", "independent"])
def test_batch_upsert_row_stores_a_template_looking_value_as_is(runtime: Runtime, plain, mode: str) -> None:
    plain.sql("INSERT INTO r (k, v) VALUES ('a', 'old')")
    items = [{"inputs": {"table": "r", "columns": {"k": "{{ trigger.k }}", "v": "{{ trigger.v }}"},
                         "conflictColumns": ["k"]},
              "context": {"trigger": {"k": key, "v": TEMPLATE_TEXT}}} for key in ("a", "b")]
    runtime.run_batch("upsert_row", plain.profile, items, mode)
    assert plain.sql("SELECT k, v FROM r ORDER BY k") == [("a", TEMPLATE_TEXT), ("b", TEMPLATE_TEXT)]


def test_transaction_step_uses_an_earlier_output_as_data(runtime: Runtime, plain) -> None:
    out = runtime.run("run_transaction", plain.profile, {"steps": [
        {"id": "first", "action": "insert_row", "inputs": {"table": "r", "columns": {"v": "{{ trigger.v }}"}}},
        {"id": "read", "action": "query_rows",
         "inputs": {"query": "SELECT v FROM r WHERE id = $1", "parameters": ["{{ steps.first.insertedId }}"]}},
        {"id": "second", "action": "insert_row", "inputs": {"table": "r", "columns": {"v": "{{ steps.first.row.v }}"}}},
        {"id": "third", "action": "insert_row", "inputs": {"table": "r", "columns": {"v": "{{ steps.read.rows[0].v }}"}}},
    ]}, {"trigger": {"v": TEMPLATE_TEXT}}).data
    assert out["committed"] is True
    assert out["steps"][1]["output"]["rows"] == [{"v": TEMPLATE_TEXT}]
    assert _stored(plain) == [TEMPLATE_TEXT] * 3


@pytest.mark.parametrize("mode", ["single", "transaction", "independent"])
@pytest.mark.parametrize("inputs", [
    {"query": "INSERT INTO r (v) VALUES ($1) RETURNING v", "parameters": ["{{ trigger.v }}"]},
    {"query": "INSERT INTO r (v) VALUES ({{ trigger.v }}) RETURNING v"},
], ids=["parameter", "sql template"])
def test_batch_execute_query_stores_a_template_looking_value_as_is(runtime: Runtime, plain, mode: str,
                                                                  inputs: dict) -> None:
    items = [{"inputs": inputs, "context": {"trigger": {"v": TEMPLATE_TEXT}}} for _ in range(2)]
    runtime.run_batch("execute_query", plain.profile, items, mode)
    assert _stored(plain) == [TEMPLATE_TEXT] * 2


def test_transaction_sql_step_uses_an_earlier_output_as_data(runtime: Runtime, plain) -> None:
    runtime.run("run_transaction", plain.profile, {"steps": [
        {"id": "first", "action": "insert_row", "inputs": {"table": "r", "columns": {"v": "{{ trigger.v }}"}}},
        {"action": "execute_query", "inputs": {"query": "INSERT INTO r (v) VALUES ({{ steps.first.row.v }})"}},
        {"action": "execute_query", "inputs": {"query": "INSERT INTO r (v) VALUES ($1)",
                                               "parameters": ["{{ steps.first.row.v }}"]}},
        {"action": "update_rows", "inputs": {"table": "r", "set": {"k": "{{ steps.first.row.v }}"},
                                             "where": [{"column": "id", "value": "{{ steps.first.insertedId }}"}]}},
    ]}, {"trigger": {"v": TEMPLATE_TEXT}})
    assert _stored(plain) == [TEMPLATE_TEXT] * 3
    assert plain.sql("SELECT k FROM r WHERE k IS NOT NULL") == [(TEMPLATE_TEXT,)]


def test_single_actions_store_a_template_looking_value_as_is(runtime: Runtime, plain) -> None:
    context = {"trigger": {"v": TEMPLATE_TEXT}}
    runtime.run("insert_row", plain.profile, {"table": "r", "columns": {"k": "one", "v": "{{ trigger.v }}"}}, context)
    runtime.run("upsert_row", plain.profile, {"table": "r", "columns": {"k": "two", "v": "{{ trigger.v }}"},
                                              "conflictColumns": ["k"]}, context)
    runtime.run("insert_rows", plain.profile, {"table": "r", "rows": [{"k": "three", "v": "{{ trigger.v }}"}]}, context)
    runtime.run("execute_query", plain.profile, {"query": "INSERT INTO r (k, v) VALUES ('four', $1)",
                                                 "parameters": ["{{ trigger.v }}"]}, context)
    assert _stored(plain) == [TEMPLATE_TEXT] * 4


# -- a transaction is never run again outside a transaction -----------------------------------------

@pytest.mark.parametrize("statement", [
    "VACUUM t",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "CREATE INDEX CONCURRENTLY t_v ON t (v)",
])
def test_run_transaction_stays_all_or_nothing_when_a_step_refuses_a_transaction_block(
        runtime: Runtime, table, statement: str) -> None:
    """A step that cannot run inside the transaction (SQLSTATE 25001) fails the transaction; the
    steps before it are not committed one by one in autocommit."""
    before = _snapshot(table)
    with pytest.raises(ActionError) as info:
        runtime.run("run_transaction", table.profile, {"steps": [
            {"action": "insert_row", "inputs": {"table": "t", "columns": {"k": "first", "v": "v"}}},
            {"action": "execute_query", "inputs": {"query": statement}},
            {"action": "insert_row", "inputs": {"table": "t", "columns": {"k": "k1", "v": "duplicate key"}}},
        ]})
    assert info.value.payload.get("rolledBack") is True
    assert _snapshot(table) == before


def test_batch_transaction_mode_stays_all_or_nothing_when_an_item_refuses_a_transaction_block(
        runtime: Runtime, table) -> None:
    before = _snapshot(table)
    items = [{"inputs": {"query": query}} for query in
             ("INSERT INTO t (k, v) VALUES ('first', 'v')", "VACUUM t", "INSERT INTO t (k, v) VALUES ('k1', 'dup')")]
    with pytest.raises(ActionError):
        runtime.run_batch("execute_query", table.profile, items, "transaction")
    assert _snapshot(table) == before


def test_script_that_refuses_a_transaction_block_changes_nothing(runtime: Runtime, table) -> None:
    before = _snapshot(table)
    with pytest.raises(ActionError):
        runtime.run("execute_query", table.profile, {"query": "INSERT INTO t (k, v) VALUES ('first', 'v'); VACUUM t"})
    with pytest.raises(ActionError):
        runtime.run("execute_query", table.profile,
                    {"query": "UPDATE t SET v = 'changed'; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"})
    assert _snapshot(table) == before
