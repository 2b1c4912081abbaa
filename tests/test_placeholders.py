"""$n placeholders: the server's lexer decides, and a mismatch is a clear INVALID_INPUT."""

from __future__ import annotations

import pytest

from pgactions import ActionError, Runtime

# Also run through PgBouncer in transaction mode (conftest: pooler_modes).
pytestmark = pytest.mark.pooler_modes


def q(runtime: Runtime, db, query: str, parameters: list) -> list:
    return runtime.run("query_rows", db.profile, {"query": query, "parameters": parameters}).data["rows"]


def test_placeholders_inside_quotes_and_comments_are_text(runtime: Runtime, db) -> None:
    rows = q(runtime, db, """SELECT $1::int AS a, '$2' AS b, E'$3\\n' AS c, $tag$ $4 $tag$ AS d,
                              1 AS "$5" -- $6
                              /* $7 */""", [10])
    assert rows == [{"a": 10, "b": "$2", "c": "$3\n", "d": " $4 ", "$5": 1}]


def test_array_casts_and_operators_are_untouched(runtime: Runtime, db) -> None:
    rows = q(runtime, db, "SELECT $1::text[] AS arr, 7 % 3 AS modulo, '{\"a\":1}'::jsonb ? 'a' AS has_a, "
                          "'a' || $2 AS cat, 5::numeric::text AS cast", [["x", "y"], "b"])
    assert rows == [{"arr": ["x", "y"], "modulo": 1, "has_a": True, "cat": "ab", "cast": "5"}]


def test_the_same_placeholder_twice(runtime: Runtime, db) -> None:
    assert q(runtime, db, "SELECT $1::int + $1::int AS twice", [21]) == [{"twice": 42}]


def test_missing_parameter_says_which(runtime: Runtime, db) -> None:
    with pytest.raises(ActionError) as info:
        q(runtime, db, "SELECT $1::int, $2::int, $3::int", [1])
    assert info.value.code == "INVALID_INPUT"
    assert "$2, $3" in info.value.payload["detail"] and "1 parameter" in info.value.payload["detail"]


def test_extra_parameter_says_which(runtime: Runtime, db) -> None:
    with pytest.raises(ActionError) as info:
        q(runtime, db, "SELECT $1::int", [1, 2, 3])
    assert info.value.code == "INVALID_INPUT"
    assert "$2, $3" in info.value.payload["detail"]


def test_gap_in_placeholders_is_an_extra_parameter(runtime: Runtime, db) -> None:
    with pytest.raises(ActionError) as info:
        q(runtime, db, "SELECT $1::int + $3::int", [1, 2, 3])
    assert "$2" in info.value.payload["detail"]


def test_values_typed_by_the_server_like_literals(runtime: Runtime, db) -> None:
    rows = q(runtime, db, "SELECT $1::date + 1 AS next_day, $2::uuid AS u, $3::jsonb AS j",
             ["2026-01-15", "6f1b7c2e-7d0a-4c43-9a9e-0c7c3e1f2a11", {"k": [1, 2]}])
    assert rows == [{"next_day": "2026-01-16", "u": "6f1b7c2e-7d0a-4c43-9a9e-0c7c3e1f2a11", "j": {"k": [1, 2]}}]


def test_null_parameter(runtime: Runtime, db) -> None:
    assert q(runtime, db, "SELECT $1::text IS NULL AS is_null", [None]) == [{"is_null": True}]
