"""(d) Peak memory of one action, each case in a fresh process (max RSS from resource.getrusage).

    python bench/memory.py                              # starts a throwaway server
    PGACTIONS_BENCH_DSN=postgresql://… python bench/memory.py
    python bench/memory.py --before /tmp/before/src     # the same cases on another source tree too

Cases under the default 10 MB cap (target: peak ≤ 150 MB + 2x the widest row), and two with the
cap lifted (1,000,000 narrow rows: in memory, through the CLI to stdout, and with --output FILE, target
≤ 150 MB).  ``idle`` is the floor: the interpreter, the runtime and one connection.  With
--before, each case also runs on the code of another source tree (an older commit checked out
with ``git worktree add /tmp/before <commit>``), in the same run.
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
from typing import Any

import psycopg
from bulk import bench_server  # bench/bulk.py, beside this script

MB = 1024 * 1024
UNCAPPED = 10**10
NARROW_ROWS = int(os.environ.get("PGACTIONS_BENCH_ROWS", 1_000_000))

SETUP = f"""
CREATE TABLE IF NOT EXISTS bench_narrow AS
SELECT g AS id, 'row number ' || g AS name, '2026-01-01'::timestamptz + g * interval '1 second' AS created_at,
       (g % 10000) / 100.0 AS amount, jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b')) AS attrs
FROM generate_series(1, {NARROW_ROWS}) g;
CREATE OR REPLACE FUNCTION bench_wide_cursor() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'bench_wide';
BEGIN OPEN c FOR SELECT repeat('x', 5000000) AS wide FROM generate_series(1, 200); RETURN c; END $$
"""

# name: (action, inputs, cap, widest row in bytes, what it shows)
CASES: dict[str, tuple[str, dict[str, Any], int, int, str]] = {
    "idle": ("query_rows", {"query": "SELECT 1 AS one"}, 10 * MB, 0, "the floor: interpreter, runtime, a connection"),
    "wide rows": ("query_rows", {"query": "SELECT repeat('x', 5000000) AS wide FROM generate_series(1, 200)"},
                  10 * MB, 5_000_000, "200 rows of 5 MB → RESULT_TOO_LARGE"),
    "wide refcursor": ("call_function", {"name": "bench_wide_cursor"}, 10 * MB, 5_000_000,
                       "the same rows through a returned refcursor"),
    "script, wide last result": (
        "execute_query", {"query": "CREATE TEMP TABLE bench_log (id int); INSERT INTO bench_log VALUES (1); "
                                   "SELECT repeat('x', 1000000) AS wide FROM generate_series(1, 2000)"},
        10 * MB, 1_000_000, "Execute Query script, 2,000 rows of 1 MB last"),
    "script, wide earlier result": (
        "execute_query", {"query": "SELECT repeat('x', 1000000) AS wide FROM generate_series(1, 200); SELECT 1 AS ok"},
        10 * MB, 1_000_000, "200 MB of rows skipped, then SELECT 1 (succeeds)"),
    "narrow rows past the cap": ("query_rows", {"query": "SELECT * FROM bench_narrow"}, 10 * MB, 200,
                                 f"{NARROW_ROWS:,} rows → RESULT_TOO_LARGE"),
    "narrow rows, cap lifted": ("query_rows", {"query": "SELECT * FROM bench_narrow"}, UNCAPPED, 200,
                                "Runtime.run, the document in memory"),
    "CLI to stdout, cap lifted": ("query_rows", {"query": "SELECT * FROM bench_narrow"}, UNCAPPED, 200,
                                  "pgactions run … > /dev/null"),
    "CLI --output FILE, cap lifted": ("query_rows", {"query": "SELECT * FROM bench_narrow"}, UNCAPPED, 200,
                                      "pgactions run … --output FILE"),
}


def child(case: str, url: str) -> None:
    """Run one case in this (fresh) process; print its outcome and peak memory as JSON."""
    from pgactions import ActionError, Limits, Runtime

    action, inputs, cap, _widest, _what = CASES[case]
    profile = {"url": url, "sslMode": "disable"}
    started = time.perf_counter()
    size = 0
    report = sys.stdout
    if case.startswith("CLI"):
        from pgactions.cli import main as cli_main

        command = ["run", action, "-c", url + "?sslmode=disable", "-i", json.dumps(inputs), "--max-result-bytes",
                   str(cap)]
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "out.json")
            if "stdout" in case:  # the CLI's stdout goes to /dev/null, the report to the real one
                report = os.fdopen(os.dup(1), "w")
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                code = cli_main(command)
                sys.stdout.flush()
            else:
                code = cli_main([*command, "--output", path])
                size = os.path.getsize(path) if code == 0 else 0
            outcome = "ok" if code == 0 else f"exit {code}"
    else:
        with Runtime(Limits(max_result_bytes=cap)) as runtime:
            try:
                size = len(runtime.run(action, profile, inputs).json)
                outcome = "ok"
            except ActionError as exc:
                outcome = exc.code
    print(json.dumps({"outcome": outcome, "bytes": size, "seconds": time.perf_counter() - started,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=report)
    report.flush()


def run_case(case: str, url: str, source: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, __file__, "--child", case, "--url", url], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        return {"outcome": f"crashed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode})",
                "bytes": 0, "seconds": 0.0, "max_rss_mb": float("nan")}
    return dict(json.loads(done.stdout))


def bench_memory(url: str, before: str | None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP)
    print("\n(d) peak memory, each case in a fresh process (max RSS)")
    print(f"    {'case':32} {'target':>9} " + (f"{'before':>22} " if before else "") + f"{'now':>22}")
    for case, (_action, _inputs, cap, widest, what) in CASES.items():
        if case == "CLI --output FILE, cap lifted" and before:
            old: dict[str, Any] | None = None  # the old CLI has no --output
        else:
            old = run_case(case, url, before) if before else None
        now = run_case(case, url)
        if case == "idle":
            target = "-"
        elif cap == UNCAPPED:
            target = "150 MB" if "FILE" in case else "-" if "stdout" in case else f"{2 * now['bytes'] / MB + 100:.0f} MB"
        else:
            target = f"{150 + 2 * widest / MB:.0f} MB"
        cells = [_cell(old)] if before else []
        print(f"    {case:32} {target:>9} " + " ".join(cells + [_cell(now)]))
        print(f"    {'':32} {what}" + (f"; output {now['bytes'] / MB:.0f} MB" if now["bytes"] > MB else ""))


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return f"{'(no such option)':>22}"
    return f"{result['max_rss_mb']:7.0f} MB {result['outcome'][:12]:>12}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--before", metavar="SRC", default=None,
                        help="also run every case on the pgactions of this source tree")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url)
        return 0
    with bench_server() as url:
        bench_memory(url, args.before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
