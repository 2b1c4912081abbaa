"""``pgactions run … --output FILE``: the output streamed to a temporary file beside FILE, renamed
into place only once the action succeeded and committed; after a failure neither FILE nor a
temporary file is left (and nothing was committed), the error JSON is on stdout, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pgactions import Runtime
from pgactions.db.output import FileSink

from .peak_memory import PEAK_SOURCE

# Runs the CLI in a fresh process and records its exit code and peak memory in a side file, so
# that stdout and stderr stay exactly the CLI's own.
# Peak memory two ways: max RSS (everything, libpq's buffers too, which vary with how fast the
# server sends), and the peak of Python's own allocations (tracemalloc: where a document held in
# memory would show, whatever the machine's load).
_WRAPPER = PEAK_SOURCE + """
import json, sys, tracemalloc

tracemalloc.start()
from pgactions.cli import main
code = main(sys.argv[2:])
sys.stdout.flush()
with open(sys.argv[1], "w") as report:
    json.dump({"exit": code, "max_rss_mb": peak_mb(),
               "py_peak_mb": tracemalloc.get_traced_memory()[1] / 1024 / 1024}, report)
sys.exit(code)
"""


def cli(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = tmp_path.parent / f"{tmp_path.name}-report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    done = subprocess.run([sys.executable, "-c", _WRAPPER, str(report), *args], capture_output=True, text=True,
                          env=env, timeout=120)
    measured = json.loads(report.read_text()) if report.exists() else {"exit": done.returncode}
    assert measured["exit"] == done.returncode, done.stderr
    return done, measured


def connection(db, tmp_path: Path) -> list[str]:
    """--connection: a profile file outside the output folder (tmp_path/out)."""
    profile = tmp_path / "profile.yaml"
    if not profile.exists():
        profile.write_text(f"url: {db.server.url()}\nschema: {db.schema}\nsslMode: disable\n")
        (tmp_path / "out").mkdir()
    return ["--connection", str(profile)]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_output_file_holds_exactly_the_output(db, tmp_path: Path) -> None:
    db.sql("CREATE TABLE t (id int PRIMARY KEY, name text, at timestamptz, amount numeric(10,2), attrs jsonb)")
    db.sql("INSERT INTO t SELECT g, 'name ' || g, '2026-01-01'::timestamptz + g * interval '1 hour', g / 4.0, "
           "jsonb_build_object('k', g, 'é', 'ü') FROM generate_series(1, 20000) g")
    query = json.dumps({"query": "SELECT * FROM t ORDER BY id"})
    out = tmp_path / "out" / "rows.json"
    to_file, _ = cli(tmp_path, "run", "query_rows", *connection(db, tmp_path), "-i", query, "--output", str(out),
                     "--max-result-bytes", "100000000")
    assert (to_file.returncode, to_file.stdout, to_file.stderr) == (0, "", "")
    to_stdout, _ = cli(tmp_path, "run", "query_rows", *connection(db, tmp_path), "-i", query, "--max-result-bytes", "100000000")
    assert to_stdout.returncode == 0
    assert out.read_bytes() + b"\n" == to_stdout.stdout.encode()  # more than SPILL_BYTES: streamed
    assert files(tmp_path / "out") == ["rows.json"]
    # Small outputs (in memory) and outputs without rows are written alike.
    small = tmp_path / "out" / "small.json"
    done, _ = cli(tmp_path, "run", "execute_query", *connection(db, tmp_path), "-i",
                  json.dumps({"query": "UPDATE t SET name = name WHERE id <= 5"}), "-o", str(small))
    assert done.returncode == 0 and json.loads(small.read_bytes()) == {"success": True, "rowCount": 5}


def test_streamed_to_a_file_memory_stays_small(db, tmp_path: Path) -> None:
    """600,000 rows with the cap lifted: about 115 MB of JSON, never held in memory."""
    query = json.dumps({"query": "SELECT g AS id, repeat('r', 150) AS payload FROM generate_series(1, 600000) g"})
    out = tmp_path / "out" / "big.json"
    done, measured = cli(tmp_path, "run", "query_rows", *connection(db, tmp_path), "-i", query, "-o", str(out),
                         "--max-result-bytes", "10000000000")
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 100_000_000
    assert measured["py_peak_mb"] < 60, measured  # O(batch): the document (~115 MB) never held
    assert measured["max_rss_mb"] < 350, measured
    with out.open("rb") as file:
        file.seek(-30, os.SEEK_END)
        assert file.read().endswith(b'"rowCount":600000}')


def test_no_file_after_a_failure_and_nothing_committed(db, tmp_path: Path) -> None:
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.sql("INSERT INTO t SELECT g, repeat('v', 500) FROM generate_series(1, 10000) g")
    out = tmp_path / "out" / "out.json"
    # maxAffectedRows fails after every returned row was written (past SPILL_BYTES: to a temporary file).
    done, _ = cli(tmp_path, "run", "update_rows", *connection(db, tmp_path), "-o", str(out), "-i",
                  json.dumps({"query": "UPDATE t SET v = 'changed' RETURNING *", "maxAffectedRows": 100}))
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "MAX_AFFECTED_ROWS"
    assert done.stderr.startswith("pgactions: MAX_AFFECTED_ROWS")
    assert files(tmp_path / "out") == []
    assert db.sql("SELECT count(*) FROM t WHERE v = 'changed'") == [(0,)]
    # The cap passed mid-stream: the INSERT is rolled back, and no file.
    done, _ = cli(tmp_path, "run", "execute_query", *connection(db, tmp_path), "-o", str(out), "--max-result-bytes", "3000000",
                  "-i", json.dumps({"query": "INSERT INTO t SELECT g, repeat('n', 500) FROM generate_series(10001, 20000) g "
                                              "RETURNING *"}))
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["code"] == "RESULT_TOO_LARGE"
    assert files(tmp_path / "out") == []
    assert db.sql("SELECT count(*) FROM t") == [(10000,)]
    # A file already there stays as it was.
    out.write_text("previous")
    done, _ = cli(tmp_path, "run", "query_rows", *connection(db, tmp_path), "-o", str(out), "-i",
                  json.dumps({"query": "SELECT * FROM missing_table"}))
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["code"] == "UNDEFINED_TABLE"
    assert files(tmp_path / "out") == ["out.json"] and out.read_text() == "previous"
    # … and is replaced by a success.
    done, _ = cli(tmp_path, "run", "query_rows", *connection(db, tmp_path), "-o", str(out), "-i",
                  json.dumps({"query": "SELECT count(*) AS n FROM t"}))
    assert done.returncode == 0 and json.loads(out.read_bytes()) == {"rows": [{"n": 10000}], "rowCount": 1}


def test_output_usage_errors(db, tmp_path: Path) -> None:
    query = json.dumps({"query": "SELECT 1 AS one"})
    for target in (tmp_path / "missing" / "out.json", tmp_path / "out"):
        done, _ = cli(tmp_path, "run", "query_rows", *connection(db, tmp_path), "-i", query, "-o", str(target))
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.strip().splitlines()[-1].startswith("pgactions: --output:"), done.stderr
    assert files(tmp_path / "out") == []


def test_batches_to_a_file(db, tmp_path: Path) -> None:
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    items = json.dumps([{"inputs": {"table": "t", "columns": {"id": i}}} for i in (1, 2, 1)])
    out = tmp_path / "out" / "batch.json"
    done, _ = cli(tmp_path, "run", "insert_row", *connection(db, tmp_path), "--items", items, "-o", str(out))
    assert done.returncode == 3 and done.stdout == ""  # item 2 repeats item 0's key
    data = json.loads(out.read_bytes())
    assert [item["ok"] for item in data["items"]] == [True, True, False]
    done, _ = cli(tmp_path, "run", "insert_row", *connection(db, tmp_path), "--items", items, "--batch-mode", "transaction",
                  "-o", str(out))
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["code"] == "UNIQUE_VIOLATION"
    assert json.loads(out.read_bytes()) == data  # the earlier file is left as it was
    assert files(tmp_path / "out") == ["batch.json"]


def test_runtime_with_a_file_sink(db, tmp_path: Path) -> None:
    target = tmp_path / "steps.json"
    with Runtime() as runtime:
        result = runtime.run("run_transaction", db.profile, {"steps": [
            {"id": "a", "action": "query_rows", "inputs": {"query": "SELECT 1 AS one"}},
            {"id": "b", "action": "query_rows", "inputs": {"query": "SELECT {{ steps.a.rows[0].one }} + 1 AS two"}}]},
            sink=FileSink(target))
        assert result.json == b"" and result.path == str(target)
        assert result.data["steps"][1]["output"]["rows"] == [{"two": 2}]
        in_memory = runtime.run("query_rows", db.profile, {"query": "SELECT 1 AS one"})
        assert in_memory.path is None and in_memory.data == {"rows": [{"one": 1}], "rowCount": 1}
    assert files(tmp_path) == ["steps.json"]
