"""Insert Rows and Upsert Rows: many rows at once, typed by the table, all or nothing."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime

pytestmark = pytest.mark.pooler_modes

TABLE = """
CREATE TABLE items (
    id bigserial PRIMARY KEY,
    sku text UNIQUE NOT NULL,
    name text NOT NULL,
    qty int NOT NULL DEFAULT 0 CHECK (qty >= 0),
    price numeric(10,2),
    tags text[],
    attrs jsonb,
    added_at timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
);
CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
"""


@pytest.fixture
def items(db):
    db.sql(TABLE)
    return db


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"sku": f"S{i}", "name": f"item {i}", "qty": i, "price": f"{i}.50", "tags": ["a", f"t{i}"],
             "attrs": {"n": i, "nested": {"ok": True}}, "added_at": f"2026-03-0{1 + i % 9}T10:00:00Z"}
            for i in range(start, start + n)]


def test_insert_rows_copy_path_types_every_column(runtime: Runtime, items) -> None:
    out = runtime.run("insert_rows", items.profile, {"table": "items", "rows": _rows(3)}).data
    assert out == {"rowCount": 3}
    rows = runtime.run("query_rows", items.profile, {"query": "SELECT sku, qty, price, tags, attrs, added_at "
                                                              "FROM items ORDER BY id"}).data["rows"]
    assert rows[2] == {"sku": "S2", "qty": 2, "price": "2.50", "tags": ["a", "t2"],
                       "attrs": {"n": 2, "nested": {"ok": True}}, "added_at": "2026-03-03T10:00:00Z"}


def test_a_column_a_row_leaves_out_gets_its_default(runtime: Runtime, items) -> None:
    rows = [{"sku": "A", "name": "a"}, {"sku": "B", "name": "b", "qty": 7}, {"sku": "C", "name": "c"}]
    assert runtime.run("insert_rows", items.profile, {"table": "items", "rows": rows}).data == {"rowCount": 3}
    assert items.sql("SELECT sku, qty, added_at IS NOT NULL FROM items ORDER BY sku") == [
        ("A", 0, True), ("B", 7, True), ("C", 0, True)]


@pytest.mark.parametrize("returning", [False, True], ids=["copy", "insert-select"])
def test_a_bad_row_fails_the_whole_call_with_its_index(runtime: Runtime, items, returning) -> None:
    rows = _rows(300)
    rows[117]["qty"] = -1  # breaks the CHECK constraint
    with pytest.raises(ActionError) as info:
        runtime.run("insert_rows", items.profile, {"table": "items", "rows": rows, "returning": returning})
    error = info.value.payload
    assert error["code"] == "CHECK_VIOLATION" and error["rowIndex"] == 117 and error["detail"].startswith("row 117")
    assert items.sql("SELECT count(*) FROM items") == [(0,)]  # nothing was inserted


@pytest.mark.parametrize("returning", [False, True], ids=["copy", "insert-select"])
def test_a_value_of_the_wrong_type_names_its_row(runtime: Runtime, items, returning) -> None:
    rows = _rows(50)
    rows[42]["added_at"] = "not a time"
    with pytest.raises(ActionError) as info:
        runtime.run("insert_rows", items.profile, {"table": "items", "rows": rows, "returning": returning})
    assert info.value.code == "INVALID_VALUE" and info.value.payload["rowIndex"] == 42
    assert items.sql("SELECT count(*) FROM items") == [(0,)]


def test_a_duplicate_inside_the_batch_names_the_second_row(runtime: Runtime, items) -> None:
    rows = _rows(20)
    rows[15]["sku"] = "S3"
    with pytest.raises(ActionError) as info:
        runtime.run("insert_rows", items.profile, {"table": "items", "rows": rows, "returning": True})
    assert info.value.code == "UNIQUE_VIOLATION" and info.value.payload["rowIndex"] == 15
    assert items.sql("SELECT count(*) FROM items") == [(0,)]


def test_unknown_column_names_the_row(runtime: Runtime, items) -> None:
    rows = [{"sku": "A", "name": "a"}, {"sku": "B", "nmae": "b"}]
    with pytest.raises(ActionError) as info:
        runtime.run("insert_rows", items.profile, {"table": "items", "rows": rows})
    assert info.value.code == "UNDEFINED_COLUMN" and info.value.payload["field"] == "rows/1"


def test_insert_rows_returning_and_conflicts(runtime: Runtime, items) -> None:
    first = runtime.run("insert_rows", items.profile, {"table": "items", "rows": _rows(3), "returning": True}).data
    assert first["rowCount"] == 3 and [r["id"] for r in first["rows"]] == [1, 2, 3]
    again = _rows(5)  # S0..S2 exist, S3 and S4 are new
    with pytest.raises(ActionError) as info:
        runtime.run("insert_rows", items.profile, {"table": "items", "rows": again})
    assert info.value.code == "UNIQUE_VIOLATION" and info.value.payload["rowIndex"] == 0
    skipped = runtime.run("insert_rows", items.profile, {"table": "items", "rows": again, "onConflict": "skip"}).data
    assert skipped == {"rowCount": 2, "skipped": 3}
    changed = [{**r, "name": "renamed"} for r in _rows(6)]
    updated = runtime.run("insert_rows", items.profile, {"table": "items", "rows": changed, "onConflict": "update",
                                                         "conflictColumns": ["sku"]}).data
    assert updated == {"rowCount": 6, "inserted": 1, "updated": 5}
    assert items.sql("SELECT count(*), count(*) FILTER (WHERE name = 'renamed') FROM items") == [(6, 6)]


def test_upsert_rows_counts_inserted_and_updated(runtime: Runtime, items) -> None:
    runtime.run("insert_rows", items.profile, {"table": "items", "rows": _rows(4)})
    rows = [{"sku": f"S{i}", "name": f"new {i}", "qty": 100 + i} for i in range(2, 7)]
    out = runtime.run("upsert_rows", items.profile, {"table": "items", "rows": rows, "conflictColumns": ["sku"],
                                                     "returning": True}).data
    assert (out["inserted"], out["updated"], out["skipped"], out["rowCount"]) == (3, 2, 0, 5)
    assert {r["sku"]: r["qty"] for r in out["rows"]} == {f"S{i}": 100 + i for i in range(2, 7)}
    assert items.sql("SELECT qty FROM items WHERE sku = 'S0'") == [(0,)]  # untouched


def test_upsert_rows_finds_the_key_itself_and_handles_composite_keys(runtime: Runtime, items) -> None:
    rows = [{"a": 1, "b": "x", "v": 1}, {"a": 1, "b": "y", "v": 2}]
    assert runtime.run("upsert_rows", items.profile, {"table": "pairs", "rows": rows}).data["inserted"] == 2
    rows = [{"a": 1, "b": "x", "v": 10}, {"a": 2, "b": "x", "v": 20}]
    out = runtime.run("upsert_rows", items.profile, {"table": "pairs", "rows": rows}).data  # the primary key (a, b)
    assert (out["inserted"], out["updated"]) == (1, 1)
    assert items.sql("SELECT a, b, v FROM pairs ORDER BY a, b") == [(1, "x", 10), (1, "y", 2), (2, "x", 20)]


def test_upsert_rows_on_constraint_and_do_nothing(runtime: Runtime, items) -> None:
    runtime.run("insert_rows", items.profile, {"table": "items", "rows": _rows(2)})
    rows = [{"sku": "S1", "name": "changed"}, {"sku": "S9", "name": "nine"}]
    out = runtime.run("upsert_rows", items.profile, {"table": "items", "rows": rows,
                                                     "constraint": "items_sku_key"}).data
    assert (out["inserted"], out["updated"]) == (1, 1)
    rows = [{"sku": "S1", "name": "ignored"}, {"sku": "S10", "name": "ten"}]
    out = runtime.run("upsert_rows", items.profile, {"table": "items", "rows": rows, "conflictColumns": ["sku"],
                                                     "onConflict": "skip"}).data
    assert (out["inserted"], out["updated"], out["skipped"]) == (1, 0, 1)
    assert items.sql("SELECT name FROM items WHERE sku = 'S1'") == [("changed",)]


def test_upsert_rows_refuses_a_key_given_twice(runtime: Runtime, items) -> None:
    rows = [{"sku": "A", "name": "a"}, {"sku": "B", "name": "b"}, {"sku": "A", "name": "again"}]
    with pytest.raises(ActionError) as info:
        runtime.run("upsert_rows", items.profile, {"table": "items", "rows": rows, "conflictColumns": ["sku"]})
    assert info.value.code == "INVALID_INPUT" and "rows 0 and 2" in info.value.payload["detail"]


def test_upsert_rows_without_a_key_to_match_on(runtime: Runtime, items) -> None:
    items.sql("CREATE TABLE loose (x int, y int)")
    with pytest.raises(ActionError) as info:
        runtime.run("upsert_rows", items.profile, {"table": "loose", "rows": [{"x": 1}]})
    assert info.value.code == "INVALID_INPUT" and "conflictColumns" in info.value.payload["detail"]


def test_large_batches_pass_the_parameter_limit(runtime: Runtime, items) -> None:
    """20,000 rows × 7 columns = 140,000 values: far past PostgreSQL's 65,535 parameters."""
    rows = _rows(20_000)
    out = runtime.run("upsert_rows", items.profile, {"table": "items", "rows": rows, "conflictColumns": ["sku"]}).data
    assert (out["inserted"], out["updated"]) == (20_000, 0)
    rows[19_999]["qty"] = 5
    out = runtime.run("upsert_rows", items.profile, {"table": "items", "rows": rows, "conflictColumns": ["sku"]}).data
    assert (out["inserted"], out["updated"]) == (0, 20_000)
    assert items.sql("SELECT count(*), sum(qty) FROM items") == [(20_000, sum(range(19_999)) + 5)]


def test_templates_in_rows(runtime: Runtime, items) -> None:
    rows = [{"sku": "{{ trigger.sku }}", "name": "{{ trigger.name | upper }}"}]
    runtime.run("insert_rows", items.profile, {"table": "items", "rows": rows},
                {"trigger": {"sku": "T1", "name": "templated"}})
    assert items.sql("SELECT sku, name FROM items") == [("T1", "TEMPLATED")]


def test_no_rows_is_nothing_to_do(runtime: Runtime, items) -> None:
    assert runtime.run("insert_rows", items.profile, {"table": "items", "rows": []}).data == {"rowCount": 0}
    out = runtime.run("upsert_rows", items.profile, {"table": "items", "rows": [], "conflictColumns": ["sku"]}).data
    assert out == {"rowCount": 0, "inserted": 0, "updated": 0, "skipped": 0}
