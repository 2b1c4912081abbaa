"""Polling triggers (new_rows, new_or_updated_rows): keyset reads with a checkpoint the host keeps.

The property that matters is exactly once: rows inserted by 4 concurrent writers while a poller
runs — and is restarted from its stored checkpoint — are each delivered once; a transaction that
commits late with an older sequence value or timestamp is delivered once by the look-back (and
missed without it, the documented caveat).  A poll of a large table reads only the new rows
(an index scan; no sequential scan counted for the table), and a table without an index on the
ordering column gets a warning.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest

from pgactions import ActionError, Runtime
from pgactions.triggers.polling import check_polling, explain_poll, open_polling


def _drain(source: Any, polls: int = 1) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for _ in range(polls):
        events += source.poll(0).events
    return events


def _ids(events: list[dict[str, Any]]) -> list[Any]:
    return [e["after"]["id"] for e in events]


def test_start_from_now_and_from_the_beginning(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE orders (id serial PRIMARY KEY, total numeric(10,2), created_at timestamptz NOT NULL "
           "DEFAULT now()); INSERT INTO orders (total) SELECT g FROM generate_series(1, 5) g")
    now = open_polling(runtime, db.profile, "new_rows", {"table": "orders", "orderBy": "id"}, None)
    first = now.poll(0)
    assert first.events == [] and first.checkpoint["position"] == [5]  # the newest row, not emitted
    db.sql("INSERT INTO orders (total) VALUES (12.5)")
    events = now.poll(0).events
    event, = events
    assert event["op"] == "insert" and event["table"] == f"{db.schema}.orders"
    assert event["after"]["id"] == 6 and event["after"]["total"] == "12.50"  # numeric as text (docs/types.md)
    assert event["after"]["created_at"].endswith("Z")

    begin = open_polling(runtime, db.profile, "new_rows", {"table": f"{db.schema}.orders", "orderBy": "id",
                                                           "startFrom": "beginning", "batchSize": 4}, None)
    assert _ids(begin.poll(0).events) == [1, 2, 3, 4]
    assert _ids(begin.poll(0).events) == [5, 6]
    assert begin.poll(0).events == []


def test_empty_table_from_now_delivers_the_first_rows(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
    source = open_polling(runtime, db.profile, "new_rows", {"table": "t", "orderBy": "id"}, None)
    assert source.poll(0).checkpoint["position"] is None
    db.sql("INSERT INTO t (v) VALUES ('a'), ('b')")
    assert _ids(source.poll(0).events) == [1, 2]


def test_ties_on_the_ordering_column_are_broken_by_the_key(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE t (id int PRIMARY KEY, at timestamptz NOT NULL); "
           "INSERT INTO t SELECT g, '2026-01-01T00:00:00Z' FROM generate_series(1, 7) g")
    source = open_polling(runtime, db.profile, "new_rows", {"table": "t", "orderBy": "at", "startFrom": "beginning",
                                                            "batchSize": 3, "lookBackSeconds": 0}, None)
    got = [_ids(source.poll(0).events) for _ in range(4)]
    assert got == [[1, 2, 3], [4, 5, 6], [7], []]


def test_composite_where_filters_columns_and_composite_keys(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE t (region text, n int, status text, amount numeric, secret text, "
           "PRIMARY KEY (region, n), created_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    where = [{"column": "amount", "operator": "gte", "value": "10"},
             {"or": [{"column": "status", "operator": "eq", "value": "paid"},
                     {"and": [{"column": "status", "operator": "eq", "value": "open"},
                              {"column": "region", "operator": "in", "value": ["eu", "us"]}]}]}]
    source = open_polling(runtime, db.profile, "new_rows", {
        "table": "t", "orderBy": "created_at", "where": where, "columns": ["region", "n", "amount"]}, None)
    source.poll(0)
    db.sql("INSERT INTO t (region, n, status, amount, secret) VALUES "
           "('eu', 1, 'paid', 10, 's'), ('eu', 2, 'paid', 9.99, 's'), ('ap', 1, 'open', 50, 's'), "
           "('us', 1, 'open', 50, 's'), ('ap', 2, 'paid', 11, 's'), ('eu', 3, 'void', 99, 's')")
    events = source.poll(0).events
    assert [e["after"] for e in events] == [{"region": "eu", "n": 1, "amount": "10"},
                                           {"region": "us", "n": 1, "amount": "50"},
                                           {"region": "ap", "n": 2, "amount": "11"}]
    checkpoint = source.checkpoint
    assert checkpoint["columns"] == ["created_at", "region", "n"]
    assert source.poll(0).events == []


def test_new_or_updated_rows(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text, created_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
           "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    db.sql("INSERT INTO t (id, v, created_at, updated_at) VALUES (1, 'a', '2026-01-01Z', '2026-01-01Z')")
    inputs = {"table": "t", "updatedAt": "updated_at", "createdAt": "created_at", "startFrom": "beginning"}
    source = open_polling(runtime, db.profile, "new_or_updated_rows", inputs, None)
    assert [(e["op"], e["after"]["v"]) for e in source.poll(0).events] == [("insert", "a")]
    db.sql("UPDATE t SET v = 'b', updated_at = clock_timestamp() WHERE id = 1")
    db.sql("INSERT INTO t (id, v) VALUES (2, 'c')")
    db.sql("UPDATE t SET v = 'd', updated_at = clock_timestamp() WHERE id = 2")
    assert [(e["op"], e["after"]["id"], e["after"]["v"]) for e in source.poll(0).events] == \
        [("update", 1, "b"), ("update", 2, "d")]
    assert source.poll(0).events == []
    # Without createdAt an update cannot be told from an insert: every event is "update".
    plain = open_polling(runtime, db.profile, "new_or_updated_rows",
                         {"table": "t", "updatedAt": "updated_at", "startFrom": "beginning"}, None)
    assert {e["op"] for e in plain.poll(0).events} == {"update"}


def test_bad_inputs_and_a_foreign_checkpoint_are_refused(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE t (id int PRIMARY KEY, at timestamptz); CREATE TABLE nokey (at timestamptz)")

    def code(trigger: str, inputs: dict[str, Any], checkpoint: Any = None) -> str:
        with pytest.raises(ActionError) as caught:
            open_polling(runtime, db.profile, trigger, inputs, checkpoint)
        return caught.value.code

    assert code("new_rows", {"table": "missing", "orderBy": "id"}) == "UNDEFINED_TABLE"
    assert code("new_rows", {"table": "t", "orderBy": "nope"}) == "UNDEFINED_COLUMN"
    assert code("new_rows", {"table": "t", "orderBy": "id", "startFrom": "yesterday"}) == "INVALID_INPUT"
    assert code("new_rows", {"table": "t", "orderBy": "id", "batchSize": 0}) == "INVALID_INPUT"
    assert code("new_rows", {"table": "t", "orderBy": "id", "bogus": 1}) == "INVALID_INPUT"
    assert code("new_rows", {"table": "nokey", "orderBy": "at"}) == "INVALID_INPUT"
    assert code("new_or_updated_rows", {"table": "t", "orderBy": "at"}) == "INVALID_INPUT"
    other = open_polling(runtime, db.profile, "new_rows", {"table": "t", "orderBy": "at"}, None).poll(0).checkpoint
    assert code("new_rows", {"table": "t", "orderBy": "id"}, other) == "INVALID_INPUT"
    # a where naming no column of the table fails as Find Rows does
    bad = open_polling(runtime, db.profile, "new_rows", {"table": "t", "orderBy": "id", "startFrom": "beginning",
                                                         "where": [{"column": "zz", "value": 1}]}, None)
    with pytest.raises(ActionError) as caught:
        bad.poll(0)
    assert caught.value.code == "UNDEFINED_COLUMN"


def test_a_batch_that_would_pass_the_output_cap_is_halved(db) -> None:
    from pgactions import Limits

    db.sql("CREATE TABLE t (id int PRIMARY KEY, blob text); "
           "INSERT INTO t SELECT g, repeat('x', 4000) FROM generate_series(1, 40) g")
    with Runtime(Limits(max_result_bytes=50_000)) as small:
        source = open_polling(small, db.profile, "new_rows", {"table": "t", "orderBy": "id",
                                                              "startFrom": "beginning", "batchSize": 40}, None)
        sizes, got = [], []
        while True:
            events = source.poll(0).events
            if not events:
                break
            sizes.append(len(events))
            got += _ids(events)
        assert got == list(range(1, 41)) and max(sizes) < 40


# == late commits and the look-back =================================================================

@pytest.mark.parametrize("order", ["id", "created_at"])
def test_a_late_commit_is_delivered_once_by_the_look_back(runtime: Runtime, db, order: str) -> None:
    """Transaction A takes id 1 (and its now()), B inserts id 2 and commits, a poll delivers 2;
    A commits: the next poll delivers 1, once; later polls and a restarted poller do not again."""
    db.sql("CREATE TABLE t (id serial PRIMARY KEY, who text, created_at timestamptz NOT NULL DEFAULT now())")
    inputs = {"table": "t", "orderBy": order, "lookBackSeconds": 30}
    source = open_polling(runtime, db.profile, "new_rows", inputs, None, interval=0.05)
    lossy = open_polling(runtime, db.profile, "new_rows", {**inputs, "lookBackSeconds": 0}, None)
    source.poll(0), lossy.poll(0)
    with psycopg.connect(db.server.url()) as late:
        late.execute(f'SET search_path = "{db.schema}"')
        late.execute("INSERT INTO t (who) VALUES ('late')")  # id 1, created_at = its transaction's start
        time.sleep(0.01)
        db.sql("INSERT INTO t (who) VALUES ('early')")  # id 2, committed first
        assert [e["after"]["who"] for e in source.poll(0).events] == ["early"]
        assert [e["after"]["who"] for e in lossy.poll(0).events] == ["early"]
        late.commit()
    assert [e["after"]["who"] for e in source.poll(0).events] == ["late"]
    assert _drain(source, 3) == []
    restarted = open_polling(runtime, db.profile, "new_rows", inputs, source.checkpoint)
    assert _drain(restarted, 2) == []
    db.sql("INSERT INTO t (who) VALUES ('next')")
    assert [e["after"]["who"] for e in restarted.poll(0).events] == ["next"]
    # The caveat: without a look-back the late row is behind the position and never read.
    assert [e["after"]["who"] for e in _drain(lossy, 3)] == ["next"]


def test_a_late_commit_during_catch_up_is_delivered_once(runtime: Runtime, db, mocker: Any) -> None:
    """While a backlog is read (every round a full batch), the look-back runs every few rounds
    rather than every round — before the rows delivered since fill half its window — and rows
    that commit late behind the position meanwhile, more than a batch of them, are still
    delivered, once."""
    db.sql("CREATE TABLE t (id int PRIMARY KEY, who text)")
    db.sql("INSERT INTO t SELECT g, 'backlog' FROM generate_series(2, 1000, 2) g")  # even ids: 500 rows
    spy = mocker.spy(runtime, "run")
    source = open_polling(runtime, db.profile, "new_rows",
                          {"table": "t", "orderBy": "id", "startFrom": "beginning", "batchSize": 10,
                           "lookBackSeconds": 30}, None, max_seen=100)
    delivered = _ids(_drain(source, 5))  # 50 rows, up to id 100
    assert delivered == list(range(2, 101, 2))
    # Behind the position, as late commits land: more than a batch of them (25, batches of 10).
    db.sql("INSERT INTO t SELECT g, 'late' FROM generate_series(51, 99, 2) g")
    rounds = 0
    while True:
        events = source.poll(0).events
        rounds += 1
        if not events:
            break
        delivered += _ids(events)
    assert sorted(delivered) == sorted(list(range(2, 1001, 2)) + list(range(51, 100, 2)))
    assert len(delivered) == len(set(delivered)) == 525  # each once
    key_reads = [c for c in spy.call_args_list
                 if c.args[0] == "find_rows" and c.args[2]["orderBy"][0]["direction"] == "desc"]
    assert len(key_reads) < rounds / 2  # the look-back skipped most catch-up rounds


def test_the_look_back_window_ends(runtime: Runtime, db) -> None:
    """A row committing later than lookBackSeconds after its value was taken is outside the window."""
    db.sql("CREATE TABLE t (id serial PRIMARY KEY, who text)")
    inputs = {"table": "t", "orderBy": "id", "lookBackSeconds": 0.3}
    source = open_polling(runtime, db.profile, "new_rows", inputs, None)
    source.poll(0)
    with psycopg.connect(db.server.url()) as late:
        late.execute(f'SET search_path = "{db.schema}"')
        late.execute("INSERT INTO t (who) VALUES ('too late')")
        db.sql("INSERT INTO t (who) VALUES ('early')")
        assert _ids(source.poll(0).events) == [2]
        for _ in range(5):
            time.sleep(0.15)
            assert source.poll(0).events == []
        late.commit()
    assert _drain(source, 3) == []
    checkpoint = source.checkpoint
    assert len(checkpoint["marks"]) <= 17 and checkpoint["seen"] in ([], [[2]])  # both stay bounded


# == exactly once under 4 concurrent writers, across a restart of the poller ========================

def _writers(db, count: int, per_writer: int, update: bool = False) -> list[threading.Thread]:
    def write(n: int) -> None:
        rnd = random.Random(n)
        with psycopg.connect(db.server.url()) as conn:
            conn.execute(f'SET search_path = "{db.schema}"')
            for i in range(per_writer):
                conn.execute("INSERT INTO t (writer, n) VALUES (%s, %s)", [n, i])
                if update and i % 3 == 0:
                    conn.execute("UPDATE t SET n = n + 1000, updated_at = clock_timestamp() "
                                 "WHERE id = (SELECT max(id) FROM t WHERE writer = %s)", [n])
                time.sleep(rnd.random() * 0.02)  # commits land out of the order values were taken in
                conn.commit()

    return [threading.Thread(target=write, args=(n,)) for n in range(count)]


@pytest.mark.parametrize("order", ["id", "created_at"])
def test_every_row_from_four_concurrent_writers_is_delivered_exactly_once(runtime: Runtime, db, order: str) -> None:
    db.sql("CREATE TABLE t (id bigserial PRIMARY KEY, writer int, n int, "
           "created_at timestamptz NOT NULL DEFAULT now()); CREATE INDEX ON t (created_at, id)")
    inputs = {"table": "t", "orderBy": order, "batchSize": 50, "lookBackSeconds": 2}
    writers = _writers(db, 4, 60)
    delivered: list[int] = []
    stored = None
    source = open_polling(runtime, db.profile, "new_rows", inputs, stored)
    stored = source.poll(0).checkpoint
    for w in writers:
        w.start()
    restarted = False
    started = time.monotonic()
    while any(w.is_alive() for w in writers) or time.monotonic() - started < 1:
        batch = source.poll(0)
        delivered += _ids(batch.events)  # delivered, then the checkpoint stored
        stored = batch.checkpoint
        if not restarted and len(delivered) > 60:
            source.close()  # the poller stops; a new one starts from the stored checkpoint
            source = open_polling(runtime, db.profile, "new_rows", inputs, stored)
            restarted = True
        time.sleep(0.01)
    for w in writers:
        w.join()
    end = time.monotonic() + 3  # longer than the look-back: any late row has come by then
    while time.monotonic() < end:
        delivered += _ids(source.poll(0).events)
        time.sleep(0.05)
    expected = [r[0] for r in db.sql("SELECT id FROM t ORDER BY id")]
    assert restarted and len(expected) == 240
    assert sorted(delivered) == expected, "every row once"
    behind = sum(1 for i, d in enumerate(delivered) if i and d < max(delivered[:i]))
    print(f"{behind} rows came behind the position (late commits)")
    assert behind > 0, "the writers never committed out of order: the test proved nothing"


def test_new_or_updated_rows_under_concurrent_writers(runtime: Runtime, db) -> None:
    """Every row's last version is delivered, and no (key, version) twice."""
    db.sql("CREATE TABLE t (id serial PRIMARY KEY, writer int, n int, "
           "updated_at timestamptz NOT NULL DEFAULT now()); CREATE INDEX ON t (updated_at, id)")
    inputs = {"table": "t", "updatedAt": "updated_at", "batchSize": 40, "lookBackSeconds": 2}
    source = open_polling(runtime, db.profile, "new_or_updated_rows", inputs, None)
    source.poll(0)
    writers = _writers(db, 4, 40, update=True)
    for w in writers:
        w.start()
    versions: list[tuple[int, str]] = []
    while any(w.is_alive() for w in writers):
        versions += [(e["after"]["id"], e["after"]["updated_at"]) for e in source.poll(0).events]
        time.sleep(0.01)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        versions += [(e["after"]["id"], e["after"]["updated_at"]) for e in source.poll(0).events]
        time.sleep(0.05)
    assert len(versions) == len(set(versions)), "no version twice"
    finals = runtime.run("query_rows", db.profile, {"query": "SELECT id, updated_at FROM t"}).data["rows"]
    assert len(finals) == 160 and {(r["id"], r["updated_at"]) for r in finals} <= set(versions)


# == a large table: only the new rows are read =======================================================

def _table_scans(db, table: str) -> tuple[int, int]:
    with psycopg.connect(db.server.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT seq_scan, coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
                           "WHERE schemaname = %s AND relname = %s", [db.schema, table]).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait_backends_gone(db, app: str) -> None:
    end = time.monotonic() + 10
    with psycopg.connect(db.server.url(), autocommit=True) as conn:
        while time.monotonic() < end:
            if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s", [app]).fetchone():
                return
            time.sleep(0.05)


def _large_table_reads_only_new_rows(db, rows: int) -> None:
    db.sql(f"CREATE TABLE big (id bigserial PRIMARY KEY, payload text, created_at timestamptz NOT NULL); "
           f"INSERT INTO big (payload, created_at) SELECT md5(g::text), timestamptz '2026-01-01Z' + g * interval "
           f"'1 second' FROM generate_series(1, {rows}) g; CREATE INDEX big_created ON big (created_at, id); "
           f"ANALYZE big")
    app = "poll-" + db.schema
    profile = {**db.profile, "applicationName": app}
    for order in ("id", "created_at"):
        inputs = {"table": "big", "orderBy": order}
        with Runtime() as runtime:
            assert check_polling(runtime, profile, inputs) == []
            plan = explain_poll(runtime, profile, inputs)
            assert "Index" in plan and "Seq Scan" not in plan, plan
        _wait_backends_gone(db, app)
        seq_before, fetched_before = _table_scans(db, "big")
        with Runtime() as runtime:
            source = open_polling(runtime, profile, "new_rows", inputs, None)
            source.poll(0)
            db.sql("INSERT INTO big (payload, created_at) SELECT 'new', now() FROM generate_series(1, 10)")
            started = time.perf_counter()
            assert len(source.poll(0).events) == 10
            elapsed = time.perf_counter() - started
            assert source.poll(0).events == []
        _wait_backends_gone(db, app)  # a backend's counters are flushed when it exits
        seq_after, fetched_after = _table_scans(db, "big")
        assert seq_after == seq_before, "a poll read the whole table"
        assert fetched_after - fetched_before < 200, (fetched_before, fetched_after)
        assert elapsed < 1.0


def test_a_poll_of_a_million_row_table_reads_only_new_rows(db) -> None:
    _large_table_reads_only_new_rows(db, 1_000_000)  # ~8 s, most of it making the table


def test_no_index_on_the_ordering_column_is_warned_about(runtime: Runtime, db) -> None:
    db.sql("CREATE TABLE t (id serial PRIMARY KEY, created_at timestamptz); "
           "INSERT INTO t (created_at) SELECT now() FROM generate_series(1, 5000); ANALYZE t")
    warnings = check_polling(runtime, db.profile, {"table": "t", "orderBy": "created_at"})
    assert any("No index of" in w and "CREATE INDEX ON" in w and "created_at" in w for w in warnings), warnings
    assert any("may be NULL" in w for w in warnings)
    assert "Seq Scan" in explain_poll(runtime, db.profile, {"table": "t", "orderBy": "created_at"})
    assert check_polling(runtime, db.profile, {"table": "t", "orderBy": "id"}) == []
