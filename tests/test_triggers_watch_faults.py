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
