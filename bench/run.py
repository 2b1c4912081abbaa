"""Benchmarks: pgactions beside raw psycopg, in the same run, printed as ratios.

    python bench/run.py                 # starts a throwaway server
    PGACTIONS_BENCH_DSN=postgresql://… python bench/run.py

(a) point lookup: query_rows by primary key, N calls on a warm pool, vs psycopg on one reused
    autocommit connection (execute + fetchall); wall and CPU per call.  With --before SRC also the
    code of another source tree (in a child process, its rounds interleaved with ours).  Target:
    ≤ 2x psycopg's latency.
(b) streaming: query_rows reading up to the 10 MB cap, and 1,000,000 rows with the cap lifted,
    vs psycopg dict_row + orjson over fetchall().  Target: ≥ 1.0x psycopg's rows/s.  Peak memory
    (max RSS) of each variant is measured in its own child process.  Variants: query_rows in a
    fresh process (the statement never seen: small first chunks), the same query run a second
    time (chunk size learned), the CLI printing to stdout, the CLI with --output FILE; with
    --before SRC also the code of another source tree (an older commit), in the same run.
    Targets with the cap lifted: in memory ≤ 2x the output + 100 MB; --output FILE ≤ 150 MB.

    python bench/run.py --sections b --before /tmp/before/src
(c) bulk writes: insert_rows / upsert_rows of 100,000 rows vs psycopg COPY, executemany and
    per-row loops (bench/bulk.py, also runnable alone).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from bulk import bench_bulk, bench_server  # bench/bulk.py, beside this script
from bulk import report as report_bulk
from psycopg.rows import dict_row

from pgactions import Limits, Runtime

ROWS = int(os.environ.get("PGACTIONS_BENCH_ROWS", 1_000_000))
POINT_CALLS = 5_000
POINT_SQL = "SELECT id, name, email, created_at FROM bench_users WHERE id = $1"
STREAM_SQL = "SELECT id, name, created_at, amount, attrs FROM bench_rows"
CAPPED_ROWS = 75_000  # ≈ 9.9 MB of JSON output: just under the 10 MB cap

SETUP = f"""
DROP TABLE IF EXISTS bench_users, bench_rows;
CREATE TABLE bench_users (id int PRIMARY KEY, name text, email text, created_at timestamptz);
INSERT INTO bench_users SELECT g, 'user ' || g, 'user' || g || '@example.com', now() - g * interval '1 minute'
FROM generate_series(1, 10000) g;
CREATE TABLE bench_rows (id int PRIMARY KEY, name text, created_at timestamptz, amount numeric(12,2), attrs jsonb);
INSERT INTO bench_rows SELECT g, 'row number ' || g, '2026-01-01'::timestamptz + g * interval '1 second',
       (g % 10000) / 100.0, jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b'))
FROM generate_series(1, {ROWS}) g;
VACUUM ANALYZE bench_users, bench_rows;
"""


def _psycopg_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


# -- (a) point lookups ---------------------------------------------------------------------------
POINT_ROUNDS = 5


def _point_ids() -> list[int]:
    return [(i * 7919) % 10000 + 1 for i in range(POINT_CALLS)]


def _timed_cpu(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall µs, CPU µs of this process) per call of one loop of POINT_CALLS."""
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    return ((time.perf_counter() - started) / POINT_CALLS * 1e6,
            (time.process_time() - cpu) / POINT_CALLS * 1e6)


def point_loop(runtime: Runtime, url: str) -> Callable[[], None]:
    profile = {"url": url, "sslMode": "disable"}
    ids = _point_ids()

    def ours() -> None:
        for i in ids:
            runtime.run("query_rows", profile, {"query": POINT_SQL, "parameters": [i]})
    return ours


def point_child(url: str) -> None:
    """(a) for another source tree: one warm-up loop, then one timed loop per line read on stdin
    (so its rounds interleave with the parent's), each answered with wall and CPU µs per call."""
    with Runtime() as runtime:
        ours = point_loop(runtime, url)
        ours()
        print("ready", flush=True)
        for _ in sys.stdin:
            wall, cpu = _timed_cpu(ours)
            print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def bench_point(url: str, before: str | None = None) -> dict[str, float]:
    raw = psycopg.connect(url, autocommit=True)
    cur = psycopg.RawCursor(raw)
    unprepared = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    ucur = psycopg.RawCursor(unprepared)
    ids = _point_ids()

    def raw_loop() -> None:
        for i in ids:
            cur.execute(POINT_SQL, [i])
            cur.fetchall()

    def unprepared_loop() -> None:
        for i in ids:
            ucur.execute(POINT_SQL, [i])
            ucur.fetchall()

    other: subprocess.Popen[str] | None = None
    if before:
        env = dict(os.environ, PYTHONPATH=before + os.pathsep + os.environ.get("PYTHONPATH", ""))
        other = subprocess.Popen([sys.executable, __file__, "--child", "point", "--url", url], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert other.stdin is not None and other.stdout is not None
        other.stdout.readline()  # warmed up

    best: dict[str, float] = {}

    def keep(name: str, wall: float, cpu: float) -> None:
        best[name + "_us"] = min(best.get(name + "_us", float("inf")), wall)
        best[name + "_cpu_us"] = min(best.get(name + "_cpu_us", float("inf")), cpu)

    try:
        with Runtime() as runtime:
            ours = point_loop(runtime, url)
            raw_loop()
            unprepared_loop()
            ours()  # warm all: pools, prepared statements, caches
            # Interleaved rounds, best of each: every side sees the same machine conditions.
            for _ in range(POINT_ROUNDS):
                keep("raw", *_timed_cpu(raw_loop))
                keep("unprepared", *_timed_cpu(unprepared_loop))
                keep("ours", *_timed_cpu(ours))
                if other is not None:
                    assert other.stdin is not None and other.stdout is not None
                    other.stdin.write("\n")
                    other.stdin.flush()
                    result = json.loads(other.stdout.readline())
                    keep("before", result["wall"], result["cpu"])
    finally:
        if other is not None:
            assert other.stdin is not None
            other.stdin.close()
            other.wait()
        raw.close()
        unprepared.close()
    return best


# -- (b) streaming -------------------------------------------------------------------------------
VARIANTS = {
    "psycopg": "psycopg dict_row + orjson fetchall",
    "pgactions": "pgactions query_rows",
    "repeated": "pgactions, the same query run before",
    "cli-stdout": "pgactions CLI to stdout",
    "cli-file": "pgactions CLI --output FILE",
}


def child(variant: str, url: str, limit: int) -> None:
    """One streaming variant in a fresh process: prints rows/s and max RSS as JSON.

    ``pgactions`` times the query's first run (its chunk size not learned yet), ``repeated`` its
    second (chunk size learned, as in a long-lived host); both on a runtime that has run
    ``SELECT 1`` (connected, manifests loaded).  The CLI variants time the whole command.
    """
    sql = STREAM_SQL + (f" ORDER BY id LIMIT {limit}" if limit else "")
    cap = 10 * 1024 * 1024 if limit else 10**10
    profile = {"url": url, "sslMode": "disable"}
    runtime = Runtime(Limits(max_result_bytes=cap))
    if variant in ("pgactions", "repeated"):
        runtime.run("query_rows", profile, {"query": "SELECT 1"})
        if variant == "repeated":
            runtime.run("query_rows", profile, {"query": sql})
    started = time.perf_counter()
    if variant == "psycopg":
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            rows = conn.execute(sql).fetchall()
            out = orjson.dumps({"rows": rows, "rowCount": len(rows)}, default=_psycopg_default,
                               option=orjson.OPT_UTC_Z)
            count, size = len(rows), len(out)
    elif variant.startswith("cli"):
        count, size = _run_cli(variant, url, sql, cap)
    else:
        out = runtime.run("query_rows", profile, {"query": sql}).json
        count, size = int(out[out.rindex(b":") + 1:-1]), len(out)
    elapsed = time.perf_counter() - started
    runtime.close()
    print(json.dumps({"rows": count, "seconds": elapsed, "bytes": size,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _run_cli(variant: str, url: str, sql: str, cap: int) -> tuple[int, int]:
    """``pgactions run query_rows`` in this process: to stdout (sent to /dev/null) or --output."""
    from pgactions.cli import main as cli_main

    args = ["run", "query_rows", "-c", url + "?sslmode=disable", "-i", json.dumps({"query": sql}),
            "--max-result-bytes", str(cap)]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "out.json")
        saved = os.dup(1)
        with open(os.devnull if variant == "cli-stdout" else path, "wb") as sink:
            os.dup2(sink.fileno(), 1)
            try:
                code = cli_main(args + (["--output", path] if variant == "cli-file" else []))
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
        if code != 0:
            raise SystemExit(f"the CLI exited {code}")
        if variant == "cli-stdout":
            return -1, -1
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            file.seek(-40, os.SEEK_END)
            tail = file.read()
        return int(tail[tail.rindex(b":") + 1:-1]), size


def run_child(variant: str, url: str, limit: int, source: str | None = None) -> dict[str, float]:
    """The best of two fresh processes; *source*: another pgactions source tree (PYTHONPATH)."""
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    best: dict[str, float] | None = None
    for _ in range(2):
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--url", url, "--limit", str(limit)],
                             capture_output=True, text=True, check=True, env=env)
        result = json.loads(out.stdout)
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    assert best is not None
    return best


def bench_streaming(url: str, before: str | None) -> None:
    for title, limit in (("up to the 10 MB cap", CAPPED_ROWS), (f"{ROWS:,} rows, cap lifted", 0)):
        runs: list[tuple[str, dict[str, float]]] = [("psycopg", run_child("psycopg", url, limit))]
        if before:
            runs.append(("before: " + VARIANTS["pgactions"], run_child("pgactions", url, limit, before)))
            if not limit:
                runs.append(("before: " + VARIANTS["cli-stdout"], run_child("cli-stdout", url, limit, before)))
        ours = run_child("pgactions", url, limit)
        runs.append((VARIANTS["pgactions"], ours))
        runs += [(VARIANTS[v], run_child(v, url, limit)) for v in ("repeated", "cli-stdout", "cli-file")]
        base_rate = runs[0][1]["rows"] / runs[0][1]["seconds"]
        print(f"\n(b) stream {title} ({ours['rows']:,} rows, {ours['bytes'] / 1e6:.1f} MB JSON)")
        for name, result in runs:
            rows = result["rows"] if result["rows"] >= 0 else ours["rows"]
            rate = rows / result["seconds"]
            print(f"    {name + ':':42} {rate:12,.0f} rows/s  {rate / base_rate:5.2f}x  "
                  f"max RSS {result['max_rss_mb']:7.1f} MB")
        print("    targets: ≥ 1.0x psycopg's rows/s; cap lifted: in memory ≤ 2x the output + 100 MB "
              f"({2 * ours['bytes'] / 2**20 + 100:.0f} MB), --output FILE ≤ 150 MB")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--sections", default="abc", help="which of (a), (b), (c) to run (default: abc)")
    parser.add_argument("--before", metavar="SRC", default=None,
                        help="(a) and (b) also run pgactions from this source tree (e.g. a worktree of an "
                             "older commit: git worktree add /tmp/before <commit>; --before /tmp/before/src)")
    args = parser.parse_args()
    if args.child == "point":
        point_child(args.url)
        return 0
    if args.child:
        child(args.child, args.url, args.limit)
        return 0

    with bench_server() as url:
        print(f"setting up {ROWS:,} rows …", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in SETUP.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if "a" in args.sections:
            report_point(bench_point(url, args.before))
        if "b" in args.sections:
            bench_streaming(url, args.before)
        if "c" in args.sections:
            report_bulk(bench_bulk(url))
    return 0


def report_point(point: dict[str, float]) -> None:
    print(f"\n(a) query_rows by primary key, warm pool ({POINT_CALLS:,} calls, best of {POINT_ROUNDS} "
          "interleaved rounds; CPU: this process's, per call)")
    rows = [("raw psycopg (RawCursor, autocommit, auto-prepared)", "raw"),
            ("raw psycopg, prepared statements off", "unprepared")]
    if "before_us" in point:
        rows.append(("before: pgactions query_rows", "before"))
    rows.append(("pgactions query_rows", "ours"))
    for title, key in rows:
        print(f"    {title + ':':52} {point[key + '_us']:8.1f} µs/call  CPU {point[key + '_cpu_us']:6.1f} µs  "
              f"{point[key + '_us'] / point['raw_us']:5.2f}x")
    print(f"    ratio vs unprepared psycopg:                         {point['ours_us'] / point['unprepared_us']:8.2f}x")
    print("    target: ≤ 2x auto-prepared psycopg (the latency issue: ≤ 1.0x, ≤ 1.1x with the session reset)")


if __name__ == "__main__":
    sys.exit(main())
