"""The records API's translation layer (service/records.py): PostgREST's grammar → the actions'
inputs, each refusal an INVALID_INPUT naming what is wrong, and every produced call run through a
real Runtime to check the rows a PostgREST user expects."""

from __future__ import annotations

from typing import Any

import pytest

from pgactions import ActionError, Runtime
from pgactions.service import records
from pgactions.service.records import (
    COUNT_LIMIT,
    RecordCall,
    Target,
    column_error_to_invalid,
    count_needed,
    parse_filters,
    parse_order,
    parse_prefer,
    parse_select,
    parse_target,
    rpc,
    shape_response,
    table_delete,
    table_insert,
    table_read,
    table_update,
)

# The database tests also run through PgBouncer in transaction mode (the parser tests once).
pytestmark = pytest.mark.pooler_modes

# --------------------------------------------------------------------------------------------
# Parsers, no database


def _refused(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ActionError) as info:
        fn(*args, **kwargs)
    assert info.value.code == "INVALID_INPUT"
    return info.value.payload


@pytest.mark.parametrize(("text", "expected"), [
    ("users", Target(None, "users")),
    ("public.users", Target("public", "users")),
    ('"my.table"', Target(None, "my.table")),
    ('"my schema"."my.table"', Target("my schema", "my.table")),
    ('app."Orders"', Target("app", "Orders")),
    ('"a""b".c', Target('a"b', "c")),
    ("MixedCase", Target(None, "MixedCase")),
])
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["", ".users", "public.", "a..b", "a.b.c", '"unclosed', 'a"b.c', '"a"x.b', '""'])
def test_parse_target_refuses(text: str) -> None:
    assert _refused(parse_target, text)["field"] == "table"


@pytest.mark.parametrize(("query", "where"), [
    ("age=eq.18", [{"column": "age", "operator": "eq", "value": "18"}]),
    ("age=neq.18", [{"column": "age", "operator": "ne", "value": "18"}]),
    ("age=gt.18", [{"column": "age", "operator": "gt", "value": "18"}]),
    ("age=gte.18", [{"column": "age", "operator": "gte", "value": "18"}]),
    ("age=lt.18", [{"column": "age", "operator": "lt", "value": "18"}]),
    ("age=lte.18", [{"column": "age", "operator": "lte", "value": "18"}]),
    ("name=like.Jo*", [{"column": "name", "operator": "like", "value": "Jo%"}]),
    ("name=ilike.*jo*", [{"column": "name", "operator": "ilike", "value": "%jo%"}]),
    ("s=in.(a,b)", [{"column": "s", "operator": "in", "value": ["a", "b"]}]),
    ('s=in.(a,"c,d","e\\"f")', [{"column": "s", "operator": "in", "value": ["a", "c,d", 'e"f']}]),
    ("s=in.()", [{"column": "s", "operator": "in", "value": []}]),
    ("x=is.null", [{"column": "x", "operator": "is null"}]),
    ("x=is.NULL", [{"column": "x", "operator": "is null"}]),
    ("x=is.not_null", [{"column": "x", "operator": "is not null"}]),
    ("x=is.true", [{"column": "x", "operator": "is", "value": True}]),
    ("x=is.false", [{"column": "x", "operator": "is", "value": False}]),
    ("x=is.unknown", [{"column": "x", "operator": "is null"}]),
    ("tags=cs.{a,b}", [{"column": "tags", "operator": "contains", "value": "{a,b}"}]),
    ('data=cs.{"k":1}', [{"column": "data", "operator": "contains", "value": '{"k":1}'}]),
    # values stay as sent: dots, quotes and parentheses after the operator are the value's own
    ("v=eq.1.5", [{"column": "v", "operator": "eq", "value": "1.5"}]),
    ('v=eq."x"', [{"column": "v", "operator": "eq", "value": '"x"'}]),
    ("v=eq.", [{"column": "v", "operator": "eq", "value": ""}]),
    ('"my col"=eq.1', [{"column": "my col", "operator": "eq", "value": "1"}]),
    ('"a.b"=eq.1', [{"column": "a.b", "operator": "eq", "value": "1"}]),
])
def test_parse_filters_operators(query: str, where: list[dict[str, Any]]) -> None:
    key, _, value = query.partition("=")
    assert parse_filters([(key, value)]) == where


@pytest.mark.parametrize(("query", "where"), [
    ("age=not.eq.18", [{"column": "age", "operator": "ne", "value": "18"}]),
    ("age=not.neq.18", [{"column": "age", "operator": "eq", "value": "18"}]),
    ("age=not.gt.18", [{"column": "age", "operator": "lte", "value": "18"}]),
    ("age=not.gte.18", [{"column": "age", "operator": "lt", "value": "18"}]),
    ("age=not.lt.18", [{"column": "age", "operator": "gte", "value": "18"}]),
    ("age=not.lte.18", [{"column": "age", "operator": "gt", "value": "18"}]),
    ("x=not.is.null", [{"column": "x", "operator": "is not null"}]),
    ("x=not.is.not_null", [{"column": "x", "operator": "is null"}]),
    ("x=not.is.true", [{"or": [{"column": "x", "operator": "is", "value": False},
                                {"column": "x", "operator": "is null"}]}]),
    ("x=not.is.false", [{"or": [{"column": "x", "operator": "is", "value": True},
                                 {"column": "x", "operator": "is null"}]}]),
    ("s=not.in.(a,b)", [{"and": [{"column": "s", "operator": "ne", "value": "a"},
                                  {"column": "s", "operator": "ne", "value": "b"}]}]),
    ("s=not.in.(a)", [{"column": "s", "operator": "ne", "value": "a"}]),
    ("s=not.in.()", [{"or": [{"column": "s", "operator": "is null"}, {"column": "s", "operator": "is not null"}]}]),
])
def test_parse_filters_not(query: str, where: list[dict[str, Any]]) -> None:
    key, _, value = query.partition("=")
    assert parse_filters([(key, value)]) == where


def test_parse_filters_groups() -> None:
    assert parse_filters([("or", "(age.lt.18,status.eq.c)")]) == [{"or": [
        {"column": "age", "operator": "lt", "value": "18"}, {"column": "status", "operator": "eq", "value": "c"}]}]
    assert parse_filters([("and", "(a.gte.1,or(b.is.null,c.in.(x,\"y,z\")),not.and(d.eq.1,e.lt.2))")]) == [{"and": [
        {"column": "a", "operator": "gte", "value": "1"},
        {"or": [{"column": "b", "operator": "is null"}, {"column": "c", "operator": "in", "value": ["x", "y,z"]}]},
        {"or": [{"column": "d", "operator": "ne", "value": "1"}, {"column": "e", "operator": "gte", "value": "2"}]},
    ]}]
    # quoted values inside a group lose their quotes; reserved characters are safe inside them
    assert parse_filters([("or", '(name.eq."Doe, John",name.eq."a.(b)",n.not.eq.2)')]) == [{"or": [
        {"column": "name", "operator": "eq", "value": "Doe, John"},
        {"column": "name", "operator": "eq", "value": "a.(b)"},
        {"column": "n", "operator": "ne", "value": "2"}]}]
    # not. before a group: De Morgan, each condition negated
    assert parse_filters([("not.or", "(a.eq.1,b.is.null)")]) == [{"and": [
        {"column": "a", "operator": "ne", "value": "1"}, {"column": "b", "operator": "is not null"}]}]
    assert parse_filters([("and", "(a.gte.1,not.or(b.eq.1,c.in.(x,y)))")]) == [{"and": [
        {"column": "a", "operator": "gte", "value": "1"},
        {"and": [{"column": "b", "operator": "ne", "value": "1"},
                 {"and": [{"column": "c", "operator": "ne", "value": "x"},
                          {"column": "c", "operator": "ne", "value": "y"}]}]}]}]
    # nested or inside and, and the reserved parameters are not filters
    assert parse_filters([("select", "a"), ("order", "a"), ("limit", "1"), ("offset", "0"), ("columns", "a"),
                          ("on_conflict", "a"), ("allowAllRows", "true"),
                          ("and", "(a.eq.1,or(b.eq.2,c.eq.3))")]) == [{"and": [
        {"column": "a", "operator": "eq", "value": "1"},
        {"or": [{"column": "b", "operator": "eq", "value": "2"}, {"column": "c", "operator": "eq", "value": "3"}]}]}]


def test_deep_groups_are_refused() -> None:
    deep = "(" + "or(" * 40 + "a.eq.1" + ")" * 40 + ")"
    payload = _refused(parse_filters, [("and", deep)])
    assert payload["field"] == "and" and "nested deeper" in payload["detail"]
    ok = "(" + "or(" * 20 + "a.eq.1" + ")" * 20 + ")"
    assert parse_filters([("and", ok)])


def test_not_like_in_a_group_is_refused() -> None:
    payload = _refused(parse_filters, [("and", "(a.gte.1,not.and(d.eq.1,e.like.*q))")])
    assert payload["field"] == "and" and "not.like" in payload["detail"]


@pytest.mark.parametrize(("key", "value", "says"), [
    ("age", "18", "unknown operator '18'"),
    ("age", "gte", "needs a value"),
    ("age", "foo.1", "unknown operator 'foo'"),
    ("age", "not.foo.1", "unknown operator 'foo'"),
    ("name", "match.^J", "'match' is not supported"),
    ("name", "fts.cat", "'fts' is not supported"),
    ("tags", "ov.{a}", "'ov' is not supported"),
    ("tags", "cd.{a}", "'cd' is not supported"),
    ("name", "isdistinct.x", "'isdistinct' is not supported"),
    ("name", "eq(any).{a,b}", "modifier"),
    ("name", "not.like.J*", "not.like is not supported"),
    ("name", "not.ilike.J*", "not.ilike is not supported"),
    ("tags", "not.cs.{a}", "not.cs is not supported"),
    ("x", "is.maybe", "is takes null"),
    ("s", "in.a,b", "parenthesized list"),
    ("s", "in.(a,\"b)", "unclosed double quote"),
    ("or", "a.eq.1", "parenthesized list"),
    ("or", "(a.eq.1,)", "empty condition"),
    ("or", "(a.eq.1,b)", "needs column.operator.value"),
    ("or", "(a.eq.1,b.zz.2)", "unknown operator 'zz'"),
    ("or", "(a.eq.1", "parenthesized list"),
    ("data->>k", "eq.1", "JSON paths"),
    ("x::text", "eq.1", "casts"),
    ("actors.name", "eq.1", "embedded resources"),
    ("actors.or", "(a.eq.1)", "embedded resources"),
])
def test_parse_filters_refuses(key: str, value: str, says: str) -> None:
    payload = _refused(parse_filters, [(key, value)])
    assert payload["field"] == key
    assert says in payload["detail"]


def test_parse_select() -> None:
    assert parse_select("*") is None and parse_select("") is None
    assert parse_select("id,name") == ["id", "name"]
    assert parse_select(' id , "my col","a.b"') == ["id", "my col", "a.b"]
    for text, says in [("*,id", "* cannot be combined"), ("id,*", "* cannot be combined"),
                       ("id,actors(*)", "embedded resources"), ("id,director!fk(name)", "embedded resources"),
                       ("full_name:name", "aliases"), ("age::text", "casts"), ("data->a", "JSON paths"),
                       ("id,,name", "empty column"), ("id,id", "given twice"), ("actors.name", "embedded")]:
        payload = _refused(parse_select, text)
        assert payload["field"] == "select" and says in payload["detail"], (text, payload)


def test_parse_order() -> None:
    assert parse_order("created_at.desc.nullslast,name,age.asc,b.nullsfirst") == [
        {"column": "created_at", "direction": "desc", "nulls": "last"}, {"column": "name"},
        {"column": "age", "direction": "asc"}, {"column": "b", "nulls": "first"}]
    assert parse_order('"a.b".desc') == [{"column": "a.b", "direction": "desc"}]
    for text, says in [("a.up", "unknown modifier 'up'"), ("a.nullslast.desc", "unknown modifier 'desc'"),
                       ("a,", "empty sort key"), ("actors(name).desc", "embedded"), ("data->a", "JSON paths")]:
        payload = _refused(parse_order, text)
        assert payload["field"] == "order" and says in payload["detail"], (text, payload)


def test_parse_prefer() -> None:
    assert parse_prefer(None) == {}
    assert parse_prefer("return=representation, count=exact") == {"return": "representation", "count": "exact"}
    assert parse_prefer(["resolution=merge-duplicates", "tx=rollback"]) == {
        "resolution": "merge-duplicates", "tx": "rollback"}
    assert parse_prefer("return=everything, frobnicate") == {}  # lenient: ignored, as PostgREST does
    assert _refused(parse_prefer, "handling=strict, frobnicate")["field"] == "Prefer"


def test_table_read_call() -> None:
    call = table_read("public.users", [("select", "id,name"), ("age", "gte.18"), ("status", "in.(a,b)"),
                                       ("name", "ilike.*jo*"), ("order", "created_at.desc.nullslast"),
                                       ("limit", "50"), ("offset", "0")], "count=exact")
    assert call.action_id == "find_rows" and call.read_only and call.kind == "rows"
    assert call.inputs == {
        "table": "users", "schema": "public", "select": ["id", "name"],
        "where": [{"column": "age", "operator": "gte", "value": "18"},
                  {"column": "status", "operator": "in", "value": ["a", "b"]},
                  {"column": "name", "operator": "ilike", "value": "%jo%"}],
        "orderBy": [{"column": "created_at", "direction": "desc", "nulls": "last"}], "limit": 50}
    assert call.count_exact and call.count_call is not None and call.count_call.read_only
    assert call.count_call.inputs == {"table": "users", "schema": "public", "select": ["id"],
                                      "where": call.inputs["where"], "limit": COUNT_LIMIT}
    assert call.param_for("where/1/value") == "status" and call.param_for("orderBy/0/column") == "order"
    # without limit: every row (up to the service's cap)
    assert table_read("t", []).inputs == {"table": "t", "limit": records.FIND_ROWS_MAX}
    assert table_read("t", [("limit", "5000")], max_rows=1000).inputs["limit"] == 1000
    assert table_read("t", [], accept="application/vnd.pgrst.object+json").kind == "single"
    for params, field in [([("limit", "-1")], "limit"), ([("offset", "x")], "offset"),
                          ([("limit", "1"), ("limit", "2")], "limit"), ([("columns", "a")], "columns"),
                          ([("allowAllRows", "true")], "allowAllRows")]:
        assert _refused(table_read, "t", params)["field"] == field


def test_write_calls() -> None:
    one = table_insert("t", {"a": 1}, "return=representation")
    assert (one.action_id, one.inputs, one.kind, one.read_only) == ("insert_row", {"table": "t", "columns": {"a": 1}},
                                                                    "row", False)
    many = table_insert("s.t", [{"a": 1}, {"a": 2}], "return=representation")
    assert many.action_id == "insert_rows" and many.inputs == {"table": "t", "schema": "s", "rows": [{"a": 1}, {"a": 2}],
                                                              "returning": True}
    upsert = table_insert("t", {"a": 1, "b": 2}, "resolution=merge-duplicates", [("on_conflict", "a")])
    assert upsert.action_id == "upsert_rows" and upsert.inputs == {
        "table": "t", "rows": [{"a": 1, "b": 2}], "onConflict": "update", "conflictColumns": ["a"]}
    assert table_insert("t", [{"a": 1}], "resolution=ignore-duplicates").inputs["onConflict"] == "skip"
    assert table_insert("t", [{"a": 1, "b": 2}], None, [("columns", "a")]).inputs["rows"] == [{"a": 1}]
    assert _refused(table_insert, "t", {})["field"] == "body"  # the actions insert no row of only defaults
    assert _refused(table_insert, "t", [{"a": 1}, {}])["field"] == "body/1"
    assert _refused(table_insert, "t", [1, 2])["field"] == "body/0"
    assert _refused(table_insert, "t", "x")["field"] == "body"
    assert _refused(table_insert, "t", {"a": 1}, None, [("on_conflict", "a")])["field"] == "on_conflict"
    assert _refused(table_insert, "t", {"a": 1}, None, [("select", "*"), ("a", "eq.1")])["field"] == "a"
    assert _refused(table_insert, "t", {"a": 1}, None, [("select", "a")])["field"] == "select"
    table_insert("t", {"a": 1}, "return=representation", [("select", "*")])  # supabase-js sends select=*

    patch = table_update("t", {"s": "x"}, [("id", "eq.1")], "return=representation")
    assert patch.action_id == "update_rows" and patch.inputs == {
        "table": "t", "set": {"s": "x"}, "where": [{"column": "id", "operator": "eq", "value": "1"}],
        "returning": True}
    assert _refused(table_update, "t", {"s": "x"}, [])["field"] == "allowAllRows"
    assert table_update("t", {"s": "x"}, [("allowAllRows", "true")]).inputs["allowAllRows"] is True
    assert _refused(table_update, "t", {}, [("id", "eq.1")])["field"] == "body"
    assert _refused(table_update, "t", [{"s": 1}], [("id", "eq.1")])["field"] == "body"
    assert _refused(table_update, "t", {"s": 1}, [("id", "eq.1"), ("limit", "1")])["field"] == "limit"

    delete = table_delete("t", [("id", "in.(1,2)")], "tx=rollback")
    assert delete.action_id == "delete_rows" and delete.inputs == {
        "table": "t", "where": [{"column": "id", "operator": "in", "value": ["1", "2"]}], "dryRun": True}
    payload = _refused(table_delete, "t", [])
    assert payload["field"] == "allowAllRows" and "allowAllRows=true" in payload["detail"]
    assert _refused(table_delete, "t", [("allowAllRows", "yes")])["field"] == "allowAllRows"
    assert table_delete("t", [("allowAllRows", "true")]).inputs == {"table": "t", "allowAllRows": True}
    strict = table_delete("t", [("id", "gt.1")], "handling=strict, max-affected=5")
    assert strict.inputs["maxAffectedRows"] == 5 and "max-affected=5" in strict.preference_applied


def test_rpc_call() -> None:
    post = rpc("app.add", {"a": 1, "b": 2})
    assert (post.action_id, post.inputs, post.read_only) == (
        "call_function", {"name": "add", "schema": "app", "arguments": {"a": 1, "b": 2}}, False)
    get = rpc("add", [("a", "1"), ("b", "2")], method="GET")
    assert get.read_only and get.inputs == {"name": "add", "arguments": {"a": "1", "b": "2"}}
    assert rpc("f", None).inputs["arguments"] == {}
    assert _refused(rpc, "f", [1, 2])["field"] == "body"
    assert _refused(rpc, "f", [("a", "1"), ("a", "2")], method="GET")["field"] == "a"
    assert _refused(rpc, "a.b.c", {})["field"] == "function"


def test_shape_response_without_database() -> None:
    call = table_read("t", [("limit", "2"), ("offset", "4")], "count=exact")
    full = {"rows": [{"id": 5}, {"id": 6}], "rowCount": 2}
    assert count_needed(call, full)
    assert shape_response(call, full, {"rowCount": 9, "rows": []}) == (
        206, {"Preference-Applied": "count=exact", "Content-Range": "4-5/9"}, full["rows"])
    assert shape_response(call, full, None)[1]["Content-Range"] == "4-5/*"  # the count could not run
    assert shape_response(call, full, {"rowCount": COUNT_LIMIT})[1]["Content-Range"] == "4-5/*"
    short = {"rows": [{"id": 5}], "rowCount": 1}
    assert not count_needed(call, short)  # the page shows the total
    assert shape_response(call, short)[:2] == (200, {"Preference-Applied": "count=exact", "Content-Range": "4-4/5"})
    empty = {"rows": [], "rowCount": 0}
    assert count_needed(call, empty)  # past the end: how far?
    assert shape_response(call, empty, {"rowCount": 3})[1]["Content-Range"] == "*/3"
    plain = table_read("t", [])
    assert shape_response(plain, empty) == (200, {"Content-Range": "*/*"}, [])
    assert shape_response(table_delete("t", [("id", "eq.1")]), {"rowCount": 1}) == (204, {}, None)
    assert shape_response(table_insert("t", {"a": 1}), {"row": {"a": 1}, "rowCount": 1, "insertedId": None}) == (
        201, {}, None)


# --------------------------------------------------------------------------------------------
# Through a real Runtime

PEOPLE = """
CREATE TABLE people (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    age int,
    status text,
    active boolean,
    born date,
    tags text[] NOT NULL DEFAULT '{}',
    data jsonb,
    "my col" text
);
INSERT INTO people (name, email, age, status, active, born, tags, data, "my col") VALUES
    ('John Doe',    'john@example.com', 34, 'a', true,  '1990-01-01', '{x,y}', '{"k": 1}', 'one'),
    ('Mary Jones',  'mary@example.com', 17, 'b', false, '2008-05-05', '{y}',   '{"k": 2}', NULL),
    ('Jo Smith',    'jo@example.com',   18, 'a', NULL,  '2007-01-01', '{}',    NULL,       'a,b'),
    ('Bob',         NULL,               NULL, 'c', true, NULL,        '{x}',   '{"k": 1, "z": true}', NULL),
    ('Ann Johnson', 'ann@example.com',  52, 'b', false, '1972-03-04', '{z}',   '{"k": 3}', 'two');
CREATE FUNCTION add(a int, b int DEFAULT 10) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION adults(min_age int) RETURNS SETOF people LANGUAGE sql STABLE
    AS 'SELECT * FROM people WHERE age >= min_age ORDER BY id';
CREATE FUNCTION bump(who int) RETURNS int LANGUAGE sql AS 'UPDATE people SET age = age + 1 WHERE id = who RETURNING age';
"""


@pytest.fixture
def people(db: Any) -> Any:
    db.sql(PEOPLE)
    return db


def _run(runtime: Runtime, db: Any, call: RecordCall) -> tuple[int, dict[str, str], Any]:
    """What the app does with a call: run it, its count when needed, shape the answer."""
    try:
        output = runtime.run(call.action_id, db.profile, call.inputs).data
        count = None
        if call.count_call is not None and count_needed(call, output):
            count = runtime.run(call.count_call.action_id, db.profile, call.count_call.inputs).data
    except ActionError as exc:
        raise column_error_to_invalid(exc, call) from None
    return shape_response(call, output, count)


def _get(runtime: Runtime, db: Any, query: str, prefer: str | None = None, **kwargs: Any) -> Any:
    from urllib.parse import parse_qsl

    return _run(runtime, db, table_read("people", parse_qsl(query, keep_blank_values=True), prefer, **kwargs))


def _names(answer: Any) -> list[str]:
    return [row["name"] for row in answer[2]]


def test_the_issue_example(runtime: Runtime, people: Any) -> None:
    status, headers, body = _get(runtime, people, "select=name,age&age=gte.18&status=in.(a,b)&order=age.desc&limit=2",
                                 "count=exact")
    assert status == 206 and body == [{"name": "Ann Johnson", "age": 52}, {"name": "John Doe", "age": 34}]
    assert headers["Content-Range"] == "0-1/3"
    status, headers, body = _get(runtime, people, "age=gte.18&status=in.(a,b)&order=age.desc&limit=2&offset=2",
                                 "count=exact")
    assert status == 200 and _names((0, 0, body)) == ["Jo Smith"] and headers["Content-Range"] == "2-2/3"
    status, headers, body = _get(runtime, people, "age=gte.18&offset=10", "count=exact")
    assert (status, headers["Content-Range"], body) == (200, "*/3", [])
    status, headers, body = _get(runtime, people, "order=id")
    assert status == 200 and len(body) == 5 and headers == {"Content-Range": "0-4/*"}
    assert set(body[0]) == {"id", "name", "email", "age", "status", "active", "born", "tags", "data", "my col"}


@pytest.mark.parametrize(("query", "expected"), [
    ("age=eq.18", ["Jo Smith"]),                          # text compared with an integer column
    ("age=neq.18", ["John Doe", "Mary Jones", "Ann Johnson"]),
    ("age=gt.34", ["Ann Johnson"]),
    ("age=lt.18", ["Mary Jones"]),
    ("age=lte.18", ["Mary Jones", "Jo Smith"]),
    ("born=lt.2000-01-01", ["John Doe", "Ann Johnson"]),  # text compared with a date column
    ("name=like.Jo*", ["John Doe", "Jo Smith"]),
    ("name=ilike.*jo*", ["John Doe", "Mary Jones", "Jo Smith", "Ann Johnson"]),
    ("email=like.*@example.com", ["John Doe", "Mary Jones", "Jo Smith", "Ann Johnson"]),
    ("id=in.(1,3,99)", ["John Doe", "Jo Smith"]),          # text list compared with integers
    ("id=in.()", []),
    ('"my col"=in.(one,"a,b")', ["John Doe", "Jo Smith"]),
    ("age=is.null", ["Bob"]),
    ("age=is.not_null", ["John Doe", "Mary Jones", "Jo Smith", "Ann Johnson"]),
    ("active=is.true", ["John Doe", "Bob"]),
    ("active=is.false", ["Mary Jones", "Ann Johnson"]),
    ("active=eq.true", ["John Doe", "Bob"]),
    ("active=is.unknown", ["Jo Smith"]),
    ("tags=cs.{x}", ["John Doe", "Bob"]),
    ("tags=cs.{x,y}", ["John Doe"]),
    ('data=cs.{"k":1}', ["John Doe", "Bob"]),
    ("age=not.eq.18", ["John Doe", "Mary Jones", "Ann Johnson"]),
    ("age=not.gt.18", ["Mary Jones", "Jo Smith"]),
    ("age=not.is.null", ["John Doe", "Mary Jones", "Jo Smith", "Ann Johnson"]),
    ("active=not.is.true", ["Mary Jones", "Jo Smith", "Ann Johnson"]),
    ("active=not.is.false", ["John Doe", "Jo Smith", "Bob"]),
    ("status=not.in.(a,b)", ["Bob"]),
    ("id=not.in.()", ["John Doe", "Mary Jones", "Jo Smith", "Bob", "Ann Johnson"]),
    ("or=(age.lt.18,status.eq.c)", ["Mary Jones", "Bob"]),
    ("or=(name.eq.\"Doe, John\",name.eq.\"John Doe\")", ["John Doe"]),
    ("and=(age.gte.18,or(status.eq.b,active.is.null))", ["Jo Smith", "Ann Johnson"]),
    ("not.or=(age.lt.18,status.eq.c)", ["John Doe", "Jo Smith", "Ann Johnson"]),
    ("not.and=(age.gte.18,status.eq.a)", ["Mary Jones", "Bob", "Ann Johnson"]),  # Bob: NOT (NULL AND false)
    ("status=eq.a&age=gt.20", ["John Doe"]),
    ("age=gte.18&age=lte.40", ["John Doe", "Jo Smith"]),
])
def test_filters_find_the_rows(runtime: Runtime, people: Any, query: str, expected: list[str]) -> None:
    assert _names(_get(runtime, people, query + "&order=id")) == expected


def test_select_order_limit(runtime: Runtime, people: Any) -> None:
    assert _get(runtime, people, 'select=id,"my col"&order=id&limit=2')[2] == [
        {"id": 1, "my col": "one"}, {"id": 2, "my col": None}]
    assert _names(_get(runtime, people, "order=age.desc.nullsfirst,id&limit=2")) == ["Bob", "Ann Johnson"]
    assert _names(_get(runtime, people, "order=age.asc.nullslast&offset=3")) == ["Ann Johnson", "Bob"]
    assert _names(_get(runtime, people, "order=status.desc,name&limit=3")) == ["Bob", "Ann Johnson", "Mary Jones"]
    assert len(_get(runtime, people, "limit=0")[2]) == 0
    assert len(_get(runtime, people, "", max_rows=3)[2]) == 3


def test_single_object(runtime: Runtime, people: Any) -> None:
    accept = "application/vnd.pgrst.object+json"
    assert _get(runtime, people, "id=eq.3", accept=accept)[2]["name"] == "Jo Smith"
    with pytest.raises(ActionError) as info:
        _get(runtime, people, "id=eq.99", accept=accept)
    assert info.value.code == "NOT_FOUND"
    with pytest.raises(ActionError) as info:
        _get(runtime, people, "status=eq.a", accept=accept)
    assert info.value.code == "MULTIPLE_ROWS"


@pytest.mark.parametrize(("query", "field", "column"), [
    ("nope=eq.1", "nope", "nope"),
    ("or=(age.eq.1,nope.eq.2)", "or", "nope"),
    ("select=id,nope", "select", "nope"),
    ("order=nope.desc", "order", "nope"),
])
def test_unknown_columns_are_invalid_input_naming_them(runtime: Runtime, people: Any, query: str, field: str,
                                                      column: str) -> None:
    with pytest.raises(ActionError) as info:
        _get(runtime, people, query)
    payload = info.value.payload
    assert info.value.code == "INVALID_INPUT" and payload["field"] == field
    assert repr(column) in payload["detail"] and "name" in payload["columns"]
    assert payload["detail"].startswith(f"{field}: ") and "where/" not in payload["detail"]


def test_unknown_table_stays_undefined_table(runtime: Runtime, people: Any) -> None:
    with pytest.raises(ActionError) as info:
        _run(runtime, people, table_read("nope", []))
    assert info.value.code == "UNDEFINED_TABLE"


def test_values_of_the_wrong_type(runtime: Runtime, people: Any) -> None:
    with pytest.raises(ActionError) as info:
        _get(runtime, people, "age=eq.abc")
    assert info.value.code == "INVALID_VALUE", info.value.payload


def test_count_of_a_big_page_runs_the_count_call(runtime: Runtime, people: Any) -> None:
    status, headers, body = _get(runtime, people, "limit=2&order=id", "count=exact")
    assert (status, headers["Content-Range"], len(body)) == (206, "0-1/5", 2)
    status, headers, body = _get(runtime, people, "select=id&or=(age.lt.20,age.is.null)&limit=1&order=id",
                                 "count=exact")
    assert (status, headers["Content-Range"], body) == (206, "0-0/3", [{"id": 2}])


def test_insert_one_and_many(runtime: Runtime, people: Any) -> None:
    status, headers, body = _run(runtime, people, table_insert("people", {"name": "Eve", "age": "40"},
                                                               "return=representation"))
    assert status == 201 and headers == {"Preference-Applied": "return=representation"}
    assert len(body) == 1 and body[0]["name"] == "Eve" and body[0]["age"] == 40 and body[0]["tags"] == []
    assert _run(runtime, people, table_insert("people", {"name": "Finn"})) == (201, {}, None)
    status, _, body = _run(runtime, people, table_insert("people", [{"name": "G1", "age": 1}, {"name": "G2"}],
                                                         "return=representation"))
    assert status == 201 and [(r["name"], r["age"]) for r in body] == [("G1", 1), ("G2", None)]
    assert _run(runtime, people, table_insert("people", [{"name": "H1"}, {"name": "H2"}], "count=exact")) == (
        201, {"Preference-Applied": "count=exact", "Content-Range": "*/2"}, None)
    assert _run(runtime, people, table_insert("people", [])) == (201, {}, None)
    assert people.sql("SELECT count(*) FROM people")[0][0] == 11


def test_insert_unknown_column(runtime: Runtime, people: Any) -> None:
    for body in ({"name": "x", "nope": 1}, [{"name": "x", "nope": 1}]):
        with pytest.raises(ActionError) as info:
            _run(runtime, people, table_insert("people", body))
        assert info.value.code == "INVALID_INPUT" and "nope" in info.value.payload["detail"]
        assert info.value.payload["field"] == "body"


def test_upsert(runtime: Runtime, people: Any) -> None:
    status, headers, body = _run(runtime, people, table_insert(
        "people", [{"email": "john@example.com", "name": "John D.", "age": 35},
                   {"email": "new@example.com", "name": "New"}],
        "resolution=merge-duplicates, return=representation", [("on_conflict", "email")]))
    assert status == 201 and "resolution=merge-duplicates" in headers["Preference-Applied"]
    assert sorted(r["name"] for r in body) == ["John D.", "New"]
    assert people.sql("SELECT name, age FROM people WHERE id = 1") == [("John D.", 35)]
    _run(runtime, people, table_insert("people", {"email": "mary@example.com", "name": "Ignored"},
                                       "resolution=ignore-duplicates", [("on_conflict", "email")]))
    assert people.sql("SELECT name FROM people WHERE id = 2") == [("Mary Jones",)]
    _run(runtime, people, table_insert("people", {"id": 4, "name": "Robert"}, "resolution=merge-duplicates"))
    assert people.sql("SELECT name, status FROM people WHERE id = 4") == [("Robert", "c")]


def test_patch(runtime: Runtime, people: Any) -> None:
    status, headers, body = _run(runtime, people, table_update("people", {"status": "z"},
                                                               [("age", "lt.18")], "return=representation"))
    assert status == 200 and [r["name"] for r in body] == ["Mary Jones"] and body[0]["status"] == "z"
    assert _run(runtime, people, table_update("people", {"active": "true"}, [("active", "is.null")])) == (204, {}, None)
    assert people.sql("SELECT count(*) FROM people WHERE active IS NULL")[0][0] == 0
    _run(runtime, people, table_update("people", {"status": "all"}, [("allowAllRows", "true")]))
    assert people.sql("SELECT DISTINCT status FROM people") == [("all",)]
    with pytest.raises(ActionError) as info:
        _run(runtime, people, table_update("people", {"status": "x"}, [("nope", "eq.1")]))
    assert info.value.code == "INVALID_INPUT" and info.value.payload["field"] == "nope"
    with pytest.raises(ActionError) as info:
        _run(runtime, people, table_update("people", {"nope": "x"}, [("id", "eq.1")]))
    assert info.value.code == "INVALID_INPUT" and "nope" in info.value.payload["detail"]


def test_delete(runtime: Runtime, people: Any) -> None:
    assert _run(runtime, people, table_delete("people", [("status", "eq.a")], "tx=rollback")) == (
        204, {"Preference-Applied": "tx=rollback"}, None)
    assert people.sql("SELECT count(*) FROM people")[0][0] == 5
    status, _, body = _run(runtime, people, table_delete("people", [("or", "(age.lt.18,age.is.null)")],
                                                         "return=representation"))
    assert status == 200 and sorted(r["name"] for r in body) == ["Bob", "Mary Jones"]
    with pytest.raises(ActionError) as info:
        _run(runtime, people, table_delete("people", [("id", "gt.0")], "handling=strict, max-affected=1"))
    assert info.value.code == "MAX_AFFECTED_ROWS"
    assert _run(runtime, people, table_delete("people", [("allowAllRows", "true")], "count=exact")) == (
        204, {"Preference-Applied": "count=exact", "Content-Range": "*/3"}, None)
    assert people.sql("SELECT count(*) FROM people")[0][0] == 0


def test_rpc(runtime: Runtime, people: Any) -> None:
    assert _run(runtime, people, rpc("add", {"a": 1, "b": 2})) == (200, {}, 3)
    assert _run(runtime, people, rpc(f"{people.schema}.add", [("a", "5")], method="GET")) == (200, {}, 15)
    status, _, body = _run(runtime, people, rpc("adults", {"min_age": 18}))
    assert status == 200 and [r["name"] for r in body] == ["John Doe", "Jo Smith", "Ann Johnson"]
    with pytest.raises(ActionError) as info:
        _run(runtime, people, rpc("nope", {}))
    assert info.value.code == "UNDEFINED_FUNCTION"


def test_catalog_routes(runtime: Runtime, people: Any) -> None:
    _, _, tables = _run(runtime, people, records.list_tables(people.schema))
    assert [t["name"] for t in tables] == ["people"]
    _, _, schemas = _run(runtime, people, records.list_schemas())
    assert people.schema in [s["name"] for s in schemas]
    _, _, functions = _run(runtime, people, records.list_functions(people.schema))
    assert {f["name"] for f in functions} == {"add", "adults", "bump"}
    _, _, functions = _run(runtime, people, records.list_functions(people.schema, "add"))
    assert [f["name"] for f in functions] == ["add"]
    status, _, meta = _run(runtime, people, records.table_metadata(f"{people.schema}.people"))
    assert status == 200 and meta["name"] == "people" and "email" in [c["name"] for c in meta["columns"]]
    for call in (records.list_tables(), records.list_schemas(), records.list_functions(),
                 records.table_metadata("people"), table_read("people", [])):
        assert call.read_only and call.method == "GET"

