"""Property-based fuzzing of the whole pipeline against the real test database (hypothesis).

Generated identifiers, values, templates, connection secrets and whole action inputs (built from
every manifest's own input schema) go through ``Runtime.run``.  The properties, for every input:

- nothing but :class:`pgactions.ActionError` ever leaves ``Runtime.run``, and no failure is an
  internal one in disguise (``DATABASE_ERROR`` "unexpected …");
- every error code is in ``ERROR_CATALOG``; the payload validates against
  ``schemas/error.schema.json`` and serializes with orjson (what the CLI prints);
- no password of the profile appears in an error (payload strings and the exception's text);
- values are bound, never SQL text: a value sent as a parameter, through a ``{{ template }}`` in
  the parameters or in the SQL (bare or inside quotes) comes back from PostgreSQL exactly as
  sent (``SELECT $1::text``, jsonb, numeric, float8, bytea), or fails with a code when
  PostgreSQL cannot hold it (NUL, lone surrogates, NaN in JSON);
- identifiers: a row inserted into a table named by any generated text (quotes, backslashes,
  dots, spaces, NUL, names past PostgreSQL's 63 bytes) lands in exactly that table, created first
  with ``psycopg.sql.Identifier``, or the action fails with a code and no table changed;
- templates built from a small grammar (paths, filters, arithmetic, string operations, sandbox
  escapes, unbalanced braces) only ever render or fail with a code, and integer arithmetic and
  string operations agree with Python;
- inputs generated from each manifest's schema (and mutated to be invalid): schema-invalid input
  is INVALID_INPUT (python-jsonschema is the oracle), a success validates against the manifest's
  output schema, and the session the action used is clean afterwards (search_path,
  application_name, read-only default, statement_timeout).

Example budgets: every test runs twice, ``[default]`` with a few dozen examples, derandomized (the
same examples on every run, so CI stays deterministic; the whole file takes about 30 s), and
``[slow]``, marked ``slow`` (``python -m pytest -m slow``; ``.ci/run`` runs it) with many more
examples, derandomized as well so CI is repeatable; ``PGACTIONS_FUZZ_SEED=random`` makes it explore
afresh on every run (pass ``--hypothesis-seed=N`` to repeat one; a failure prints the
``@reproduce_failure`` blob).  The budgets are the hypothesis profiles ``pgactions-default``
and ``pgactions-slow`` below; hypothesis is given no example database (nothing is kept between
runs).  The template tests rely on templates being bounded in size and time
(``render/templating.py``): an unbounded ``**`` tower would otherwise not end.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import string
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import jsonschema
import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, note, reject, settings
from hypothesis import strategies as st
from psycopg import sql

from pgactions import ERROR_CATALOG, ActionError, Runtime, load_manifests
from pgactions.db.connect import search_path
from pgactions.spec.manifests import load_schema

from .conftest import APP_PASSWORD

# -- budgets -------------------------------------------------------------------------------------

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("pgactions-default", max_examples=80, derandomize=True, **_COMMON)
# Derandomized too, so CI is repeatable; set PGACTIONS_FUZZ_SEED=random for a fresh exploration.
settings.register_profile("pgactions-slow", max_examples=800,
                          derandomize=os.environ.get("PGACTIONS_FUZZ_SEED") != "random", **_COMMON)

BUDGETS = [pytest.param("default", id="default"), pytest.param("slow", id="slow", marks=pytest.mark.slow)]


def budget_settings(budget: str, scale: float = 1.0) -> settings:
    """The hypothesis settings of a budget, with *scale* times its examples."""
    profile = settings.get_profile(f"pgactions-{budget}")
    return settings(profile, max_examples=max(5, int(profile.max_examples * scale)))


# -- the properties every outcome must have -----------------------------------------------------

ERROR_VALIDATOR = jsonschema.Draft202012Validator(load_schema("error.schema.json"))
SECRETS = (APP_PASSWORD,)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def check_error(error: ActionError, secrets: tuple[str, ...] = SECRETS) -> None:
    """What every failure must be: a catalogue code, a valid payload, no secret, nothing internal."""
    payload = error.payload
    assert error.code in ERROR_CATALOG, error.code
    assert payload["code"] == error.code
    ERROR_VALIDATOR.validate(payload)
    orjson.dumps(payload)  # what the CLI prints (and a host's JSON encoder needs)
    # An exception nobody mapped (db/errormap.py): DATABASE_ERROR "unexpected KeyError: …", with no
    # SQLSTATE, maybe after a step's or item's label.
    assert not (error.code == "DATABASE_ERROR" and "sqlstate" not in payload
                and re.search(r"(^|: )unexpected \w+: ", str(payload.get("detail", "")))), \
        f"an internal failure reached the user: {payload.get('detail')}"
    spec = ERROR_CATALOG[error.code]
    fixed = {spec.message, spec.cause, *spec.fix}  # the catalogue's own words ("authentication" holds "then")
    shown = [text for text in (*_strings(payload), str(error), repr(error)) if text not in fixed]
    for secret in secrets:
        if len(secret) < 4:  # scrub() leaves those alone on purpose (they would garble every text)
            continue
        for form in {secret, quote(secret, safe="")}:
            leaked = [text for text in shown if form in text]
            assert not leaked, f"the password {secret!r} appears in the error: {leaked}"


def attempt(runtime: Runtime, action: str, profile: Any, inputs: Any, context: Any = None,
            secrets: tuple[str, ...] = SECRETS, **kwargs: Any) -> tuple[Any, ActionError | None]:
    """Run an action: (parsed output, None) or (None, the checked ActionError).  Any other
    exception propagates and fails the test."""
    try:
        result = runtime.run(action, profile, inputs, context, **kwargs)
    except ActionError as error:
        note(f"{action} failed: {error.payload}")
        check_error(error, secrets)
        return None, error
    data = json.loads(result.json)  # the standard parser: integers of any size stay exact
    note(f"{action} → {result.json[:500]!r}")
    return data, None


# -- generated data ------------------------------------------------------------------------------

NASTY = ['"', "'", "\\", ".", " ", "\x00", "$1", "?", "%s", "%(", "%", ";", "--", "/*", "*/", "\n", "\t", "{{", "}}",
         "{%", "E'", "$$", "ß", "İ", "ǅ", "日本", "😀", "\u200b", "\ufeff", "\u0301", "*"]

# Any unicode, surrogates included (they cannot be encoded as UTF-8).
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=40)
# Text PostgreSQL can hold: no NUL, no surrogate.
storable_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=3)), max_size=8).map("".join)


def is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_template_syntax(value: Any) -> bool:
    return any(marker in s for s in _strings_and_keys(value) for marker in ("{{", "{%", "{#"))


def _strings_and_keys(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings_and_keys(k)
            yield from _strings_and_keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings_and_keys(v)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """JSON-like values: None, bools, integers of any size, floats with NaN and infinities, any text."""
    text = st.one_of(any_text, nasty_text)
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70), st.floats(), text)
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(text, inner, max_size=4)),
                        max_leaves=max_leaves)


def identifiers() -> st.SearchStrategy[str]:
    """Names for tables, columns and schemas: any unicode, nasty pieces, names around 63 bytes."""
    return st.one_of(
        st.text(st.characters(exclude_categories=()), min_size=1, max_size=20),
        nasty_text.filter(bool),
        st.text(st.sampled_from("aé日😀 .\"'\\"), min_size=14, max_size=70),  # around 63 bytes in UTF-8
        st.sampled_from(["items", "Items", "ITEMS", "select", "user", "order", "a.b", "items.t", "x y",
                         'we"ird', "back\\slash", "it's", "ä" * 31, "ä" * 32, "a" * 63, "a" * 64]),
    )


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def jinja_string(text: str) -> str:
    """*text* as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- the database the properties run against ------------------------------------------------------

TABLES = """
CREATE TABLE items (id bigserial PRIMARY KEY, t text UNIQUE, n numeric, f double precision, j jsonb,
                    b boolean, by bytea, ts timestamptz, arr int[]);
CREATE TABLE vals (id bigserial PRIMARY KEY, t text, j jsonb, by bytea, n numeric);
INSERT INTO items (t, n, f, j, b) VALUES ('one', 1, 1.5, '{"a": 1}', true), ('two', 2, -0.5, '[1, 2]', false);
CREATE FUNCTION fz_add(a integer, b integer) RETURNS integer LANGUAGE sql AS 'SELECT a + b';
"""


@pytest.fixture
def fuzz_db(db: Any) -> Any:
    db.sql(TABLES)
    return db


@pytest.fixture
def check_conn(fuzz_db: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own (as the app role, in the test's schema) for checking."""
    with psycopg.connect(fuzz_db.server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(fuzz_db.schema)))
        yield conn


def expect_rows(data: Any, error: ActionError | None) -> list[dict[str, Any]]:
    assert error is None, error.payload
    return data["rows"]


# == values are bound, never SQL text ===========================================================

TEXT_FORMS = {
    "parameter": ("SELECT $1::text AS v", ["{value}"], "{v}"),
    "parameter-template": ("SELECT $1::text AS v", ["{{ trigger.v }}"], "{v}"),
    "mixed-template": ("SELECT $1::text AS v", ["<{{ trigger.v }}>"], "<{v}>"),
    "sql-template": ("SELECT {{ trigger.v }}::text AS v", [], "{v}"),
    "quoted-sql-template": ("SELECT '{{ trigger.v }}'::text AS v", [], "{v}"),
    "like-sql-template": ("SELECT '%{{ trigger.v }}%' AS v WHERE $1::int = 1", [1], "%{v}%"),
    "nested-list": ("SELECT ($1::text[])[2] AS v", [["a", "{{ trigger.v }}"]], "{v}"),
}


@pytest.mark.parametrize("budget", BUDGETS)
def test_text_comes_back_exactly_as_sent(budget: str, runtime: Runtime, fuzz_db: Any) -> None:
    profile = fuzz_db.profile

    @budget_settings(budget, scale=2)
    @given(value=st.one_of(any_text, nasty_text, st.text(max_size=3000)), form=st.sampled_from(sorted(TEXT_FORMS)),
           flow=st.none() | any_text)
    def check(value: str, form: str, flow: str | None) -> None:
        query, params, expected = TEXT_FORMS[form]
        if form == "parameter":
            assume(not has_template_syntax(value))  # parameters are templates: "{{" would render
            params = [value]
        data, error = attempt(runtime, "query_rows", profile, {"query": query, "parameters": params},
                              {"trigger": {"v": value}}, flow=flow)
        if is_storable(value):
            assert expect_rows(data, error) == [{"v": expected.replace("{v}", value)}]
        else:
            assert error is not None and error.code == "INVALID_VALUE", (data, error)

    check()


@pytest.mark.parametrize("budget", BUDGETS)
def test_numbers_come_back_exactly_as_sent(budget: str, runtime: Runtime, fuzz_db: Any) -> None:
    profile = fuzz_db.profile

    @budget_settings(budget)
    @given(number=st.one_of(st.integers(), st.integers(-10**400, 10**400), st.floats(), st.booleans(), st.none()),
           via_template=st.booleans())
    def check(number: Any, via_template: bool) -> None:
        if isinstance(number, bool) or number is None:
            query, expected = "SELECT $1::boolean AS v", number
        elif isinstance(number, int):
            query, expected = "SELECT $1::numeric::text AS v", str(number)
        else:
            query = "SELECT $1::float8 AS v"
            expected = ("NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")) \
                if not math.isfinite(number) else number
        params = ["{{ trigger.v }}"] if via_template else [number]
        data, error = attempt(runtime, "query_rows", profile, {"query": query, "parameters": params},
                              {"trigger": {"v": number}})
        got = expect_rows(data, error)[0]["v"]
        if isinstance(expected, float):  # JSON has one number type: 1.0 may come back as 1
            assert isinstance(got, (int, float)) and not isinstance(got, bool) and float(got) == expected, got
        else:
            assert got == expected and type(got) is type(expected), (got, expected)

    check()


def _canonical(value: Any) -> Any:
    """JSON as jsonb keeps it: numbers compared by value (jsonb stores numeric), keys unordered."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return ("number", Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return {k: _canonical(v) for k, v in value.items()}


def _jsonb_can_hold(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return is_storable(value)
    if isinstance(value, list):
        return all(_jsonb_can_hold(v) for v in value)
    if isinstance(value, dict):
        return all(is_storable(k) and _jsonb_can_hold(v) for k, v in value.items())
    return True


@pytest.mark.parametrize("budget", BUDGETS)
def test_json_round_trips_through_a_jsonb_column(budget: str, runtime: Runtime, fuzz_db: Any) -> None:
    profile = fuzz_db.profile

    @budget_settings(budget)
    @given(value=json_values().filter(lambda v: not isinstance(v, str)), via_template=st.booleans())
    def check(value: Any, via_template: bool) -> None:
        if not via_template:
            assume(not has_template_syntax(value))
        column = "{{ trigger.v }}" if via_template else value
        data, error = attempt(runtime, "insert_row", profile, {"table": "vals", "columns": {"j": column}},
                              {"trigger": {"v": value}})
        if any(0xD800 <= ord(c) <= 0xDFFF for text in _strings_and_keys(value) for c in text):
            return  # lone surrogates are refused; a high+low pair may reach jsonb as the one character
        if not _jsonb_can_hold(value):
            assert error is not None and error.code == "INVALID_VALUE", (data, error)
            return
        assert error is None, error.payload
        assert _canonical(data["row"]["j"]) == _canonical(value)
        got, error = attempt(runtime, "get_row", profile, {"table": "vals", "key": {"id": data["insertedId"]}})
        assert error is None, error.payload
        assert _canonical(got["row"]["j"]) == _canonical(value)

    check()


@pytest.mark.parametrize("budget", BUDGETS)
def test_bytea_round_trips_as_base64(budget: str, runtime: Runtime, fuzz_db: Any) -> None:
    profile = fuzz_db.profile

    @budget_settings(budget)
    @given(raw=st.binary(max_size=300), form=st.sampled_from(["base64", "hex", "garbage"]), garbage=nasty_text)
    def check(raw: bytes, form: str, garbage: str) -> None:
        text = {"base64": base64.b64encode(raw).decode(), "hex": "\\x" + raw.hex(), "garbage": garbage}[form]
        assume(not has_template_syntax(text))
        data, error = attempt(runtime, "insert_row", profile, {"table": "vals", "columns": {"by": text}})
        if form == "garbage":
            try:
                expected = base64.b64decode(text, validate=True) if not text.startswith("\\x") else None
            except ValueError:
                assert error is not None and error.code == "INVALID_VALUE", (data, error)
                return
            if expected is None:  # \x…: PostgreSQL's hex form, which the server checks
                return
            raw = expected
        assert error is None, error.payload
        assert base64.b64decode(data["row"]["by"]) == raw
        got, error = attempt(runtime, "get_row", profile, {"table": "vals", "key": {"id": data["insertedId"]}})
        assert error is None and base64.b64decode(got["row"]["by"]) == raw

    check()


# == identifiers ================================================================================

def _fits(name: str) -> bool:
    """Whether PostgreSQL can have an object of exactly this name."""
    return is_storable(name) and utf8_len(name) <= 63


def pg_name(name: str) -> str:
    """The name PostgreSQL makes of *name*: cut to 63 bytes, on a character boundary."""
    return name.encode("utf-8")[:63].decode("utf-8", "ignore")


def _row_counts(conn: psycopg.Connection[Any], schemas: list[str]) -> dict[tuple[str, str], int]:
    tables = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                          "WHERE c.relkind = 'r' AND n.nspname = ANY(%s)", [schemas]).fetchall()
    return {(s, t): conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(s), sql.Identifier(t)))
            .fetchone()[0] for s, t in tables}


@pytest.mark.parametrize("budget", BUDGETS)
def test_rows_land_in_exactly_the_named_table(budget: str, runtime: Runtime, fuzz_db: Any,
                                              check_conn: psycopg.Connection[Any]) -> None:
    """The table (and column, and schema) are created first with psycopg's sql.Identifier; where
    PostgreSQL cuts a long name, what it created is a decoy the action must not write into."""
    profile, home = fuzz_db.profile, fuzz_db.schema

    @budget_settings(budget, scale=1.5)
    @given(table=identifiers(), column=identifiers(), schema=st.none() | identifiers(),
           value=storable_text, via_context=st.booleans())
    def check(table: str, column: str, schema: str | None, value: str, via_context: bool) -> None:
        if has_template_syntax([table, column, schema]):
            via_context = True  # input strings are templates: such a name can only come from the flow
        if has_template_syntax(column):
            reject()  # a column name is an object key, which is never rendered: fine, but not this test
        dropped: list[sql.Composable] = []
        try:
            real_schema = home
            if schema is not None:
                assume(schema != home)
                if is_storable(schema):
                    assume(pg_name(schema) != home)
                    if check_conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                          [pg_name(schema)]).fetchone():
                        reject()  # public, pg_catalog …: not ours to write into
                    try:
                        check_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                    except psycopg.Error:  # pg_…
                        reject()
                    real_schema = pg_name(schema)
                    dropped.append(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(real_schema)))
                else:
                    real_schema = ""
            made_table = False
            if is_storable(table) and is_storable(column) and real_schema:
                try:
                    check_conn.execute(sql.SQL("CREATE TABLE {}.{} ({} text)").format(
                        sql.Identifier(real_schema), sql.Identifier(table), sql.Identifier(column)))
                except psycopg.errors.DuplicateTable:
                    reject()  # one of the fixture's own tables (items, vals)
                except psycopg.Error:  # a system column's name (xmin …)
                    reject()
                made_table = True
                if real_schema == home:
                    dropped.append(sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(home),
                                                                       sql.Identifier(pg_name(table))))
            named_exactly = made_table and _fits(table) and _fits(column) and (schema is None or _fits(schema))
            context = {"trigger": {"table": table, "schema": schema, "v": value}}
            inputs: dict[str, Any] = {"table": "{{ trigger.table }}" if via_context else table,
                                      "columns": {column: "{{ trigger.v }}"}}
            if schema is not None:
                inputs["schema"] = "{{ trigger.schema }}" if via_context else schema
            schemas = [home] + ([real_schema] if real_schema and real_schema != home else [])
            before = _row_counts(check_conn, schemas)
            data, error = attempt(runtime, "insert_row", profile, inputs, context)
            after = _row_counts(check_conn, schemas)
            changed = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
            if not named_exactly:
                assert error is not None, f"a row was inserted for a name no table can have: {data}, {changed}"
                assert changed == {}, changed
                return
            assert error is None, error.payload
            assert changed == {(real_schema, table): 1}, changed
            assert data["row"] == {column: value}
            stored = check_conn.execute(sql.SQL("SELECT {} FROM {}.{}").format(
                sql.Identifier(column), sql.Identifier(real_schema), sql.Identifier(table))).fetchall()
            assert stored == [(value,)]
            # The same table read back: by key, and through the identifier filter in SQL text.
            lookup: dict[str, Any] = {"table": "{{ trigger.table }}", "key": {column: "{{ trigger.v }}"}}
            if schema is not None:
                lookup["schema"] = "{{ trigger.schema }}"
            got, error = attempt(runtime, "get_row", profile, lookup, context)
            assert error is None and got["row"] == {column: value}, (got, error)
            query = "SELECT count(*) AS n FROM {{ [trigger.target, trigger.table] | identifier }}"
            rows, error = attempt(runtime, "query_rows", profile, {"query": query},
                                  {"trigger": {"target": real_schema, "table": table}})
            assert expect_rows(rows, error) == [{"n": 1}]
        finally:
            for statement in dropped:
                check_conn.execute(statement)

    check()


# == templates ==================================================================================

PATHS = ["trigger", "trigger.s", "trigger.n", "trigger.f", "trigger.l", "trigger.d", "trigger.d.k", "trigger.l[0]",
         "trigger['s']", "trigger.z", "trigger.b", "steps.s1.rows[0].id", "steps.s1.rowCount", "now", "now.year",
         "trigger.missing", "nosuch", "trigger.s.missing", "steps.nope.rows", "trigger.l[99]",
         "trigger.__class__", "trigger.s.__class__.__mro__", "trigger.n.real", "trigger.d.items()",
         "trigger.s.upper()", "trigger.s.format(trigger)", "cycler", "lipsum", "range", "namespace", "self",
         "trigger.s.__len__", "config", "request", "joiner", "trigger.d.keys()", "loop"]
FILTERS = ["lower", "upper", "default('x')", "default(none)", "length", "int", "float", "string", "tojson",
           "identifier", "join(',')", "first", "last", "abs", "round", "trim", "replace('a', 'b')", "list",
           "sort", "unique", "reverse", "e", "safe", "truncate(5)", "nosuch", "sum", "max", "min", "title",
           "wordcount", "center(9)", "indent", "urlencode", "batch(2)", "dictsort", "items", "map('upper')",
           "select", "reject", "count", "capitalize", "format(1)", "attr('s')", "wordwrap(3)", "striptags",
           "xmlattr", "pprint", "slice(2)", "random", "filesizeformat", "groupby('a')", "int(base=16)"]
METHODS = ["upper()", "split()", "strip()", "replace('a', 'bb')", "startswith('a')", "count('a')",
           "zfill(5)", "center(7, '*')", "encode()", "get('k')", "keys()", "__class__", "mro()", "format()",
           "join(trigger.l)", "append(1)", "pop()", "update({})", "ljust(4)"]
BINOPS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">=", "and", "or", "in", "not in", "is"]


def _literals() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-10**6, 10**6).map(lambda n: str(n) if n >= 0 else f"({n})"),
        st.integers().map(lambda n: f"({n})"),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"({f!r})"),
        st.text(max_size=8).map(jinja_string),
        st.sampled_from(["none", "true", "false", "[]", "{}", "[1, 2, 3]", "{'a': 1}", "''", "'x' * 3", "(1, 2)"]),
    )


template_exprs = st.recursive(
    st.one_of(st.sampled_from(PATHS), _literals()),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(BINOPS), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(FILTERS)).map(lambda t: f"{t[0]} | {t[1]}"),
        st.tuples(inner, st.sampled_from(METHODS)).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(st.text(string.ascii_lowercase, min_size=1, max_size=3), inner).map(
            lambda t: "{" + jinja_string(t[0]) + ": " + t[1] + "}"),
        inner.map(lambda x: f"(not {x})"),
        inner.map(lambda x: f"(-{x})"),
        inner.map(lambda x: f"{x}[::-1]"),
        inner.map(lambda x: f"{x}[1:3]"),
    ),
    max_leaves=6,
)

WRAPPERS = ["{{ @ }}", "a{{ @ }}b", "{{ @ }}{{ @ }}", "{{ @", "@ }}", "{{{ @ }}}", "{{ @ }}}", "{ @ }", "{{ @ }",
            "{% if @ %}x{% endif %}", "{% for x in @ %}{{ x }}{% endfor %}", "{# @ #}", "{{}}", "{{ @ | identifier }}",
            "{% raw %}{{ @ }}", "'{{ @ }}'", "{{ '{{' ~ @ ~ '}}' }}", "{{ @ }}\r\n{{ @ }}", "{%- set x = @ -%}{{ x }}"]


@st.composite
def templates(draw: Any) -> str:
    """A wrapper from WRAPPERS, each @ replaced by a generated expression."""
    pieces = draw(st.sampled_from(WRAPPERS)).split("@")
    return "".join(piece + (draw(template_exprs) if i < len(pieces) - 1 else "") for i, piece in enumerate(pieces))


def template_context(draw: Any) -> dict[str, Any]:
    return {
        "trigger": {"s": draw(st.one_of(storable_text, nasty_text)), "n": draw(st.integers(-10**9, 10**9)),
                    "f": draw(st.floats()), "l": draw(st.lists(st.integers(-5, 5), max_size=4)),
                    "d": {"k": draw(storable_text), "a": 1}, "b": draw(st.booleans()), "z": None,
                    "t": "items"},
        "steps": {"s1": {"rows": [{"id": 1, "name": "one"}], "rowCount": 1}},
    }


TEMPLATE_PLACES: dict[str, Callable[[str], tuple[str, dict[str, Any]]]] = {
    "parameter": lambda tpl: ("query_rows", {"query": "SELECT $1::text AS v", "parameters": [tpl]}),
    "untyped-parameter": lambda tpl: ("query_rows", {"query": "SELECT $1 AS v", "parameters": [tpl]}),
    "list-parameter": lambda tpl: ("query_rows", {"query": "SELECT $1 AS v", "parameters": [[tpl, "x"]]}),
    "sql": lambda tpl: ("query_rows", {"query": f"SELECT {tpl} AS v"}),
    "sql-from": lambda tpl: ("query_rows", {"query": f"SELECT count(*) AS n FROM {tpl}"}),
    "sql-quoted": lambda tpl: ("query_rows", {"query": f"SELECT '{tpl}' AS v"}),
    "text-column": lambda tpl: ("insert_row", {"table": "vals", "columns": {"t": tpl}}),
    "jsonb-column": lambda tpl: ("insert_row", {"table": "vals", "columns": {"j": tpl}}),
    "numeric-column": lambda tpl: ("insert_row", {"table": "vals", "columns": {"n": tpl}}),
    "table": lambda tpl: ("get_row", {"table": tpl, "key": {"id": 1}}),
    "where-value": lambda tpl: ("find_rows", {"table": "items", "where": [{"column": "t", "value": tpl}]}),
    "execute": lambda tpl: ("execute_query", {"query": "UPDATE items SET t = t WHERE t = $1", "parameters": [tpl],
                                              "dryRun": True}),
    "step": lambda tpl: ("run_transaction", {"steps": [
        {"id": "a", "action": "query_rows", "inputs": {"query": "SELECT 1 AS id"}},
        {"action": "query_rows", "inputs": {"query": "SELECT $1::text AS v", "parameters": [tpl]}}]}),
}


@pytest.mark.parametrize("budget", BUDGETS)
def test_any_template_renders_or_fails_with_a_code(budget: str, runtime: Runtime, fuzz_db: Any) -> None:
    profile = fuzz_db.profile

    @budget_settings(budget, scale=3)
    @given(data=st.data(), place=st.sampled_from(sorted(TEMPLATE_PLACES)))
    def check(data: Any, place: str) -> None:
        tpl = data.draw(templates(), label="template")
        action, inputs = TEMPLATE_PLACES[place](tpl)
        output, error = attempt(runtime, action, profile, inputs, template_context(data.draw))
        if error is None:
            assert output is not None
        # The action's connection is still usable and clean.
        rows, error = attempt(runtime, "query_rows", profile, {"query": PROBE})
        assert expect_rows(rows, error) == [expected_probe(profile)]

    check()


def _int_exprs() -> st.SearchStrategy[tuple[str, int | None]]:
    """(Jinja source, its value as Python computes it; None: division by zero)."""
    def combine(t: tuple[tuple[str, int | None], str, tuple[str, int | None]]) -> tuple[str, int | None]:
        (left, a), op, (right, b) = t
        value: int | None
        if a is None or b is None or (op in ("//", "%") and b == 0):
            value = None
        else:
            value = {"+": a + b, "-": a - b, "*": a * b, "//": a // b if b else 0, "%": a % b if b else 0}[op]
        return f"({left} {op} {right})", value

    leaves = st.one_of(st.integers(-10**6, 10**6).map(lambda n: (f"({n})", n)),
                       st.just(("trigger.n", 7)), st.just(("trigger.big", 2**70)), st.just(("trigger.neg", -3)))
    return st.recursive(leaves, lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "%"]), inner)
                        .map(combine), max_leaves=6)


STR_OPS: dict[str, Callable[[str], str]] = {
    "| upper": str.upper, "| lower": str.lower, "| trim": str.strip, "[::-1]": lambda s: s[::-1],
    "| replace('a', 'Xy')": lambda s: s.replace("a", "Xy"), ".strip()": str.strip, "[1:]": lambda s: s[1:],
}
StrExpr = tuple[str, Callable[[str], str]]


def _str_exprs() -> st.SearchStrategy[StrExpr]:
    """(Jinja source, its value as Python computes it from trigger.s)."""
    def literal(text: str) -> StrExpr:
        return jinja_string(text), lambda _s: text

    def cat(pair: tuple[StrExpr, StrExpr]) -> StrExpr:
        (left, f), (right, g) = pair
        return f"({left} ~ {right})", lambda s: f(s) + g(s)

    def unary(pair: tuple[StrExpr, str]) -> StrExpr:
        (source, f), op = pair
        fn = STR_OPS[op]
        return (f"({source}){op}" if op[0] in "[." else f"({source} {op})"), lambda s: fn(f(s))

    # Literal text without CR: Jinja turns the newlines of template source into \n.
    texts = st.one_of(st.text(st.characters(codec="ascii", exclude_characters="\x00\r"), max_size=6),
                      st.text(st.sampled_from("aAbZ xX'\"{}%\\"), min_size=1, max_size=6))
    leaves = st.one_of(texts.map(literal), st.just(("trigger.s", lambda s: s)))
    return st.recursive(leaves, lambda inner: st.one_of(st.tuples(inner, inner).map(cat),
                                                        st.tuples(inner, st.sampled_from(sorted(STR_OPS))).map(unary)),
                        max_leaves=5)


@pytest.mark.parametrize("budget", BUDGETS)
def test_template_arithmetic_and_strings_agree_with_python(budget: str, runtime: Runtime, fuzz_db: Any) -> None:
    profile = fuzz_db.profile
    context = {"trigger": {"n": 7, "big": 2**70, "neg": -3}}

    @budget_settings(budget)
    @given(expr=_int_exprs(), mixed=st.booleans(), strexpr=_str_exprs(),
           s=st.one_of(storable_text, nasty_text, st.text(st.sampled_from("aAbBzZ ßİǅ\t"), min_size=1)))
    def check(expr: tuple[str, int | None], mixed: bool, strexpr: StrExpr, s: str) -> None:
        source, value = expr
        tpl = f"n={{{{ {source} }}}};" if mixed else f"{{{{ {source} }}}}"
        query = "SELECT $1::text AS v" if mixed else "SELECT $1::numeric::text AS v"
        data, error = attempt(runtime, "query_rows", profile, {"query": query, "parameters": [tpl]}, context)
        if value is None:
            assert error is not None and error.code == "TEMPLATE_ERROR", (data, error)
        else:
            assert expect_rows(data, error) == [{"v": f"n={value};" if mixed else str(value)}]
        source, fn = strexpr
        ctx = {"trigger": {"s": s}}
        for query, params in (("SELECT $1::text AS v", ["{{ " + source + " }}"]),
                              ("SELECT {{ " + source + " }}::text AS v", [])):
            data, error = attempt(runtime, "query_rows", profile, {"query": query, "parameters": params}, ctx)
            if not params and any(c in source for c in "{}\\") and error is not None \
                    and error.code in ("SYNTAX_ERROR", "TEMPLATE_ERROR"):
                # Templates in SQL text are found by SQL's lexer: there a Jinja \' ends a string and
                # a "}}" inside a Jinja string ends the template.  Refused with a code: fine.
                continue
            if is_storable(fn(s)):
                assert expect_rows(data, error) == [{"v": fn(s)}]
            else:
                assert error is not None and error.code == "INVALID_VALUE", (data, error)

    check()


# == secrets ====================================================================================

@pytest.mark.parametrize("budget", BUDGETS)
def test_no_password_ever_appears_in_an_error(budget: str, fuzz_db: Any) -> None:
    """A role whose password is generated text; errors that echo values holding pieces of it
    (the server quotes a bad integer back), wrong passwords, URL and field profiles."""
    server = fuzz_db.server
    role = "fz_" + uuid.uuid4().hex[:8]
    with server.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        @budget_settings(budget, scale=0.75)
        @given(data=st.data(),
               password=st.one_of(st.text(st.characters(exclude_characters="\x00"), min_size=4, max_size=16),
                                  st.text(st.sampled_from("ab*-!%@:/?#'\"\\ "), min_size=4, max_size=10)),
               right=st.booleans(), as_url=st.booleans())
        def check(data: Any, password: str, right: bool, as_url: bool) -> None:
            assume(is_storable(password))
            with server.admin() as admin:
                admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                         sql.Literal(password)))
            pieces = st.sampled_from([password, password[:1], password[:2], password[2:], password[1:-1],
                                      password[-1:], "*", "***", "x", '"'])
            echoed = data.draw(st.lists(pieces, min_size=1, max_size=4).map("".join), label="echoed")
            used = password if right else data.draw(
                st.text(min_size=4, max_size=12).filter(lambda p: p != password and is_storable(p)), label="wrong")
            if as_url:
                profile: Any = {"url": f"postgresql://{role}:{quote(used, safe='')}@{server.host}:{server.port}"
                                       f"/pgactions_test", "sslMode": "disable"}
            else:
                profile = {"host": server.host, "port": server.port, "database": "pgactions_test",
                           "username": role, "password": used, "sslMode": "disable"}
            with Runtime() as rt:  # one per password: its pool closes with it
                secrets = (password, used)
                for query in ("SELECT $1::int AS v", "SELECT * FROM nosuch WHERE x = $1",
                              "SELECT {{ trigger.p }}::int AS v"):
                    params = [] if "{{" in query else [echoed]
                    out, error = attempt(rt, "query_rows", profile, {"query": query, "parameters": params},
                                         {"trigger": {"p": echoed}}, secrets=secrets)
                    if not right:  # else the echoed text may well be an integer ("0000")
                        assert error is not None and error.code == "AUTHENTICATION_FAILED", (out, error)
                out, error = attempt(rt, "get_row", profile, {"table": "nosuch", "key": {"id": echoed}},
                                     secrets=secrets)
                assert error is not None

        check()
    finally:
        with server.admin() as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# == every manifest, inputs generated from its own schema =========================================

MANIFESTS = load_manifests()
ACTION_IDS = sorted(MANIFESTS)
COLUMNS = ["id", "t", "n", "f", "j", "b", "by", "ts", "arr", "nosuch"]
QUERIES = [
    "SELECT 1 AS one", "SELECT * FROM items", "SELECT $1::text AS v", "SELECT $1 AS a, $2 AS b",
    "INSERT INTO items (t) VALUES ($1) RETURNING id", "UPDATE items SET n = n + 1 WHERE t = $1",
    "DELETE FROM items WHERE t = $1", "UPDATE items SET n = n", "SELECT 1/0", "SELECT pg_sleep(0.01)",
    "BEGIN", "COMMIT", "ROLLBACK", "VACUUM items", "SET search_path TO nowhere", "RESET ALL",
    "SELECT set_config('application_name', 'fuzzed', false)", "SET statement_timeout = 1",
    "SET default_transaction_read_only = off", "SET ROLE NONE", "SELECT '{{ trigger.s }}' AS v",
    "SELECT {{ trigger.n }} AS v", "SELECT $2", "SELECT $0", "PREPARE fz AS SELECT 1", "LISTEN fz",
    "SELECT pg_advisory_lock(42)", "CREATE TEMP TABLE fz_tmp (a int)", "SELECT 1; SELECT 2",
    "DO $$ BEGIN RAISE EXCEPTION 'boom'; END $$", "SELECT $1::int AS v", "SELECT * FROM generate_series(1, 2000) g",
    "COPY items TO STDOUT", "COPY items FROM STDIN", "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "SELECT fz_add(1, 2) AS v", "CALL nosuch()", "SELECT * FROM items WHERE t = '{{ trigger.s }}'",
    "INSERT INTO items (t) VALUES ('dup'), ('dup')", "SELECT E'\\\\x00'", "SELECT 'a' || $1 AS v",
    "SELECT {{ trigger.table | identifier }}", "SELECT {% if true %}1{% endif %}", "SELECT \"{{ trigger.s }}\"",
    "SELECT $1::jsonb -> 'a' AS v", "SELECT ARRAY[1, 2] AS a, '{\"a\": {\"b\": 1}}'::jsonb AS j",
    "SELECT lo_import('/etc/passwd')", "SELECT pg_read_file('/etc/passwd')", "EXPLAIN SELECT 1",
    "WITH x AS (DELETE FROM items WHERE false RETURNING *) SELECT * FROM x", "SELECT", ";", " ", "--",
    "/* {{ trigger.s }} */ SELECT 1", "SELECT $$ {{ trigger.s }} $$", "SELECT 'it''s' AS v",
]
DEFINITIONS = [
    "CREATE FUNCTION fz_f(a int) RETURNS int LANGUAGE sql AS 'SELECT a'",
    "CREATE OR REPLACE FUNCTION fz_add(a integer, b integer) RETURNS integer LANGUAGE sql AS 'SELECT a + b'",
    "CREATE PROCEDURE fz_p() LANGUAGE sql AS 'SELECT 1'", "SELECT 1", "DROP TABLE items",
    "CREATE FUNCTION fz_g() RETURNS SETOF items LANGUAGE sql AS 'SELECT * FROM items'",
    "CREATE FUNCTION fz_h() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$; DROP TABLE items",
]


def _hinted_string(name: str | None) -> st.SearchStrategy[str]:
    free = st.one_of(nasty_text, any_text)
    hints: dict[str, st.SearchStrategy[str]] = {
        "query": st.sampled_from(QUERIES),
        "definition": st.sampled_from(DEFINITIONS),
        "table": st.sampled_from(["items", "vals", "nosuch", "Items", "items.t", "{{ trigger.t }}", "pg_class"]),
        "schema": st.sampled_from(["{schema}", "nosuch", "pg_catalog", "information_schema", "{{ trigger.s }}"]),
        "name": st.sampled_from(["fz_add", "fz_f", "nosuch", "lower", "now", "pg_sleep", "fz_p"]),
        "column": st.sampled_from(COLUMNS), "select": st.sampled_from(COLUMNS),
        "conflictColumns": st.sampled_from(COLUMNS), "updateColumns": st.sampled_from(COLUMNS),
        "argumentTypes": st.sampled_from(["integer", "int", "text", "integer[]", "nosuch", "int4, int4"]),
        "constraint": st.sampled_from(["items_pkey", "items_t_key", "nosuch"]),
        "action": st.sampled_from([*ACTION_IDS, "nosuch"]),
    }
    return st.one_of(hints[name], hints[name], hints[name], free) if name in hints else free  # mostly hints


def _column_values() -> st.SearchStrategy[Any]:
    return st.one_of(json_values(max_leaves=4), st.sampled_from(["{{ trigger.s }}", "{{ trigger.n }}", "{{ now }}",
                                                                 "{{ trigger.l }}", "{{ nosuch }}", "AAEC", "\\x00ff"]))


def from_schema(schema: dict[str, Any], name: str | None = None, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values valid for the schema subset the manifests use (type, enum, properties, required,
    additionalProperties, items, min/max, minLength, minItems, minProperties, uniqueItems, pattern),
    steered by the field's name toward values that reach the database."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind is None:
        return json_values(max_leaves=6)
    if isinstance(kind, list):
        return st.one_of(*(from_schema({**schema, "type": k}, name, depth) for k in kind))
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum")
        return st.integers(low, schema.get("maximum", (low or 0) + 3000)) | st.integers(low, None)
    if kind == "number":
        if name == "timeout":
            return st.floats(0.001, 3) | st.sampled_from([0.5, 2])
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return _hinted_string(name).filter(lambda s: len(s) >= schema.get("minLength", 0))
    if kind == "array":
        items = schema.get("items", {})
        if name == "steps":
            friendly = st.sampled_from(["query_rows", "insert_row", "execute_query", "get_row", "find_rows",
                                        "update_rows", "upsert_row", "delete_rows"])
            element: st.SearchStrategy[Any] = st.one_of(friendly, friendly, st.sampled_from([*ACTION_IDS, "nosuch"])
                                                        ).flatmap(lambda action: _step(action, depth))
        elif name in ("rows",):
            element = st.dictionaries(st.sampled_from(COLUMNS) | any_text, _column_values(), max_size=3)
        else:
            element = from_schema(items, name, depth + 1)
        low = schema.get("minItems", 0)
        unique = (lambda v: json.dumps(v, sort_keys=True, default=str)) if schema.get("uniqueItems") else None
        return st.lists(element, min_size=low, max_size=low + 3, unique_by=unique)
    assert kind == "object", schema
    properties = schema.get("properties")
    if properties:
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, k, depth + 1) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, k, depth + 1) for k, v in properties.items() if k not in required})
    keys = st.sampled_from(COLUMNS) if name in ("columns", "set", "key") else st.sampled_from(["a", "b"]) | any_text
    values = _column_values() if name in ("columns", "set", "key", "arguments") else json_values(max_leaves=4)
    return st.dictionaries(keys, values, min_size=schema.get("minProperties", 0), max_size=3)


def _step(action: str, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    inputs = inputs_for(action, depth + 1) if action in MANIFESTS and depth < 1 else \
        st.dictionaries(st.sampled_from(["query", "table"]), st.sampled_from(QUERIES), max_size=1)
    return st.fixed_dictionaries({"action": st.just(action), "inputs": inputs},
                                 optional={"id": st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)})


SQL_MODE = ("query", "parameters")
TABLE_MODE = ("table", "schema", "set", "where", "allowAllRows")


MODE_QUERIES = {"update_rows": "UPDATE items SET n = n WHERE t = 'one'", "delete_rows": "DELETE FROM items WHERE false"}


def _one_mode(action: str, inputs: dict[str, Any], mode: str) -> dict[str, Any]:
    """Update and Delete Rows take SQL or a table, not both: mostly one of the two."""
    if mode == "both":
        return inputs
    kept = {k: v for k, v in inputs.items() if k not in (TABLE_MODE if mode == "sql" else SQL_MODE)}
    if mode == "sql":
        kept.setdefault("query", MODE_QUERIES[action])
    else:
        kept.setdefault("table", "items")
    return kept


def inputs_for(action: str, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    generated = from_schema(MANIFESTS[action].bundled_input_schema(), None, depth)
    if action in MODE_QUERIES:
        return st.tuples(generated, st.sampled_from(["sql", "table", "both"])).map(
            lambda pair: _one_mode(action, *pair))
    return generated


def _wrong_type(value: Any) -> Any:
    return ["wrong"] if isinstance(value, str) else "wrong"


def _placed_schema(value: Any, schema: str) -> Any:
    """The test's own schema name wherever the generator wrote the placeholder."""
    if isinstance(value, str):
        return value.replace("{schema}", schema)
    if isinstance(value, list):
        return [_placed_schema(v, schema) for v in value]
    if isinstance(value, dict):
        return {k: _placed_schema(v, schema) for k, v in value.items()}
    return value


PROBE = ("SELECT current_setting('search_path') AS sp, current_setting('application_name') AS app, "
         "current_setting('default_transaction_read_only') AS ro, current_setting('statement_timeout') AS st, "
         "current_user AS who")


def expected_probe(profile: dict[str, Any]) -> dict[str, Any]:
    return {"sp": search_path(profile["schema"]), "app": "pgactions", "ro": "on", "st": "1min", "who": "app"}


OUTPUT_VALIDATORS = {aid: jsonschema.Draft202012Validator(m.describe()["output"]) for aid, m in MANIFESTS.items()}
INPUT_VALIDATORS = {aid: jsonschema.Draft202012Validator(m.bundled_input_schema()) for aid, m in MANIFESTS.items()}


@pytest.mark.parametrize("budget", BUDGETS)
def test_inputs_from_every_manifest_schema(budget: str, runtime: Runtime, fuzz_db: Any) -> None:
    profile = fuzz_db.profile

    @budget_settings(budget, scale=4)
    @given(data=st.data(), action=st.sampled_from(ACTION_IDS),
           mutation=st.sampled_from(["none"] * 12 + ["unknown-field", "drop-required", "wrong-type", "not-object"]),
           flow=st.none() | any_text, odd_context=st.sampled_from([False] * 5 + [True]))
    def check(data: Any, action: str, mutation: str, flow: str | None, odd_context: bool) -> None:
        inputs: Any = _placed_schema(data.draw(inputs_for(action), label="inputs"), fuzz_db.schema)
        schema = MANIFESTS[action].bundled_input_schema()
        if mutation == "unknown-field":
            inputs["fz_unknown"] = 1
        elif mutation == "drop-required" and schema.get("required"):
            inputs.pop(data.draw(st.sampled_from(schema["required"])))
        elif mutation == "wrong-type" and inputs:
            field = data.draw(st.sampled_from(sorted(inputs)))
            inputs[field] = _wrong_type(inputs[field])
        elif mutation == "not-object":
            inputs = data.draw(st.sampled_from([[], "x", None, 1]))
        context: Any = template_context(data.draw)
        if odd_context:
            context = data.draw(st.one_of(json_values(max_leaves=4), st.just({"trigger": None, "steps": []})))
        valid = isinstance(inputs, dict) and INPUT_VALIDATORS[action].is_valid(inputs)
        output, error = attempt(runtime, action, profile, inputs, context, flow=flow)
        if not valid:
            assert error is not None and error.code == "INVALID_INPUT" and error.payload.get("errors"), \
                (output, error and error.payload)
        elif error is None:
            OUTPUT_VALIDATORS[action].validate(output)
        elif "errors" in error.payload:
            # Schema-valid as written: only what templates rendered (or a transaction's steps,
            # validated on their own) can be invalid.
            assert has_template_syntax(inputs) or (action == "run_transaction" and all(
                e["path"].startswith("steps/") for e in error.payload["errors"])), error.payload
        rows, error = attempt(runtime, "query_rows", profile, {"query": PROBE})
        assert expect_rows(rows, error) == [expected_probe(profile)]

    check()
