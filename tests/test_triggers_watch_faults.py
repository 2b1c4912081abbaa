"""``pgactions watch`` through a kill -9 of the watcher and a restart of the server: every row is
delivered, none lost; only the batch in flight at the kill may come twice (the checkpoint file is
written after the batch is printed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgactions.devtools.local_server import LocalServer

BATCH = 50


@pytest.fixture(scope="module")
def server(pg: Any) -> Iterator[LocalServer]:
    if pg.local is None:
        pytest.skip("needs local PostgreSQL binaries (PGACTIONS_TEST_DSN points elsewhere)")
    local = LocalServer(ssl=False, max_connections=20, bindir=pg.local._bindir).start()
    try:
        local.psql("CREATE DATABASE watch")
        yield local
    finally:
        local.stop()


def _insert(url: str, first: int, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(first, first + count, 10):
            conn.execute("INSERT INTO events (id, note) SELECT g, 'n' || g FROM generate_series(%s::int, %s::int) g",
                         [start, min(start + 9, first + count - 1)])


def _start(url: str, checkpoint: Path, out: Path) -> subprocess.Popen[bytes]:
    inputs = {"table": "events", "orderBy": "id", "startFrom": "beginning", "batchSize": BATCH}
    with open(out, "ab") as sink, open(out.with_suffix(".err"), "ab") as errors:
        return subprocess.Popen([sys.executable, "-m", "pgactions", "watch", "new_rows", "-c", url, "--input",
                                 json.dumps(inputs), "--checkpoint", str(checkpoint)],
                                stdout=sink, stderr=errors)


def _ids(out: Path) -> list[int]:
    lines = out.read_text().splitlines()
    return [json.loads(line)["after"]["id"] for line in lines if line.strip()]


def _wait_for(out: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(set(_ids(out))) < count:
        assert time.monotonic() < deadline, f"{len(set(_ids(out)))} of {count} rows delivered"
        time.sleep(0.1)


def test_kill_9_and_server_restart_lose_nothing(server: LocalServer, tmp_path: Path) -> None:
    url = server.url(database="watch", sslmode="disable")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, note text)")
    checkpoint, out = tmp_path / "events.cp", tmp_path / "events.jsonl"
    _insert(url, 1, 400)
    watcher = _start(url, checkpoint, out)
    try:
        _wait_for(out, 100)
        os.kill(watcher.pid, signal.SIGKILL)  # mid-stream, wherever it is
        watcher.wait()
        _insert(url, 401, 200)
        watcher = _start(url, checkpoint, out)
        _wait_for(out, 600)
        server.restart()  # the pool replaces the connections the restart closed
        _insert(url, 601, 200)
        _wait_for(out, 800)
        pg_ctl = [str(server._bindir / "pg_ctl"), "-D", str(server.datadir)]
        server._run([*pg_ctl, "-m", "fast", "-w", "stop"])
        time.sleep(3)  # an outage: the watcher's polls fail, and it waits them out
        server._run([*pg_ctl, "-w", "-l", str(server.root / "server.log"), "start"])
        _insert(url, 801, 100)
        _wait_for(out, 900)
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    ids = _ids(out)
    assert set(ids) == set(range(1, 901))  # nothing lost
    assert len(ids) - len(set(ids)) <= BATCH  # at most the batch in flight at the kill, once more
    errors = out.with_suffix(".err").read_text()
    assert "Traceback" not in errors
    assert "trying again" in errors  # the outage was waited out, and said


# == exactly once: a consumer that stores each batch's effects and checkpoint in one transaction ==

CONSUMER = """
import json, sys, time
import psycopg
from pgactions import ActionError, Runtime
from pgactions.triggers import watch

url, inputs = sys.argv[1], json.loads(sys.argv[2])
sink = psycopg.connect(url, autocommit=True)
row = sink.execute("SELECT checkpoint FROM sink_state WHERE name = 'events'").fetchone()
checkpoint = json.loads(row[0]) if row else None
print("ready", flush=True)
with Runtime() as runtime:
    feed = watch(runtime, "new_rows", url, inputs, checkpoint, timeout=0.5)
    for batch in feed.batches():
        while True:
            try:
                with sink.transaction():  # the effects and the checkpoint together, or neither
                    for event in batch.events:
                        sink.execute("INSERT INTO sink (id) VALUES (%s)", [event["after"]["id"]])
                    sink.execute("INSERT INTO sink_state VALUES ('events', %s) ON CONFLICT (name) "
                                 "DO UPDATE SET checkpoint = excluded.checkpoint", [json.dumps(batch.checkpoint)])
                break
            except psycopg.OperationalError:  # the server restarting: store again once it is back
                time.sleep(0.5)
                sink = psycopg.connect(url, autocommit=True)
"""


def test_exactly_once_for_a_consumer_that_stores_the_checkpoint(server: LocalServer, tmp_path: Path) -> None:
    url = server.url(database="watch", sslmode="disable")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE once_src (id serial PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE sink (seq bigserial PRIMARY KEY, id int NOT NULL)")
        conn.execute("CREATE TABLE sink_state (name text PRIMARY KEY, checkpoint text)")
    inputs = {"table": "once_src", "orderBy": "id", "startFrom": "beginning", "batchSize": 37}
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    errors = tmp_path / "consumer.err"

    def start() -> subprocess.Popen[str]:
        with errors.open("a") as err:
            proc = subprocess.Popen([sys.executable, str(script), url, json.dumps(inputs)], stdout=subprocess.PIPE,
                                    stderr=err, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", errors.read_text()
        return proc

    def stored() -> list[int]:
        with psycopg.connect(url, autocommit=True) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM sink ORDER BY seq")]

    def insert(count: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(count // 10):
                conn.execute("INSERT INTO once_src (note) SELECT 'x' FROM generate_series(1, 10)")

    insert(300)
    proc = start()
    try:
        for round_ in range(3):  # kill -9 mid-stream, three times, with rows arriving meanwhile
            deadline = time.monotonic() + 60
            while len(stored()) < 100 * (round_ + 1):
                assert time.monotonic() < deadline, errors.read_text()
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            insert(100)
            proc = start()
        server.restart()
        insert(100)
        deadline = time.monotonic() + 60
        while len(set(stored())) < 700:
            assert time.monotonic() < deadline, f"{len(set(stored()))} of 700: {errors.read_text()}"
            time.sleep(0.05)
        time.sleep(1.0)  # anything more (a duplicate) would arrive now
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    ids = stored()
    assert sorted(ids) == list(range(1, 701))  # every row once: none lost, none twice
