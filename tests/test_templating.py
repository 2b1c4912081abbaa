"""Templates: typed values, SQL-text templates bound as parameters, the sandbox, clear errors."""

from __future__ import annotations

import datetime as dt

import pytest

from pgactions import ActionError, Runtime
from pgactions.render.templating import render_value

# Also run through PgBouncer in transaction mode (conftest: pooler_modes).
pytestmark = pytest.mark.pooler_modes

CTX = {"trigger": {"email": "a@b.c", "age": 42, "ids": [1, 2, 3], "user": {"name": "Ann"},
                   "price": 9.5, "flag": True, "nothing": None}}


@pytest.mark.parametrize("template, expected", [
    ("{{trigger.age}}", 42),
    ("{{ trigger.ids }}", [1, 2, 3]),
    ("{{trigger.user}}", {"name": "Ann"}),
    ("{{trigger.price}}", 9.5),
    ("{{trigger.flag}}", True),
    ("{{trigger.nothing}}", None),
    ("Hello {{trigger.user.name}}!", "Hello Ann!"),
    ("{{trigger.age}} years", "42 years"),
    ("{{ trigger.user.name | upper }}", "ANN"),
    ("{{ trigger.missing | default('n/a') }}", "n/a"),
    ("no template", "no template"),
])
def test_whole_expression_keeps_its_type(template, expected) -> None:
    assert render_value(template, CTX) == expected


def test_now_is_an_aware_datetime() -> None:
    now = dt.datetime(2026, 1, 15, 10, 30, tzinfo=dt.timezone.utc)
    assert render_value("{{now}}", {"now": now}) == now


@pytest.mark.parametrize("template, path", [
    ("{{trigger.x}}", "trigger.x"),
    ("{{ trigger.user.email }}", "trigger.user.email"),
    ("Dear {{ steps.lookup.rows[0].name }}", "steps.lookup"),
    ("{{ missing }}", "missing"),
])
def test_missing_value_names_its_path(template, path) -> None:
    with pytest.raises(ActionError) as info:
        render_value(template, {**CTX, "steps": {}})
    assert info.value.code == "TEMPLATE_ERROR"
    assert info.value.payload["path"] == path
    assert path in info.value.payload["detail"]


@pytest.mark.parametrize("template", [
    "{{ trigger.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ trigger.email.__class__.__init__.__globals__ }}",
    "{{ range(10) }}",
    "{{ lipsum() }}",
])
def test_sandbox_refuses_internals(template) -> None:
    with pytest.raises(ActionError) as info:
        render_value(template, CTX)
    assert info.value.code == "TEMPLATE_ERROR"


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(ActionError) as info:
        render_value("{{ trigger.email ", CTX)
    assert info.value.code == "TEMPLATE_ERROR"


def test_quoted_template_in_sql_is_bound_not_pasted(runtime: Runtime, guide_db) -> None:
    out = runtime.run("query_rows", guide_db.profile, {
        "query": "SELECT id FROM users WHERE email = '{{trigger.email}}'"},
        {"trigger": {"email": "john@example.com"}}).data
    assert out == {"rows": [{"id": 1}], "rowCount": 1}


INJECTION = "x'); DROP TABLE users; --"


def test_injection_through_sql_text_template_is_stored_verbatim(runtime: Runtime, guide_db) -> None:
    runtime.run("execute_query", guide_db.profile, {
        "query": "INSERT INTO users (name, email) VALUES ('{{trigger.name}}', {{trigger.email}})"},
        {"trigger": {"name": INJECTION, "email": INJECTION + "@evil"}})
    # Nothing else ran: the table is there, with the value stored and comparable verbatim.
    assert guide_db.sql("SELECT name, email FROM users WHERE name = %s", [INJECTION]) == [
        (INJECTION, INJECTION + "@evil")]
    out = runtime.run("query_rows", guide_db.profile, {
        "query": "SELECT count(*) AS n FROM users WHERE name = '{{trigger.name}}'"},
        {"trigger": {"name": INJECTION}}).data
    assert out["rows"] == [{"n": 1}]
    assert guide_db.sql("SELECT count(*) FROM users") == [(3,)]


def test_injection_through_parameters_and_columns(runtime: Runtime, guide_db) -> None:
    evil = "'; DELETE FROM users; --"
    runtime.run("insert_row", guide_db.profile, {"table": "users", "columns": {"name": "{{trigger.v}}",
                                                                               "email": "{{trigger.v}}"}},
                {"trigger": {"v": evil}})
    out = runtime.run("query_rows", guide_db.profile, {"query": "SELECT name FROM users WHERE email = $1",
                                                       "parameters": ["{{trigger.v}}"]},
                      {"trigger": {"v": evil}}).data
    assert out["rows"] == [{"name": evil}]
    assert guide_db.sql("SELECT count(*) FROM users") == [(3,)]


def test_template_inside_a_longer_literal(runtime: Runtime, guide_db) -> None:
    out = runtime.run("query_rows", guide_db.profile, {
        "query": "SELECT name FROM users WHERE email LIKE '%{{trigger.domain}}' ORDER BY id"},
        {"trigger": {"domain": "@example.com"}}).data
    assert [r["name"] for r in out["rows"]] == ["John Doe", "Mary Major"]


def test_bare_template_keeps_type_for_any(runtime: Runtime, guide_db) -> None:
    out = runtime.run("query_rows", guide_db.profile, {
        "query": "SELECT id FROM users WHERE id = ANY({{trigger.ids}}::int[]) AND $1 ORDER BY id",
        "parameters": [True]}, {"trigger": {"ids": [2, 1]}}).data
    assert out["rows"] == [{"id": 1}, {"id": 2}]


def test_identifier_filter_quotes_names(runtime: Runtime, guide_db) -> None:
    guide_db.sql('CREATE TABLE "Weird Name" (id int); INSERT INTO "Weird Name" VALUES (7)')
    out = runtime.run("query_rows", guide_db.profile, {
        "query": "SELECT id FROM {{ trigger.table | identifier }}"}, {"trigger": {"table": "Weird Name"}}).data
    assert out["rows"] == [{"id": 7}]
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", guide_db.profile, {
            "query": "SELECT id FROM {{ trigger.table | identifier }}"},
            {"trigger": {"table": 'users; DROP TABLE users; --'}})
    assert info.value.code == "UNDEFINED_TABLE"
    assert guide_db.sql("SELECT count(*) FROM users") == [(2,)]


@pytest.mark.parametrize("query, fragment", [
    ("SELECT 1 {% if true %}WHERE true{% endif %}", "{% %}"),
    ('SELECT 1 AS "{{trigger.x}}"', "identifier"),
    ("SELECT $${{trigger.x}}$$", "plain"),
    ("SELECT E'{{trigger.x}}'", "plain"),
])
def test_templates_where_they_could_become_sql_are_refused(runtime: Runtime, guide_db, query, fragment) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", guide_db.profile, {"query": query}, {"trigger": {"x": "y"}})
    assert info.value.code == "TEMPLATE_ERROR"
    assert fragment in info.value.payload["detail"]


def test_templates_in_comments_are_left_alone(runtime: Runtime, guide_db) -> None:
    out = runtime.run("query_rows", guide_db.profile, {
        "query": "SELECT 1 AS one -- {{ not.rendered }}\n/* {{ nor.this }} */"}).data
    assert out["rows"] == [{"one": 1}]


def test_braces_that_are_not_templates_stay_sql(runtime: Runtime, guide_db) -> None:
    out = runtime.run("query_rows", guide_db.profile, {"query": """
        SELECT '{{1,2},{3,4}}'::int[] AS matrix, '{{"a","b"}}'::text[] AS words,
               '{"a": {"b": 1}}'::jsonb AS doc, $x${{1}}$x$ AS dollar"""}).data
    assert out["rows"] == [{"matrix": [[1, 2], [3, 4]], "words": [["a", "b"]], "doc": {"a": {"b": 1}},
                            "dollar": "{{1}}"}]


# Templates that compute go through the limits' hooks (docs/templating.md, "Limits"); below the
# limits they render exactly as Jinja's own immutable sandbox renders them.
COMPUTING = [
    "{{ trigger.user.name | center(9) }}", "{{ trigger.ids | join(', ') }}", "{{ trigger.ids | map('string') | join }}",
    "{{ trigger.ids | sort | list }}", "{{ trigger.ids | batch(2, 0) | list }}", "{{ trigger.ids | slice(2) | list }}",
    "{{ trigger.ids | sum(start=10) }}", "{{ [[1], [2]] | sum(start=[]) }}", "{{ trigger.user | tojson }}",
    "{{ trigger.user | dictsort }}", "{{ 'a b' | wordcount }}", "{{ 'x' | indent(2, true) }}", "{{ '%s=%05.1f' | format('p', trigger.price) }}",
    "{{ '%s is %d' % (trigger.user.name, trigger.age) }}", "{{ '{}/{:>4}'.format(trigger.age, 'x') }}",
    "{{ trigger.email.split('@') }}", "{{ '-'.join(trigger.email) }}", "{{ trigger.email.replace('.', '[dot]') }}",
    "{{ trigger.age * 2 ** 10 }}", "{{ trigger.email ~ '!' ~ trigger.age }}", "{{ [trigger.age, trigger.ids, {'k': 1}] }}",
    "{{ trigger.email[::-1] }}", "{{ trigger.email | replace('a', 'A') | upper | truncate(4, true, '') }}",
    "{% for i in trigger.ids %}{{ loop.index }}={{ i }}{{ ',' if not loop.last }}{% endfor %}",
    "{% macro tag(x) %}<{{ x }}>{% endmacro %}{% for i in trigger.ids %}{{ tag(i) }}{% endfor %}",
    "{% set s %}[{{ trigger.age }}]{% endset %}{{ s * 2 }}", "{% filter upper %}{{ trigger.user.name }}{% endfilter %}",
]


@pytest.mark.parametrize("template", COMPUTING)
def test_computing_templates_render_as_jinja_does(template) -> None:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    jinja = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    assert str(render_value(template, CTX)) == jinja.from_string(template).render(**CTX)
