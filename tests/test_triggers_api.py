"""Triggers as a kind of manifest, the Python API (watch, run_handlers) and ``pgactions watch``:
events as JSON lines, the checkpoint file replaced after each batch, exactly once across runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgactions import ActionError, Runtime
from pgactions.spec.manifests import get_manifest, get_trigger, load_manifests, load_triggers
from pgactions.triggers import run_handlers, watch
from pgactions.triggers.watch_cli import read_checkpoint, write_checkpoint

from .conftest import TestDB


def test_triggers_are_listed_apart_and_not_runnable() -> None:
    assert set(load_triggers()) == {"new_rows", "new_or_updated_rows", "row_changes", "notification"}
    assert not set(load_triggers()) & set(load_manifests())
    with pytest.raises(ActionError) as caught:
        get_manifest("new_rows")
    assert "pgactions watch" in caught.value.payload["detail"]
    with pytest.raises(ActionError):
        get_trigger("query_rows")
    listed = subprocess.run([sys.executable, "-m", "pgactions", "list", "--kind", "trigger"],
                            capture_output=True, text=True, timeout=60)
    assert {t["id"] for t in json.loads(listed.stdout)} == set(load_triggers())
    actions = subprocess.run([sys.executable, "-m", "pgactions", "list"], capture_output=True, text=True, timeout=60)
    assert "new_rows" not in actions.stdout
    ran = subprocess.run([sys.executable, "-m", "pgactions", "run", "new_rows", "-c", "postgresql://x@127.0.0.1/x"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1 and "UNKNOWN_ACTION" in ran.stdout


def test_examples_satisfy_their_input_schemas() -> None:
    for trigger in load_triggers().values():
        for example in trigger.examples:
            assert not list(trigger.input_validator().iter_errors(example["input"])), (trigger.id, example)


def test_bad_inputs_are_refused_before_anything_runs(runtime: Runtime, db: TestDB) -> None:
    with pytest.raises(ActionError) as caught:
        watch(runtime, "new_rows", db.profile, {"table": "t"})  # orderBy missing
    assert caught.value.code == "INVALID_INPUT" and "orderBy" in caught.value.payload["detail"]


def test_watch_iterator_and_checkpoint(runtime: Runtime, db: TestDB) -> None:
    db.sql("CREATE TABLE orders (id serial PRIMARY KEY, total numeric(10,2))")
    db.sql("INSERT INTO orders (total) SELECT g FROM generate_series(1, 5) g")
    inputs = {"table": "orders", "orderBy": "id", "startFrom": "beginning", "batchSize": 2}
    feed = watch(runtime, "new_rows", db.profile, inputs, once=True, timeout=0.5)
    seen = [event["after"]["id"] for event in feed]
    assert seen == [1, 2, 3, 4, 5]
    assert feed.checkpoint is not None
    db.sql("INSERT INTO orders (total) VALUES (6.50)")
    again = watch(runtime, "new_rows", db.profile, inputs, feed.checkpoint, once=True, timeout=0.5)
    events = list(again)
    assert [e["after"] for e in events] == [{"id": 6, "total": "6.50"}]
    assert events[0]["op"] == "insert" and events[0]["table"] == f"{db.schema}.orders"


def test_run_handlers_by_op(runtime: Runtime, db: TestDB) -> None:
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    db.sql("INSERT INTO t SELECT generate_series(1, 3)")
    got: list[Any] = []
    stored: list[Any] = []
    last = run_handlers(runtime, "new_rows", db.profile, {"table": "t", "orderBy": "id", "startFrom": "beginning"},
                        once=True, timeout=0.5, on_insert=lambda e: got.append(e["after"]["id"]),
                        on_checkpoint=stored.append)
    assert got == [1, 2, 3] and stored and stored[-1] == last
    with pytest.raises(TypeError):
        run_handlers(runtime, "new_rows", db.profile, {"table": "t", "orderBy": "id"}, on_inserted=print)


def _watch_cli(db: TestDB, checkpoint: Path, inputs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgactions", "watch", "new_rows", "-c", db.server.url(sslmode="disable"),
                           "--input", json.dumps(inputs), "--checkpoint",
                           str(checkpoint), "--once"], capture_output=True, text=True, timeout=120)


def test_cli_watch_prints_json_lines_and_resumes(db: TestDB, tmp_path: Path) -> None:
    db.sql("CREATE TABLE items (id serial PRIMARY KEY, name text)")
    db.sql("INSERT INTO items (name) VALUES ('a'), ('b')")
    checkpoint = tmp_path / "items.checkpoint"
    inputs = {"table": f"{db.schema}.items", "orderBy": "id", "startFrom": "beginning"}
    first = _watch_cli(db, checkpoint, inputs)
    assert first.returncode == 0, first.stderr
    assert [json.loads(line)["after"]["name"] for line in first.stdout.splitlines()] == ["a", "b"]
    assert read_checkpoint(str(checkpoint)) is not None
    db.sql("INSERT INTO items (name) VALUES ('c')")
    second = _watch_cli(db, checkpoint, inputs)
    assert [json.loads(line)["after"]["name"] for line in second.stdout.splitlines()] == ["c"]
    third = _watch_cli(db, checkpoint, inputs)
    assert third.stdout == ""  # nothing new: nothing repeated
    assert [p.name for p in tmp_path.iterdir()] == ["items.checkpoint"]  # no temporary file left


def test_checkpoint_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    assert read_checkpoint(str(path)) is None
    write_checkpoint(str(path), {"position": [1]})
    write_checkpoint(str(path), {"position": [2]})
    assert read_checkpoint(str(path)) == {"position": [2]}
    path.write_text("[1, 2]")
    with pytest.raises(ActionError):
        read_checkpoint(str(path))


def test_checkpoints_stay_small_and_the_callers_copy_untouched(runtime: Runtime, db: TestDB) -> None:
    import copy

    db.sql("CREATE TABLE ticks (id serial PRIMARY KEY)")
    inputs = {"table": "ticks", "orderBy": "id", "startFrom": "beginning", "lookBackSeconds": 0}
    from pgactions.triggers import open_source

    source = open_source(runtime, "new_rows", db.profile, inputs)
    checkpoint = None
    for _ in range(30):
        db.sql("INSERT INTO ticks DEFAULT VALUES")
        checkpoint = source.poll(0).checkpoint
    source.close()
    assert checkpoint is not None and len(checkpoint["marks"]) <= 2  # no look-back: nothing to keep
    kept = copy.deepcopy(checkpoint)
    again = open_source(runtime, "new_rows", db.profile, dict(inputs, lookBackSeconds=5), checkpoint)
    db.sql("INSERT INTO ticks DEFAULT VALUES")
    again.poll(0)
    again.close()
    assert checkpoint == kept  # the stored checkpoint is not changed behind the caller's back
