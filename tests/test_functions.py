"""Functions and procedures: list, read, create, delete, call with IN/OUT/INOUT and refcursors."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime

pytestmark = pytest.mark.pooler_modes

ROUTINES = """
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(8,2));
INSERT INTO items VALUES (1, 'pen', 1.50), (2, 'book', 12.00), (3, 'lamp', 30.00);
CREATE FUNCTION add(a int, b int DEFAULT 10) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION add(a text, b text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT a || b';
CREATE FUNCTION cheap_items(max_price numeric) RETURNS SETOF items LANGUAGE sql STABLE
    AS 'SELECT * FROM items WHERE price <= max_price ORDER BY id';
CREATE FUNCTION price_range(OUT low numeric, OUT high numeric) LANGUAGE sql
    AS 'SELECT min(price), max(price) FROM items';
CREATE FUNCTION item_names(prefix text) RETURNS TABLE (id int, label text) LANGUAGE plpgsql AS $$
BEGIN RETURN QUERY SELECT i.id, prefix || i.name FROM items i ORDER BY i.id; END $$;
CREATE FUNCTION two_cursors() RETURNS SETOF refcursor LANGUAGE plpgsql AS $$
DECLARE a refcursor := 'cheap'; b refcursor := 'dear';
BEGIN
  OPEN a FOR SELECT id, name FROM items WHERE price < 10 ORDER BY id; RETURN NEXT a;
  OPEN b FOR SELECT id, name FROM items WHERE price >= 10 ORDER BY id; RETURN NEXT b;
END $$;
CREATE PROCEDURE raise_price(IN item int, INOUT price numeric, OUT old_price numeric) LANGUAGE plpgsql AS $$
BEGIN
  SELECT i.price INTO old_price FROM items i WHERE i.id = item;
  UPDATE items SET price = raise_price.price WHERE id = item;
  price := price * 2;
END $$;
CREATE PROCEDURE open_cursor(INOUT result refcursor) LANGUAGE plpgsql AS $$
BEGIN OPEN result FOR SELECT name FROM items ORDER BY id; END $$;
"""


@pytest.fixture
def routines(db):
    db.sql(ROUTINES)
    return db


def call(runtime: Runtime, db, name: str, arguments, **extra) -> dict:
    return runtime.run("call_function", db.profile, {"name": name, "arguments": arguments, **extra}).data


def test_list_functions(runtime: Runtime, routines) -> None:
    out = runtime.run("list_functions", routines.profile, {}).data
    by_signature = {f["signature"]: f for f in out["functions"]}
    assert set(by_signature) >= {"add(integer,integer)", "add(text,text)", "cheap_items(numeric)",
                                 "raise_price(integer,numeric)"}
    add = by_signature["add(integer,integer)"]
    assert (add["kind"], add["returns"], add["language"], add["volatility"]) == ("function", "integer", "sql", "immutable")
    assert add["arguments"] == [{"name": "a", "mode": "IN", "type": "integer"}, {"name": "b", "mode": "IN", "type": "integer"}]
    proc = by_signature["raise_price(integer,numeric)"]
    assert proc["kind"] == "procedure"
    assert [a["mode"] for a in proc["arguments"]] == ["IN", "INOUT", "OUT"]
    assert by_signature["cheap_items(numeric)"]["returnsSet"] is True
    only = runtime.run("list_functions", routines.profile, {"name": "add"}).data
    assert only["count"] == 2


def test_get_function(runtime: Runtime, routines) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("get_function", routines.profile, {"name": "add"})
    assert info.value.code == "INVALID_INPUT" and len(info.value.payload["signatures"]) == 2
    out = runtime.run("get_function", routines.profile, {"name": "add", "argumentTypes": ["text", "text"]}).data
    assert out["signature"] == "add(text,text)" and "CREATE OR REPLACE FUNCTION" in out["definition"]
    assert "a || b" in out["definition"]


def test_call_scalar_named_positional_and_defaults(runtime: Runtime, routines) -> None:
    assert call(runtime, routines, "add", {"a": 2, "b": 3}) == {"result": 5}
    assert runtime.run("call_function", routines.profile, {"name": "add", "arguments": {"a": "{{ trigger.n }}"}},
                       {"trigger": {"n": 7}}).data == {"result": 17}  # b defaults to 10
    assert call(runtime, routines, "add", [1, 2], argumentTypes=["integer", "integer"]) == {"result": 3}
    assert call(runtime, routines, "add", ["ab", "cd"], argumentTypes=["text", "text"]) == {"result": "abcd"}
    with pytest.raises(ActionError) as info:
        call(runtime, routines, "add", {"a": 1, "nope": 2})
    assert info.value.code == "UNDEFINED_FUNCTION"
    with pytest.raises(ActionError) as info:
        call(runtime, routines, "no_such_function", {})
    assert info.value.code == "UNDEFINED_FUNCTION"


def test_call_set_returning_and_out_parameters(runtime: Runtime, routines) -> None:
    out = call(runtime, routines, "cheap_items", {"max_price": "12"})
    assert out == {"rows": [{"id": 1, "name": "pen", "price": "1.50"}, {"id": 2, "name": "book", "price": "12.00"}],
                   "rowCount": 2}
    assert call(runtime, routines, "price_range", {}) == {"out": {"low": "1.50", "high": "30.00"}}
    table = call(runtime, routines, "item_names", ["#"])
    assert table["rows"][0] == {"id": 1, "label": "#pen"} and table["rowCount"] == 3


def test_call_procedure_with_inout_and_out(runtime: Runtime, routines) -> None:
    out = call(runtime, routines, "raise_price", {"item": 1, "price": "2.25"})
    assert out == {"out": {"price": "4.50", "old_price": "1.50"}}
    assert routines.sql("SELECT price::text FROM items WHERE id = 1") == [("2.25",)]
    assert call(runtime, routines, "raise_price", [2, 20]) == {"out": {"price": "40", "old_price": "12.00"}}


def test_call_returns_refcursor_result_sets(runtime: Runtime, routines) -> None:
    out = call(runtime, routines, "two_cursors", {})
    assert out["cursors"] == {"cheap": [{"id": 1, "name": "pen"}],
                              "dear": [{"id": 2, "name": "book"}, {"id": 3, "name": "lamp"}]}
    proc = call(runtime, routines, "open_cursor", {"result": "mine"})
    assert proc["out"] == {"result": "mine"} and proc["cursors"] == {"mine": [{"name": "pen"}, {"name": "book"},
                                                                              {"name": "lamp"}]}


def test_create_and_delete_function(runtime: Runtime, routines) -> None:
    definition = "CREATE OR REPLACE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS 'SELECT 2 * x'"
    out = runtime.run("create_function", routines.profile, {"definition": definition}).data
    assert out == {"success": True, "name": "twice", "schema": None, "kind": "function", "replace": True}
    assert call(runtime, routines, "twice", {"x": 21}) == {"result": 42}
    for bad in ("DROP TABLE items", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; DROP TABLE items",
                "CREATE TABLE x (a int)"):
        with pytest.raises(ActionError) as info:
            runtime.run("create_function", routines.profile, {"definition": bad})
        assert info.value.code == "INVALID_INPUT"
    assert routines.sql("SELECT count(*) FROM items") == [(3,)]
    with pytest.raises(ActionError) as info:
        runtime.run("delete_function", routines.profile, {"name": "add"})
    assert info.value.code == "INVALID_INPUT"  # two of them: which one?
    out = runtime.run("delete_function", routines.profile, {"name": "add", "argumentTypes": ["text", "text"]}).data
    assert out == {"success": True, "dropped": "add(text,text)"}
    runtime.run("delete_function", routines.profile, {"name": "twice"})
    left = {f["signature"] for f in runtime.run("list_functions", routines.profile, {}).data["functions"]}
    assert "add(integer,integer)" in left and "add(text,text)" not in left and "twice(integer)" not in left
    with pytest.raises(ActionError) as info:
        runtime.run("delete_function", routines.profile, {"name": "add", "argumentTypes": ["int); DROP TABLE items; --"]})
    assert info.value.code in ("UNDEFINED_FUNCTION", "INVALID_VALUE", "SYNTAX_ERROR")
    assert routines.sql("SELECT count(*) FROM items") == [(3,)]


def test_unqualified_names_resolve_like_postgresql(runtime: Runtime, db) -> None:
    """lower('ABC') works in SQL with this search path (pg_catalog implicitly first): so it does
    as an action, and the schema of the built-in is reported."""
    assert runtime.run("call_function", db.profile, {"name": "lower", "arguments": ["ABC"]}).data == {"result": "abc"}
    assert runtime.run("call_function", db.profile, {"name": "upper", "arguments": ["x"]}).data == {"result": "X"}
    # A routine of the profile's schema with a name no built-in has still resolves through the path.
    db.sql("CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql AS $$ SELECT upper(t) || '!' $$")
    assert runtime.run("call_function", db.profile, {"name": "shout", "arguments": ["hi"]}).data == {"result": "HI!"}
    found = runtime.run("get_function", db.profile, {"name": "lower", "argumentTypes": ["text"]}).data
    assert found["schema"] == "pg_catalog"


def test_a_builtin_comes_first_like_in_sql(runtime: Runtime, db) -> None:
    """A function of the user's schema named like a built-in (same arguments) loses to the
    built-in, as it does in SQL, because pg_catalog is searched first."""
    db.sql("CREATE FUNCTION lower(t text) RETURNS text LANGUAGE sql AS $$ SELECT 'mine' $$")
    sql = runtime.run("query_rows", db.profile, {"query": "SELECT lower('ABC') AS v"}).data["rows"][0]["v"]
    called = runtime.run("call_function", db.profile, {"name": "lower", "arguments": ["ABC"]}).data["result"]
    assert sql == called == "abc"
