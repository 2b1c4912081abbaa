"""CDC (logical replication, pgoutput): the row_changes trigger source against a server of its own
started with wal_level = logical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgactions import ActionError, Runtime
from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.db.convert import to_json_bytes
from pgactions.devtools.local_server import LocalServer, ServerNotAvailable
from pgactions.triggers import pgoutput as po
from pgactions.triggers.base import TriggerSource
from pgactions.triggers.cdc import CdcSource, drop_slot, open_cdc, parse_inputs

LOGICAL_CONF = {"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20",
                "wal_sender_timeout": "60s"}
ROLE_PASSWORD = "cdc-reader-pw"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    try:
        srv = LocalServer(ssl=False, extra_conf=LOGICAL_CONF).start()
    except ServerNotAvailable as exc:
        pytest.skip(str(exc))
    try:
        srv.psql("CREATE DATABASE other")
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def profile(server: LocalServer) -> ConnectionProfile:
    return load_profile(server.url(), environment=False)


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"slot": f"s_{tag}", "publication": f"p_{tag}", "table": f"t_{tag}"}


def admin(server: LocalServer, database: str = "postgres") -> psycopg.Connection[Any]:
    return psycopg.connect(server.url(database=database), autocommit=True)


def drain(source: CdcSource, count: int, timeout: float = 15.0, ack: bool = True) -> list[dict[str, Any]]:
    """Poll (acknowledging each batch) until *count* events came."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        assert time.monotonic() < deadline, f"only {len(events)} of {count} events came: {events[-3:]}"
        batch = source.poll(0.5)
        events.extend(batch.events)
        if ack:
            source.ack(batch.checkpoint)
    return events


def quiet(source: CdcSource, seconds: float = 0.6) -> list[dict[str, Any]]:
    """Whatever else comes within *seconds* (expected: nothing)."""
    extra: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        extra.extend(source.poll(0.2).events)
    return extra


def slot_row(server: LocalServer, slot: str) -> dict[str, Any] | None:
    with admin(server) as conn:
        row = conn.execute("SELECT to_jsonb(s)::text FROM pg_replication_slots s WHERE slot_name = %s",
                           [slot]).fetchone()
    return json.loads(row[0]) if row else None


# -- without a server ------------------------------------------------------------------

def test_lsn_text_round_trip() -> None:
    assert po.parse_lsn("0/16B3748") == 0x16B3748
    assert po.format_lsn(0x16B3748) == "0/16B3748"
    assert po.format_lsn(po.parse_lsn("1A/FF000028")) == "1A/FF000028"
    with pytest.raises(ValueError):
        po.parse_lsn("16B3748")
    assert po.pg_time_iso(0) == "2000-01-01T00:00:00Z"


@pytest.mark.parametrize("inputs, fragment", [
    ({"slot": "s", "publication": "p"}, "tables"),
    ({"tables": ["t"], "slot": "Bad-Slot", "publication": "p"}, "slot"),
    ({"tables": ["t"], "slot": "s"}, "publication"),
    ({"tables": ["t"], "allTables": True, "slot": "s", "publication": "p"}, "not both"),
    ({"tables": ["t"], "slot": "s", "publication": "p", "snapshot": "yes"}, "snapshot"),
    ({"tables": ["t"], "slot": "s", "publication": "p", "columns": {"t": "id"}}, "columns"),
    ({"tables": ["t"], "slot": "s", "publication": "p", "tabels": []}, "unknown input 'tabels'"),
    ({"tables": ['"unbalanced'], "slot": "s", "publication": "p"}, "quotes"),
])
def test_bad_inputs(inputs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ActionError) as info:
        parse_inputs(inputs)
    assert info.value.code == "INVALID_INPUT"
    assert fragment in info.value.payload["detail"]


def test_table_names_are_read_like_postgresql_names() -> None:
    opts = parse_inputs({"tables": ["orders", "sales.items", '"My Schema"."a.b"'], "slot": "s", "publication": "p",
                         "excludeColumns": {"orders": ["secret"]}})
    assert opts.tables == [("public", "orders"), ("sales", "items"), ("My Schema", "a.b")]
    assert opts.exclude_columns == {"public.orders": {"secret"}}


# -- events ----------------------------------------------------------------------------

def test_every_event_type(server: LocalServer, profile: ConnectionProfile, names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, name text, n int)")
    inputs = {"tables": [t], "slot": names["slot"], "publication": names["publication"]}
    source = open_cdc(profile, inputs, None)
    typed: TriggerSource = source  # the agreed interface
    assert callable(typed.poll) and callable(typed.ack) and callable(typed.close)
    assert any("REPLICA IDENTITY FULL" in w for w in source.warnings)  # before-images need it
    try:
        with admin(server) as conn:
            with conn.transaction():
                conn.execute(f"INSERT INTO {t} VALUES (1, 'a', 10), (2, 'b', 20)")
            conn.execute(f"UPDATE {t} SET name = 'A' WHERE id = 1")
            conn.execute(f"UPDATE {t} SET id = 3 WHERE id = 2")
            conn.execute(f"DELETE FROM {t} WHERE id = 1")
            conn.execute(f"TRUNCATE {t}")
            xids = conn.execute("SELECT 1").fetchall()
        events = drain(source, 6)
    finally:
        source.close()
    table = f"public.{t}"
    assert [(e["op"], e.get("before"), e.get("after")) for e in events] == [
        ("insert", None, {"id": 1, "name": "a", "n": 10}),
        ("insert", None, {"id": 2, "name": "b", "n": 20}),
        ("update", None, {"id": 1, "name": "A", "n": 10}),       # REPLICA IDENTITY DEFAULT: no before
        ("update", {"id": 2}, {"id": 3, "name": "b", "n": 20}),  # the key changed: the old key
        ("delete", {"id": 1}, None),                             # the old key
        ("truncate", None, None),
    ]
    assert xids
    assert all(e["table"] == table for e in events)
    assert events[0]["xid"] == events[1]["xid"] and events[0]["commitTime"] == events[1]["commitTime"]
    assert events[0]["lsn"] != events[1]["lsn"]
    assert len({e["xid"] for e in events}) == 5
    lsns = [po.parse_lsn(e["lsn"]) for e in events]
    assert lsns == sorted(lsns)
    assert all(e["commitTime"].endswith("Z") and e["commitTime"][:2] == "20" for e in events)


def test_replica_identity_full_and_toasted_unchanged_columns(server: LocalServer, profile: ConnectionProfile,
                                                             names: dict[str, str]) -> None:
    full, plain = names["table"] + "_full", names["table"] + "_plain"
    big = "x" * 20000
    with admin(server) as conn:
        for t in (full, plain):
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, n int, big text)")
            conn.execute(f"ALTER TABLE {t} ALTER COLUMN big SET STORAGE EXTERNAL")  # out of line, uncompressed
        conn.execute(f"ALTER TABLE {full} REPLICA IDENTITY FULL")
    source = open_cdc(profile, {"tables": [full, plain], "slot": names["slot"],
                                "publication": names["publication"]}, None)
    try:
        with admin(server) as conn:
            for t in (full, plain):
                conn.execute(f"INSERT INTO {t} VALUES (1, 1, %s)", [big])
                conn.execute(f"UPDATE {t} SET n = 2")  # big unchanged: not in the WAL record
                conn.execute(f"DELETE FROM {t}")
        events = drain(source, 6)
    finally:
        source.close()
    f_ins, f_upd, f_del, p_ins, p_upd, p_del = events
    assert f_ins["after"]["big"] == big and p_ins["after"]["big"] == big
    # FULL: the whole old row (detoasted), and the unchanged value filled in from it.
    assert f_upd["before"] == {"id": 1, "n": 1, "big": big}
    assert f_upd["after"] == {"id": 1, "n": 2, "big": big}
    assert f_del["before"] == {"id": 1, "n": 2, "big": big}
    # DEFAULT: no before, and the unchanged TOASTed column is left out of after.
    assert "before" not in p_upd and p_upd["after"] == {"id": 1, "n": 2}
    assert p_del["before"] == {"id": 1}


def test_composite_keys(server: LocalServer, profile: ConnectionProfile, names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (a int, b text, v int, PRIMARY KEY (b, a))")
    source = open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"]}, None)
    try:
        with admin(server) as conn:
            conn.execute(f"INSERT INTO {t} VALUES (1, 'x', 1)")
            conn.execute(f"UPDATE {t} SET b = 'y' WHERE a = 1")
            conn.execute(f"DELETE FROM {t}")
        events = drain(source, 3)
    finally:
        source.close()
    assert events[1]["before"] == {"a": 1, "b": "x"} and events[1]["after"] == {"a": 1, "b": "y", "v": 1}
    assert events[2]["before"] == {"a": 1, "b": "y"}


TYPES_TABLE = """
CREATE TYPE mood_{tag} AS ENUM ('sad', 'happy');
CREATE DOMAIN posint_{tag} AS int CHECK (VALUE > 0);
CREATE TABLE {t} (
  id bigint PRIMARY KEY, small smallint, big bigint, num numeric, real4 real, dbl double precision,
  flag boolean, txt text, vc varchar(10), ch char(4), ts timestamp, tstz timestamptz, d date, tm time,
  tmtz timetz, iv interval, u uuid, j json, jb jsonb, ba bytea, ints int[], texts text[], nested int[][],
  addr inet, mood mood_{tag}, moods mood_{tag}[], dom posint_{tag}, doms posint_{tag}[], rng int4range,
  pt point, bits bit(4), tsv tsvector, money money, nan double precision, inf_ts timestamptz
);
"""
TYPES_ROW = """
INSERT INTO {t} VALUES (
  9007199254740993, 7, 42, 12345678901234567890.123456789, 1.5, 2.25, true, 'hé "q"', 'v', 'ab',
  '2026-01-15 10:30:00.123456', '2026-01-15 10:30:00+02', '2026-01-15', '10:30:00', '10:30:00+02',
  '1 year 2 mons 3 days 04:05:06.5', '6f1b7c2e-0000-4000-8000-000000000001', '{{"a": [1, 2.50]}}',
  '{{"b": {{"c": null}}, "big": 123456789012345678901234567890}}', '\\x00ff10', '{{1,NULL,3}}',
  '{{"a b",NULL,"c,d"}}', '{{{{1,2}},{{3,4}}}}', '192.168.1.10/24', 'happy', '{{sad,happy}}', 7, '{{1,2}}',
  '[1,10)', '(1.5,2)', B'1010', 'a fat cat', 12.34, 'NaN', 'infinity'
)
"""


def test_values_have_the_json_forms_of_query_results(server: LocalServer, profile: ConnectionProfile,
                                                      names: dict[str, str]) -> None:
    t, tag = names["table"], names["slot"][2:]
    with admin(server) as conn:
        conn.execute(TYPES_TABLE.format(t=t, tag=tag))
    source = open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"]}, None)
    try:
        with admin(server) as conn:
            conn.execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'SQL, DMY'")  # the writer's own
            conn.execute(TYPES_ROW.format(t=t))
        (event,) = drain(source, 1)
    finally:
        source.close()
    with Runtime() as runtime:
        rows = runtime.run("query_rows", profile, {"query": f"SELECT * FROM {t}"}).data["rows"]
    # (json keeps the server's text in both; compared as parsed JSON, big integers exact)
    after = json.loads(to_json_bytes(event["after"]))
    assert after == json.loads(to_json_bytes(rows[0]))
    assert after["id"] == "9007199254740993" and after["num"] == "12345678901234567890.123456789"
    assert after["tstz"] == "2026-01-15T08:30:00Z" and after["ts"] == "2026-01-15T10:30:00.123456"
    assert after["iv"] == "P1Y2M3DT4H5M6.5S" and after["ba"] == "AP8Q"
    assert after["moods"] == ["sad", "happy"] and after["doms"] == [1, 2] and after["dom"] == 7
    assert after["nested"] == [[1, 2], [3, 4]] and after["jb"]["big"] == 123456789012345678901234567890
    assert after["nan"] == "NaN" and after["inf_ts"] == "infinity"


def test_include_and_exclude_filters(server: LocalServer, profile: ConnectionProfile, names: dict[str, str]) -> None:
    a, b, c = (names["table"] + s for s in ("_a", "_b", "_c"))
    with admin(server) as conn:
        for t in (a, b, c):
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, keep text, secret text)")
    inputs = {"allTables": True, "excludeTables": [f"public.{c}"], "slot": names["slot"],
              "publication": names["publication"], "columns": {a: ["id", "keep"]}, "excludeColumns": {b: ["secret"]}}
    source = open_cdc(profile, inputs, None)
    try:
        with admin(server) as conn:
            for t in (c, a, b):
                conn.execute(f"INSERT INTO {t} VALUES (1, 'k', 's')")
        events = drain(source, 2)
        assert quiet(source) == []
    finally:
        source.close()
        drop_slot(profile, names["slot"])
        with admin(server) as conn:  # FOR ALL TABLES would make other tests' tables without a key refuse updates
            conn.execute(f"DROP PUBLICATION {names['publication']}")
    assert [(e["table"], e["after"]) for e in events] == [
        (f"public.{a}", {"id": 1, "keep": "k"}), (f"public.{b}", {"id": 1, "keep": "k"})]


def test_listed_tables_use_an_existing_publication(server: LocalServer, profile: ConnectionProfile,
                                                   names: dict[str, str]) -> None:
    a, b = names["table"] + "_a", names["table"] + "_b"
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {a} (id int PRIMARY KEY); CREATE TABLE {b} (id int PRIMARY KEY)")
        conn.execute(f"CREATE PUBLICATION {names['publication']} FOR TABLE {a}")
    with pytest.raises(ActionError) as info:
        open_cdc(profile, {"tables": [a, b], "slot": names["slot"], "publication": names["publication"]}, None)
    assert info.value.code == "INVALID_INPUT"
    assert f'ALTER PUBLICATION "{names["publication"]}" ADD TABLE "public"."{b}"' in info.value.payload["detail"]
    assert slot_row(server, names["slot"]) is None  # nothing made


def test_a_table_without_replica_identity_is_not_published(server: LocalServer, profile: ConnectionProfile,
                                                            names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int, v text)")  # no primary key
    with pytest.raises(ActionError) as info:
        open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"]}, None)
    assert info.value.code == "INVALID_INPUT"
    assert f'ALTER TABLE "public"."{t}" REPLICA IDENTITY FULL' in info.value.payload["detail"]
    with admin(server) as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication WHERE pubname = %s",
                            [names["publication"]]).fetchone() == (0,)
        conn.execute(f"UPDATE {t} SET v = 'still works'")


# -- positions, acknowledgement, checkpoints -------------------------------------------

def test_the_confirmed_lsn_moves_only_on_ack(server: LocalServer, profile: ConnectionProfile,
                                             names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    inputs = {"tables": [t], "slot": names["slot"], "publication": names["publication"], "heartbeatInterval": 0.5}
    source = open_cdc(profile, inputs, None)
    start = po.parse_lsn(slot_row(server, names["slot"])["confirmed_flush_lsn"])
    with admin(server) as conn:
        conn.execute(f"INSERT INTO {t} VALUES (1)")
    events = drain(source, 1, ack=False)
    quiet(source, 1.2)  # heartbeats go out meanwhile: they must not confirm the unacknowledged event
    assert po.parse_lsn(slot_row(server, names["slot"])["confirmed_flush_lsn"]) == start
    source.close()
    # Not acknowledged: delivered again, with the same LSN.
    source = open_cdc(profile, inputs, None)
    try:
        again = drain(source, 1, ack=False)
        assert again == events
        batch = source.poll(0.2)
        source.ack(batch.checkpoint)
        time.sleep(0.3)
        confirmed = po.parse_lsn(slot_row(server, names["slot"])["confirmed_flush_lsn"])
        assert confirmed >= po.parse_lsn(batch.checkpoint["lsn"]) > po.parse_lsn(events[0]["lsn"])
    finally:
        source.close()
    source = open_cdc(profile, inputs, None)
    try:
        assert quiet(source) == []
    finally:
        source.close()


def test_a_checkpoint_inside_a_big_transaction_resumes_exactly(server: LocalServer, profile: ConnectionProfile,
                                                               names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    inputs = {"tables": [t], "slot": names["slot"], "publication": names["publication"], "batchSize": 40}
    source = open_cdc(profile, inputs, None)
    with admin(server) as conn:
        conn.execute(f"INSERT INTO {t} SELECT generate_series(1, 100)")
        conn.execute(f"INSERT INTO {t} SELECT generate_series(101, 150)")
    first = source.poll(5)
    assert 0 < len(first.events) <= 40 and first.checkpoint is not None and "txn" in first.checkpoint
    source.ack(first.checkpoint)  # inside the transaction: the server keeps all of it
    source.close()
    source = open_cdc(profile, inputs, first.checkpoint)
    try:
        rest = drain(source, 150 - len(first.events))
        assert quiet(source) == []
    finally:
        source.close()
    ids = [e["after"]["id"] for e in first.events + rest]
    assert ids == list(range(1, 151))


def test_heartbeats_advance_the_slot_on_a_quiet_database(server: LocalServer, profile: ConnectionProfile,
                                                         names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    source = open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"],
                                "heartbeatInterval": 0.5}, None)
    try:
        before = po.parse_lsn(slot_row(server, names["slot"])["confirmed_flush_lsn"])
        with admin(server, "other") as conn:  # WAL from elsewhere; nothing for this trigger
            conn.execute("CREATE TABLE IF NOT EXISTS busy (v int)")
            conn.execute("INSERT INTO busy SELECT generate_series(1, 1000)")
        deadline = time.monotonic() + 10
        while po.parse_lsn(slot_row(server, names["slot"])["confirmed_flush_lsn"]) <= before:
            assert time.monotonic() < deadline, "the slot did not advance"
            assert source.poll(0.3).events == []
    finally:
        source.close()


def test_retained_wal_warning(server: LocalServer, profile: ConnectionProfile, names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    inputs = {"tables": [t], "slot": names["slot"], "publication": names["publication"]}
    open_cdc(profile, inputs, None).close()
    with admin(server) as conn:
        conn.execute(f"INSERT INTO {t} SELECT generate_series(1, 5000)")
    source = open_cdc(profile, dict(inputs, walWarningBytes=1000), None)
    try:
        assert any("retains" in w and "drop-slot" in w for w in source.warnings)
    finally:
        source.close()
        drop_slot(profile, names["slot"])


def test_initial_snapshot_then_the_stream(server: LocalServer, profile: ConnectionProfile,
                                          names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 250) g")
    inputs = {"tables": [t], "slot": names["slot"], "publication": names["publication"], "snapshot": True,
              "batchSize": 100}
    source = open_cdc(profile, inputs, None)
    try:
        with admin(server) as conn:  # after the slot: in the stream, not in the snapshot
            conn.execute(f"INSERT INTO {t} VALUES (251, 'late')")
            conn.execute(f"UPDATE {t} SET v = 'changed' WHERE id = 1")
        first = source.poll(5)
        assert first.checkpoint is not None and first.checkpoint.get("snapshot") == "incomplete"
        events = first.events + drain(source, 252 - len(first.events))
        assert quiet(source) == []
    finally:
        source.close()
    reads = [e for e in events if e["op"] == "read"]
    assert [e["after"]["id"] for e in reads] == list(range(1, 251))
    assert reads[0]["after"] == {"id": 1, "v": "v1"} and reads[0]["table"] == f"public.{t}"
    assert [(e["op"], e["after"]) for e in events[250:]] == [
        ("insert", {"id": 251, "v": "late"}), ("update", {"id": 1, "v": "changed"})]
    assert po.parse_lsn(reads[0]["lsn"]) <= po.parse_lsn(events[250]["lsn"])  # the slot's consistent point


def test_an_interrupted_snapshot_starts_again(server: LocalServer, profile: ConnectionProfile,
                                              names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO {t} SELECT generate_series(1, 30)")
    inputs = {"tables": [t], "slot": names["slot"], "publication": names["publication"], "snapshot": True,
              "batchSize": 10}
    source = open_cdc(profile, inputs, None)
    partial = source.poll(5)
    source.close()  # as if killed mid-snapshot
    with admin(server) as conn:
        conn.execute(f"INSERT INTO {t} VALUES (31)")
    source = open_cdc(profile, inputs, partial.checkpoint)
    try:
        events = drain(source, 31)
        assert quiet(source) == []
    finally:
        source.close()
    assert sorted(e["after"]["id"] for e in events) == list(range(1, 32))
    assert {e["op"] for e in events} == {"read"}


# -- failures and their fixes ----------------------------------------------------------

def test_a_role_without_replication_gets_the_fix(server: LocalServer, names: dict[str, str]) -> None:
    role = "cdc_" + names["slot"][2:]
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}'")
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY); ALTER TABLE {t} OWNER TO {role}")
        conn.execute(f"GRANT CREATE ON DATABASE postgres TO {role}")
    prof = load_profile(server.url(user=role, password=ROLE_PASSWORD), environment=False)
    with pytest.raises(ActionError) as info:
        open_cdc(prof, {"tables": [t], "slot": names["slot"], "publication": names["publication"]}, None)
    assert info.value.code == "PERMISSION_DENIED"
    assert f'ALTER ROLE "{role}" REPLICATION' in " ".join(info.value.payload["fix"])
    assert "REPLICATION" in info.value.payload["detail"]
    with admin(server) as conn:
        conn.execute(f"ALTER ROLE {role} REPLICATION")
    source = open_cdc(prof, {"tables": [t], "slot": names["slot"], "publication": names["publication"]}, None)
    source.close()
    assert drop_slot(prof, names["slot"]) is True


def test_wal_level_replica_gets_the_fix() -> None:
    try:
        srv = LocalServer(ssl=False).start()
    except ServerNotAvailable as exc:
        pytest.skip(str(exc))
    try:
        srv.psql("CREATE TABLE t (id int PRIMARY KEY)")
        with pytest.raises(ActionError) as info:
            open_cdc(srv.url(), {"tables": ["t"], "slot": "s", "publication": "p"}, None)
    finally:
        srv.stop()
    assert info.value.code == "INVALID_CONNECTION"
    assert "wal_level" in info.value.payload["detail"]
    assert "restart" in info.value.payload["fix"][0]


def test_a_missing_slot_is_not_made_when_told_not_to(server: LocalServer, profile: ConnectionProfile,
                                                    names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    with pytest.raises(ActionError) as info:
        open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"],
                           "createSlot": False}, None)
    assert info.value.code == "UNDEFINED_OBJECT" and "createSlot" in info.value.payload["detail"]
    with pytest.raises(ActionError) as info:
        open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"]},
                 {"slot": names["slot"], "lsn": "0/1000"})
    assert info.value.code == "UNDEFINED_OBJECT" and "checkpoint" in info.value.payload["detail"]


def test_slot_cleanup(server: LocalServer, profile: ConnectionProfile, names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    source = open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"]}, None)
    source.poll(0.1)
    source.close()
    facts = slot_row(server, names["slot"])
    assert facts is not None and facts["plugin"] == "pgoutput"  # closing keeps the slot
    assert drop_slot(profile, names["slot"]) is True
    assert slot_row(server, names["slot"]) is None
    assert drop_slot(profile, names["slot"]) is False
    with pytest.raises(ActionError) as info:
        drop_slot(profile, "No Such")
    assert info.value.code == "INVALID_INPUT"


# -- crashes ---------------------------------------------------------------------------

CONSUMER = textwrap.dedent("""
    import json, os, sys
    import psycopg
    from pgactions.triggers.cdc import open_cdc

    url, sink_url, inputs_json, mode = sys.argv[1:5]
    inputs = json.loads(inputs_json)
    sink = psycopg.connect(sink_url, autocommit=True)
    checkpoint = None
    if mode == "exactly-once":
        row = sink.execute("SELECT checkpoint FROM cdc_state WHERE slot = %s", [inputs["slot"]]).fetchone()
        checkpoint = json.loads(row[0]) if row else None
    source = open_cdc(url, inputs, checkpoint)
    print("ready", flush=True)
    while True:
        batch = source.poll(1.0)
        if batch.events or mode == "exactly-once":
            with sink.transaction():
                for e in batch.events:
                    sink.execute("INSERT INTO cdc_sink (slot, id, lsn) VALUES (%s, %s, %s)",
                                 [inputs["slot"], e["after"]["id"], e["lsn"]])
                if mode == "exactly-once":
                    sink.execute("INSERT INTO cdc_state VALUES (%s, %s) ON CONFLICT (slot) DO UPDATE "
                                 "SET checkpoint = excluded.checkpoint", [inputs["slot"], json.dumps(batch.checkpoint)])
        source.ack(batch.checkpoint)
""")


def _consumer(tmp_path: Path, server: LocalServer, inputs: dict[str, Any], mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    with (tmp_path / "consumer.err").open("a") as err:
        proc = subprocess.Popen([sys.executable, str(script), server.url(), server.url(database="other"),
                                 json.dumps(inputs), mode], stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (tmp_path / "consumer.err").read_text()
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _sink_ids(server: LocalServer, slot: str) -> list[int]:
    with admin(server, "other") as conn:
        return [r[0] for r in conn.execute("SELECT id FROM cdc_sink WHERE slot = %s ORDER BY seq", [slot])]


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_kill_9_of_the_consumer_mid_stream_loses_nothing(server: LocalServer, names: dict[str, str],
                                                         tmp_path: Path, mode: str) -> None:
    t, slot = names["table"], names["slot"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    with admin(server, "other") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cdc_sink (seq bigserial PRIMARY KEY, slot text, id int, lsn text)")
        conn.execute("CREATE TABLE IF NOT EXISTS cdc_state (slot text PRIMARY KEY, checkpoint text)")
    inputs = {"tables": [t], "slot": slot, "publication": names["publication"], "batchSize": 37}
    total, kills = 3000, 0

    def produce() -> None:
        with admin(server) as conn:
            next_id = 1
            while next_id <= total:
                # Transactions of 1 to 90 rows, so batches end inside transactions too.
                size = min(1 + (next_id * 7919) % 90, total - next_id + 1)
                conn.execute(f"INSERT INTO {t} SELECT generate_series(%s::int, %s::int)", [next_id, next_id + size - 1])
                next_id += size
                time.sleep(0.05)

    producer = threading.Thread(target=produce)
    proc = _consumer(tmp_path, server, inputs, mode)
    producer.start()
    try:
        deadline = time.monotonic() + 60
        while len(set(_sink_ids(server, slot))) < total or producer.is_alive():
            assert proc.poll() is None, (tmp_path / "consumer.err").read_text()
            assert time.monotonic() < deadline, f"{len(set(_sink_ids(server, slot)))} of {total} came"
            if kills < 3 and len(_sink_ids(server, slot)) > 300 + kills * 600:
                _kill(proc)  # mid-stream: between a batch's store and its ack, or anywhere else
                kills += 1
                proc = _consumer(tmp_path, server, inputs, mode)
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        producer.join()
        if proc.poll() is None:
            _kill(proc)
        elif proc.stdout is not None:
            proc.stdout.close()
    ids = _sink_ids(server, slot)
    assert kills >= 2
    assert set(ids) == set(range(1, total + 1))  # nothing lost
    if mode == "exactly-once":
        assert len(ids) == total, f"{len(ids) - total} duplicates"
    drop_slot(server.url(), slot)


def test_server_restart_mid_stream(server: LocalServer, profile: ConnectionProfile, names: dict[str, str]) -> None:
    t = names["table"]
    with admin(server) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
    source = open_cdc(profile, {"tables": [t], "slot": names["slot"], "publication": names["publication"],
                                "batchSize": 50}, None)
    try:
        with admin(server) as conn:
            conn.execute(f"INSERT INTO {t} SELECT generate_series(1, 200)")
        events = drain(source, 50, ack=True)
        events += source.poll(1).events  # handed out, not acknowledged
        # A fast shutdown waits for the walsender's client to confirm what it was sent, so the
        # consumer goes on polling (and acknowledging) meanwhile, as a running one would.
        restart = threading.Thread(target=server.restart)
        restart.start()
        deadline = time.monotonic() + 40
        inserted = False
        while len(events) < 300:
            assert time.monotonic() < deadline, f"{len(events)} of 300"
            if not inserted and not restart.is_alive():
                with admin(server) as conn:
                    conn.execute(f"INSERT INTO {t} SELECT generate_series(201, 300)")
                inserted = True
            try:
                batch = source.poll(0.5)
            except ActionError as error:
                assert error.code == "CONNECTION_LOST" and error.retryable
                continue
            events += batch.events
            source.ack(batch.checkpoint)
        restart.join()
        assert quiet(source) == []
    finally:
        source.close()
    assert [e["after"]["id"] for e in events] == list(range(1, 301))  # nothing lost, nothing twice
