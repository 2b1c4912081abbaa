"""Every common PostgreSQL type → its documented JSON form (docs/types.md)."""

from __future__ import annotations

import pytest

from pgactions import Limits, Runtime

# Also run through PgBouncer in transaction mode (conftest: pooler_modes).
pytestmark = pytest.mark.pooler_modes

TYPES_TABLE = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE everything (
    id serial PRIMARY KEY,
    small smallint, i int, big bigint, huge bigint, neg_huge bigint,
    num numeric(12,4), num_nan numeric, real_v real, dbl double precision, dbl_inf double precision,
    flag boolean, txt text, vc varchar(10), ch char(3),
    ts timestamp, tstz timestamptz, ts_inf timestamptz, d date, t time, ttz timetz, iv interval,
    u uuid, j json, jb jsonb, b bytea, ints int[], texts text[], tstzs timestamptz[], nested int[][],
    ip inet, net cidr, mac macaddr, m mood, r int4range, dr daterange, money_v money,
    pt point, bits bit(4), tsv tsvector, moods mood[], pos positive, positives positive[]
);
INSERT INTO everything VALUES (
    DEFAULT, 1, 2, 9007199254740991, 9007199254740993, -9007199254740993,
    12345678.9012, 'NaN', 1.5, 2.25, '-Infinity',
    true, 'héllo "world"', 'short', 'ab',
    '2026-01-15 10:30:00.123456', '2026-01-15 12:30:00+02', 'infinity', '2026-01-15', '10:30:00', '10:30:00+02',
    '1 year 2 mons 3 days 04:05:06.5',
    '6f1b7c2e-7d0a-4c43-9a9e-0c7c3e1f2a11', '{"a": [1, 2.5, null], "b": "x"}', '{"b": {"c": true}, "a": 1}',
    '\\x00ff10', '{1,2,NULL}', '{"a","b c"}', '{"2026-01-15 10:30:00+00"}', '{{1,2},{3,4}}',
    '192.168.1.10/24', '10.0.0.0/8', '08:00:2b:01:02:03', 'happy', '[1,10)', '[2026-01-01,2026-02-01)', 12.34,
    '(1.5,2)', B'1010', 'a fat cat', '{sad,happy}', 7, '{1,2}'
);
"""

EXPECTED = {
    "id": 1, "small": 1, "i": 2, "big": 9007199254740991, "huge": "9007199254740993",
    "neg_huge": "-9007199254740993",
    "num": "12345678.9012", "num_nan": "NaN", "real_v": 1.5, "dbl": 2.25, "dbl_inf": "-Infinity",
    "flag": True, "txt": 'héllo "world"', "vc": "short", "ch": "ab ",
    "ts": "2026-01-15T10:30:00.123456", "tstz": "2026-01-15T10:30:00Z", "ts_inf": "infinity",
    "d": "2026-01-15", "t": "10:30:00", "ttz": "10:30:00+02:00", "iv": "P1Y2M3DT4H5M6.5S",
    "u": "6f1b7c2e-7d0a-4c43-9a9e-0c7c3e1f2a11", "j": {"a": [1, 2.5, None], "b": "x"},
    "jb": {"a": 1, "b": {"c": True}}, "b": "AP8Q", "ints": [1, 2, None], "texts": ["a", "b c"],
    "tstzs": ["2026-01-15T10:30:00Z"], "nested": [[1, 2], [3, 4]],
    "ip": "192.168.1.10/24", "net": "10.0.0.0/8", "mac": "08:00:2b:01:02:03", "m": "happy",
    "r": "[1,10)", "dr": "[2026-01-01,2026-02-01)", "money_v": "$12.34", "pt": "(1.5,2)", "bits": "1010",
    "tsv": "'a' 'cat' 'fat'", "moods": ["sad", "happy"], "pos": 7, "positives": [1, 2],
}


@pytest.fixture
def types_db(db):
    db.sql(TYPES_TABLE)
    return db


def test_every_type_has_its_json_form(runtime: Runtime, types_db) -> None:
    row = runtime.run("query_rows", types_db.profile, {"query": "SELECT * FROM everything"}).data["rows"][0]
    assert row == EXPECTED


def test_insert_row_returns_the_same_forms(runtime: Runtime, types_db) -> None:
    out = runtime.run("insert_row", types_db.profile, {"table": "everything", "columns": {
        "jb": {"nested": {"list": [1, 2]}}, "j": [1, "two"], "ints": [5, 6], "big": 2**60,
        "tstz": "2026-01-15T10:30:00+02:00", "d": "2026-03-01", "u": "6f1b7c2e-7d0a-4c43-9a9e-0c7c3e1f2a11",
        "m": "sad", "num": "1.5"}}).data
    row = out["row"]
    assert out["insertedId"] == row["id"] == 2
    assert row["jb"] == {"nested": {"list": [1, 2]}} and row["j"] == [1, "two"]
    assert row["ints"] == [5, 6] and row["big"] == str(2**60)
    assert row["tstz"] == "2026-01-15T08:30:00Z" and row["d"] == "2026-03-01" and row["m"] == "sad"
    assert row["num"] == "1.5000"


def test_numeric_as_number_keeps_every_digit(types_db) -> None:
    with Runtime(Limits(numeric_as_number=True)) as rt:
        result = rt.run("query_rows", types_db.profile, {
            "query": "SELECT num, num_nan, 123456789012345678901234567890.123456789::numeric AS wide FROM everything"})
    assert b'"num":12345678.9012' in result.json
    assert b'"wide":123456789012345678901234567890.123456789' in result.json
    assert result.data["rows"][0]["num_nan"] == "NaN"


def test_timestamp_without_zone_is_never_shifted(runtime: Runtime, db) -> None:
    """Whatever the server's or client's zone, a naive timestamp comes back as stored."""
    db.sql("CREATE TABLE t (ts timestamp)")
    db.sql("ALTER ROLE app IN DATABASE pgactions_test SET TimeZone = 'America/New_York'")
    try:
        runtime.run("insert_row", db.profile, {"table": "t", "columns": {"ts": "2026-07-01T23:30:00"}})
        rows = runtime.run("query_rows", db.profile, {"query": "SELECT ts, ts::timestamptz AS as_utc FROM t"}).data["rows"]
    finally:
        db.sql("ALTER ROLE app IN DATABASE pgactions_test RESET TimeZone")
    assert rows == [{"ts": "2026-07-01T23:30:00", "as_utc": "2026-07-01T23:30:00Z"}]


def test_empty_result_and_null_row(runtime: Runtime, db) -> None:
    assert runtime.run("query_rows", db.profile, {"query": "SELECT 1 AS x WHERE false"}).data == {"rows": [], "rowCount": 0}
    row = runtime.run("query_rows", db.profile, {"query": "SELECT NULL::int AS n, NULL::jsonb AS j"}).data["rows"][0]
    assert row == {"n": None, "j": None}


ROUND_TRIP_DDL = """
CREATE TYPE rt_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN rt_posint AS int CHECK (VALUE > 0);
CREATE TABLE every_type (
    id serial PRIMARY KEY,
    p point, l line, ls lseg, b box, pa path, pg polygon, c circle,
    i inet, ci cidr, m macaddr, m8 macaddr8,
    r int4range, nr numrange, tr tstzrange, dr daterange, mr int4multirange,
    j json, jb jsonb, u uuid, tv tsvector, tq tsquery, e rt_mood, bt bit(3), vb varbit, mo money, iv interval,
    ia inet[], ea rt_mood[], ra int4range[], ua uuid[], jba jsonb[], d rt_posint, da rt_posint[],
    ti time, ttz timetz, dt date, ts timestamp, tsz timestamptz, by bytea, n numeric, big bigint, f8 float8
);
INSERT INTO every_type (p, l, ls, b, pa, pg, c, i, ci, m, m8, r, nr, tr, dr, mr, j, jb, u, tv, tq, e, bt, vb, mo, iv,
                        ia, ea, ra, ua, jba, d, da, ti, ttz, dt, ts, tsz, by, n, big, f8) VALUES
 ('(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(0,0),2>',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
  '[1,5)', '[1.5,2.5]', '[2026-01-01 00:00+00,2026-02-01 00:00+00)', '[2026-01-01,2026-02-01)', '{[1,3),[5,7)}',
  '{"a": [1, {"b": null}]}', '{"k": "v", "n": 1.50}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'a fat cat', 'fat & cat',
  'happy', B'101', B'11', 12.34, '1 year 2 days 03:04:05.5',
  '{10.0.0.1,10.0.0.2/32}', '{sad,happy}', '{"[1,2)","[3,4)"}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}',
  ARRAY['{"x": 1}'::jsonb, '[2]'], 5, '{1,2}', '10:30:00.25', '10:30+02', '2026-01-02',
  '2026-07-01 23:30:00.123456', '2026-07-01 23:30:00+02', '\\x00ff10', 12345678901234567890.123456789,
  9007199254740993, 'NaN');
"""


def test_every_common_type_round_trips(runtime: Runtime, db) -> None:
    """A row read with Get Row, written back with Insert Row, reads back the same: every JSON form
    pgactions produces is also accepted as input."""
    db.sql(ROUND_TRIP_DDL)  # types exist before the runtime's first connection
    original = runtime.run("get_row", db.profile, {"table": "every_type", "key": {"id": 1}}).data["row"]
    assert original["ea"] == ["sad", "happy"] and original["da"] == [1, 2] and original["by"] == "AP8Q"
    assert original["big"] == "9007199254740993" and original["n"] == "12345678901234567890.123456789"
    assert original["jba"] == [{"x": 1}, [2]] and original["iv"] == "P1Y2DT3H4M5.5S"
    values = {k: v for k, v in original.items() if k != "id"}
    inserted = runtime.run("insert_row", db.profile, {"table": "every_type", "columns": values}).data
    copy = runtime.run("get_row", db.profile, {"table": "every_type", "key": {"id": inserted["insertedId"]}}).data["row"]
    assert {k: v for k, v in copy.items() if k != "id"} == values
    # The same through the bulk path.
    out = runtime.run("insert_rows", db.profile, {"table": "every_type", "rows": [values, values], "returning": True}).data
    assert [{k: v for k, v in r.items() if k != "id"} for r in out["rows"]] == [values, values]
    assert runtime.run("insert_rows", db.profile, {"table": "every_type", "rows": [values]}).data == {"rowCount": 1}
    # Stored values are equal too (json keeps its text as written, so it is compared as jsonb).
    assert db.sql("SELECT count(DISTINCT (p::text, j::jsonb, jb, tv, by, da, n, mo, iv, tsz)) FROM every_type") == [(1,)]
