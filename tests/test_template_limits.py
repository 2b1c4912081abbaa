"""Template evaluation is bounded (docs/templating.md, "Limits"): a template that would make a huge
value, a huge number, run too long or recurse too deeply fails fast with TEMPLATE_ERROR naming the
limit.  And quote_identifier refuses names PostgreSQL would store differently (NUL, over 63 bytes).

Timings are asserted with a generous bound (FAST) that only proves nothing hangs."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
import time

import pytest

from pgactions import ActionError, Runtime
from pgactions.render.templating import MAX_VALUE_BYTES, quote_identifier, render_value

from .peak_memory import PEAK_SOURCE

FAST = 5.0  # seconds

TEXT = "a b " * 500_000  # 2 MB
CTX = {"trigger": {"s": "x" * 1000, "ids": [3, 1, 2], "n": 7, "text": TEXT, "parts": [TEXT] * 6,
                   "many": list(range(200_000))}}
SIZE = f"larger than {MAX_VALUE_BYTES:,} bytes"


def refused(template: str, context: dict | None = None, **limits) -> dict:
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        render_value(template, CTX if context is None else context, **limits)
    assert time.monotonic() - started < FAST
    assert info.value.code == "TEMPLATE_ERROR", info.value.payload
    return info.value.payload


# -- through the runtime, on a real server -------------------------------------------------------


def test_a_huge_power_in_a_query_parameter_fails_fast(runtime: Runtime, db) -> None:
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", db.profile, {"query": "SELECT $1::text AS v",
                                                "parameters": ["{{ 10**(10**7) > 1 }}"]})
    assert time.monotonic() - started < FAST
    assert info.value.code == "TEMPLATE_ERROR"
    assert info.value.payload["limit"] == "number"
    assert "larger than 4,096 bits" in info.value.payload["detail"]


def test_a_huge_string_in_insert_row_columns_writes_nothing(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        runtime.run("insert_row", db.profile, {"table": "notes", "columns": {"body": "{{ 'a' * 10**9 }}"}})
    assert time.monotonic() - started < FAST
    assert info.value.code == "TEMPLATE_ERROR"
    assert info.value.payload["limit"] == "size"
    assert SIZE in info.value.payload["detail"]
    assert db.sql("SELECT count(*) FROM notes") == [(0,)]


def test_deep_recursion_is_a_template_error_without_a_traceback(runtime: Runtime, db, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pgactions")
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", db.profile, {"query": "SELECT $1::text AS v", "parameters": [
            "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"]})
    assert info.value.code == "TEMPLATE_ERROR"
    assert info.value.payload["limit"] == "depth"
    assert "recurses too deeply" in info.value.payload["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_long_loop_in_a_template_is_stopped(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    loops = "{% for a in trigger.s %}{% for b in trigger.s %}{% for c in trigger.s %}{% endfor %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        runtime.run("insert_row", db.profile, {"table": "notes", "columns": {"body": "x" + loops}},
                    {"trigger": {"s": "x" * 1000}})
    assert time.monotonic() - started < FAST
    assert info.value.code == "TEMPLATE_ERROR"
    assert info.value.payload["limit"] == "time"
    assert "ran for more than 0.5 s" in info.value.payload["detail"]
    assert db.sql("SELECT count(*) FROM notes") == [(0,)]


def test_a_template_in_the_sql_text_is_bounded_too(runtime: Runtime, db) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", db.profile, {"query": "SELECT {{ 'a'.ljust(10**9) }}::text AS v"})
    assert info.value.code == "TEMPLATE_ERROR" and info.value.payload["limit"] == "size"


# -- what each limit catches ---------------------------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ 'a' * 10**9 }}",
    "{{ [1] * 10**8 }}",
    "{{ ('a' * 10**6) * 1000 }}",
    "{{ 'a'.ljust(10**9) }}",
    "{{ 'a'.rjust(10**9, '*') }}",
    "{{ 'a'.center(10**9) }}",
    "{{ '7'.zfill(10**9) }}",
    "{{ ('\t' * 10**6).expandtabs(1000) }}",
    "{{ ('a' * 10**6).replace('a', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb') }}",
    "{{ ','.join(trigger.parts) }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ '{0}{0}{0}{0}{0}{0}'.format(trigger.text) }}",
    "{{ '%*d' % (10**9, 1) }}",
    "{{ '%.1000000000f' % 1.5 }}",
    "{{ '%(a)s%(a)s%(a)s%(a)s%(a)s%(a)s' % {'a': trigger.text} }}",
    "{{ trigger.text ~ trigger.text ~ trigger.text ~ trigger.text ~ trigger.text ~ trigger.text }}",
    "{{ trigger.text + trigger.text + trigger.text + trigger.text + trigger.text + trigger.text }}",
    "{{ 'a' | center(10**9) }}",
    "{{ 'a' | indent(10**9) }}",
    "{{ '%-1000000000s' | format('a') }}",
    "{{ trigger.text | replace(' ', '          ') }}",
    "{{ trigger.parts | join }}",
    "{{ [trigger.text] * 6 }}",
    "{{ (trigger.text * 2) | list }}",
    "{{ trigger.ids | batch(10**9, 0) | list }}",
    "{{ trigger.ids | slice(10**9) | list }}",
    "{{ trigger.ids | tojson(10**8) }}",
    "{{ 1 .to_bytes(10**9, 'big') }}",
    "{{ ('a' * 2000000).split('a') }}",
    "{% set a = [trigger.text, trigger.text] %}{% set b = [a, a] %}{% set c = [b, b] %}{{ c }}",
    "x{{ trigger.text }}{{ trigger.text }}{{ trigger.text }}{{ trigger.text }}{{ trigger.text }}{{ trigger.text }}",
])
def test_a_value_over_the_size_limit_is_refused_before_it_is_made(template) -> None:
    payload = refused(template)
    assert payload["limit"] == "size"
    assert SIZE in payload["detail"] or "result would be larger than" in payload["detail"]


@pytest.mark.parametrize("template, fragment", [
    ("{{ trigger.text | wordwrap(1) }}", "the wordwrap filter takes at most"),
    ("{{ trigger.text | urlize }}", "the urlize filter takes at most"),
    ("{{ ('<a>' * 100000) | striptags }}", "striptags filter would take too long"),
    ("{{ trigger.many | sort }}", "at most 100,000 items"),
])
def test_filters_that_are_slow_on_big_input_say_so(template, fragment) -> None:
    assert fragment in refused(template)["detail"]


def test_values_adding_up_past_the_total_are_refused() -> None:
    template = "{{ [" + ", ".join(["trigger.text.upper()"] * 30) + "] | length }}"
    payload = refused(template, {"trigger": {"text": "a" * 5_000_000}})
    assert payload["limit"] == "total"
    assert f"add up to more than {4 * MAX_VALUE_BYTES:,} bytes" in payload["detail"]


def test_shared_parts_count_each_time_they_appear() -> None:
    """A list holding the same list twice, fourteen levels deep, is 16,384 copies of the text when
    printed or compared: refused while it is built, so neither can run for minutes."""
    levels = "".join(f"{{% set l{i + 1} = [l{i}, l{i}] %}}" for i in range(14))
    payload = refused("{% set l0 = [trigger.s, trigger.s] %}" + levels + "{{ l14 == l14[:] }}")
    assert payload["limit"] == "size"


@pytest.mark.parametrize("template", ["{{ 10**(10**7) > 1 }}", "{{ 2 ** 5000 }}", "{{ (2**4000) * (2**4000) }}",
                                      "{{ ('f' * 2000) | int(base=16) }}"])
def test_numbers_are_limited_to_4096_bits(template) -> None:
    payload = refused(template)
    assert payload["limit"] == "number" and "larger than 4,096 bits" in payload["detail"]


@pytest.mark.parametrize("template", [  # each makes next to nothing: only the clock can stop it
    "{% for a in trigger.s %}{% for b in trigger.s %}{% for c in trigger.s %}{% endfor %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{% set a = f(n - 1) %}{% set b = f(n - 1) %}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% for a in trigger.s %}{{ trigger.text | wordcount > 0 }}{% endfor %}",
])
def test_a_template_that_runs_too_long_is_stopped(template) -> None:
    payload = refused(template, {"trigger": {"s": "x" * 1000, "text": "a b " * 250_000}})
    assert payload["limit"] == "time" and "ran for more than 0.5 s" in payload["detail"]


@pytest.mark.parametrize("template", [
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% for x in trigger.ids recursive %}{{ loop(trigger.ids) }}{% endfor %}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
])
def test_deep_recursion_is_a_template_error(template) -> None:
    payload = refused(template)
    assert payload["limit"] == "depth" and "nests or recurses too deeply" in payload["detail"]


def test_the_limits_can_be_set_per_call_but_never_removed() -> None:
    assert render_value("{{ 'a' * 900 }}", {}, max_bytes=1000) == "a" * 900
    payload = refused("{{ 'a' * 2000 }}", {}, max_bytes=1000)
    assert "larger than 1,000 bytes" in payload["detail"]
    payload = refused("{% for a in trigger.s %}{% for b in trigger.s %}{% endfor %}{% endfor %}",
                      {"trigger": {"s": "x" * 10_000}}, max_seconds=0.05)
    assert "ran for more than 0.05 s" in payload["detail"]
    for limits in ({"max_bytes": None}, {"max_bytes": 0}, {"max_seconds": math.inf}, {"max_seconds": -1}):
        with pytest.raises(ValueError):
            render_value("{{ trigger.n + 1 }}", CTX, **limits)


def test_the_message_names_the_template_and_shortens_it() -> None:
    template = "{{ 'a' * 10**9 }}" + "y" * 500
    detail = refused(template)["detail"]
    assert detail.startswith("template \"{{ 'a' * 10**9 }}") and "(517 characters)" in detail


def test_values_the_template_only_names_are_not_limited() -> None:
    """{{ trigger.file }} hands on the host's own object: nothing is made, nothing is measured."""
    blob = "b" * (2 * MAX_VALUE_BYTES)
    assert render_value("{{ trigger.file }}", {"trigger": {"file": blob}}) is blob
    assert render_value(blob, {}) is blob  # no template at all
    assert render_value("{{ trigger.file | length }}", {"trigger": {"file": blob}}) == len(blob)


def test_templates_below_the_limits_still_render() -> None:
    big = "y" * 5_000_000
    assert len(render_value("{{ trigger.big | upper }}", {"trigger": {"big": big}})) == 5_000_000
    assert len(render_value("{{ trigger.big | tojson }}", {"trigger": {"big": big}})) == 5_000_002
    rows = [{"a": i, "b": f"name{i}"} for i in range(20_000)]
    out = render_value("{% for r in trigger.rows %}{{ r.a }}:{{ r.b }}\n{% endfor %}", {"trigger": {"rows": rows}})
    assert out.count("\n") == 20_000
    assert render_value("{{ 2 ** 4095 > 0 }}", {}) is True


def test_memory_stays_bounded_for_the_worst_templates() -> None:
    """In a fresh process: the peak memory (VmHWM) grows by less than 100 MB while each of
    these is refused (without the limits the first alone takes 1 GB)."""
    script = PEAK_SOURCE + textwrap.dedent("""
        import sys
        from pgactions import ActionError
        from pgactions.render.templating import render_value
        ctx = {"trigger": {"s": "x" * 1000}}
        render_value("{{ trigger.s | upper }}{{ 1 + 1 }}", ctx)
        before = peak_kb()
        templates = [
            "{{ 'a' * 10**9 }}", "{{ 'a'.ljust(10**9) }}", "{{ '%*d' % (10**9, 1) }}",
            "{{ '{:>1000000000}'.format(1) }}", "{{ 'a' | center(10**9) }}", "{{ [1] * 10**9 }}",
            "{{ ('a' * 10**7) | list }}", "{{ ('\\x01' * 10**7) | tojson }}", "{{ ('a ' * 5000000).split() }}",
            "{{ [" + ", ".join(["('a' * 10**7).upper()"] * 10) + "] }}",
            "{% set a = [trigger.s] * 9000 %}{% set b = [a, a] %}{% set c = [b, b] %}{{ c }}",
        ]
        for template in templates:
            try:
                render_value(template, ctx)
                sys.exit("not refused: " + template)
            except ActionError as exc:
                assert exc.code == "TEMPLATE_ERROR", exc.payload
        after = peak_kb()
        print((after - before) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": ":".join(p for p in sys.path if p)})
    assert done.returncode == 0, done.stderr + done.stdout
    assert int(done.stdout.strip()) < 100, f"peak grew by {done.stdout.strip()} MB"


# -- identifiers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("parts, fragment", [
    (("a\x00b",), "contains a NUL character"),
    (("x" * 64,), "is 64 bytes long"),
    (("public", "t" * 100), "is 100 bytes long"),
    (("é" * 32,), "is 64 bytes long"),
])
def test_quote_identifier_refuses_names_postgresql_would_change(parts, fragment) -> None:
    with pytest.raises(ActionError) as info:
        quote_identifier(*parts)
    assert info.value.code == "INVALID_INPUT"
    assert fragment in info.value.payload["detail"]


def test_quote_identifier_keeps_names_up_to_63_bytes() -> None:
    assert quote_identifier("x" * 63) == '"' + "x" * 63 + '"'
    assert quote_identifier("s", "é" * 31) == '"s"."' + "é" * 31 + '"'


def long_name_table(db) -> str:
    """A table named by 63 x's: what PostgreSQL makes of any longer run of x's."""
    name = "x" * 63
    db.sql(f'CREATE TABLE "{name}" (id serial PRIMARY KEY, v int)')
    return name


def test_a_table_name_over_63_bytes_writes_nothing(runtime: Runtime, db) -> None:
    name = long_name_table(db)
    with pytest.raises(ActionError) as info:
        runtime.run("insert_row", db.profile, {"table": "x" * 100, "columns": {"v": 1}})
    assert info.value.code == "INVALID_INPUT"
    assert "is 100 bytes long" in info.value.payload["detail"]
    assert db.sql(f'SELECT count(*) FROM "{name}"') == [(0,)]
    with pytest.raises(ActionError) as info:
        runtime.run("insert_row", db.profile, {"schema": db.schema + "y" * 60, "table": "x", "columns": {"v": 1}})
    assert info.value.code == "INVALID_INPUT"


def test_metadata_of_a_name_over_63_bytes_is_refused(runtime: Runtime, db) -> None:
    long_name_table(db)
    with pytest.raises(ActionError) as info:
        runtime.run("get_table_metadata", db.profile, {"table": "x" * 70})
    assert info.value.code == "INVALID_INPUT"


@pytest.mark.parametrize("table", ["x" * 100, "a\x00b"])
def test_the_identifier_filter_refuses_names_postgresql_would_change(runtime: Runtime, db, table) -> None:
    long_name_table(db)
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", db.profile, {"query": "SELECT count(*) AS n FROM {{ trigger.t | identifier }}"},
                    {"trigger": {"t": table}})
    assert info.value.code == "INVALID_INPUT"
    assert "PostgreSQL" in info.value.payload["detail"]
