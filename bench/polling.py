"""Polling triggers (issue 16): catch-up of ``new_rows`` on a 1,000,000-row table, beside psycopg.

    python bench/polling.py                          # starts a throwaway server, 1,000,000 rows
    python bench/polling.py --rows 100000 --batches 10000 --no-updated
    python bench/polling.py --profile api-id-10000   # + cProfile of one variant (in its own process)
    PGACTIONS_BENCH_DSN=postgresql://… python bench/polling.py

Not a test and never run in CI.  Table ``bench_poll``: ``id serial PRIMARY KEY, created_at
timestamptz NOT NULL, name text, amount numeric``, an index on ``created_at`` (two rows share each
created_at value, so the key breaks ties).  Each variant runs in a fresh process (its peak RSS is
the kernel's ``ru_maxrss`` for that process) and reads the whole table:

- **anchor** — psycopg, a server-side cursor (``conn.cursor(name=…)``, itersize 10,000,
  ``dict_row``), ``orjson.dumps`` per row (numeric as text) written to a file, one line per row;
- **api-{id,created_at}-{batch}** — ``pgactions.triggers.watch(runtime, "new_rows", url,
  {"table", "orderBy", "startFrom": "beginning", "batchSize"}, once=True, timeout=0)``, every event
  iterated and serialized with orjson to a file; the count must equal the table's rows, with no id
  twice (a bitmap of ids);  ``…-lb0``: the same with ``lookBackSeconds: 0`` (no look-back reads);
- **cli-{id,created_at}-{batch}** — ``pgactions watch new_rows -c URL --input … --once --checkpoint
  FILE > events.jsonl``, timed end to end (process start to exit; the count checked afterwards);
- **updated-{batch}** — ``new_or_updated_rows`` by ``updated_at`` (a column added for it, indexed
  with the key) from a checkpoint taken before 100,000 rows were updated: the catch-up of those
  100,000 changes.

The clock of the Python API variants runs from ``watch()`` (the source opened, the table
resolved) to the last event handed out; the anchor's from ``execute`` to the last row written.
RSS is also sampled every 100,000 events (``VmRSS``) to show whether it stays flat.  The anchor
runs again right before every variant and each ratio is to that neighbouring run (other work on the
machine moves absolute rates by 2x between minutes; the ratio much less).

Target (issue 16 item 8): ≥ 50,000 rows/s catch-up; memory flat.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TABLE = "bench_poll"
SETUP = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (id serial PRIMARY KEY, created_at timestamptz NOT NULL, name text, amount numeric);
INSERT INTO {TABLE} (created_at, name, amount)
  SELECT timestamptz '2026-01-01 00:00:00+00' + (g / 2) * interval '1 millisecond', 'customer ' || g || ' order',
         round((g * 1.37) % 10000, 2)
  FROM generate_series(1, %(rows)s) g;
CREATE INDEX ON {TABLE} (created_at);
VACUUM ANALYZE {TABLE};
"""
# new_or_updated_rows: an updated_at every row has (no table rewrite), indexed with the key, then
# every (rows / updated)-th row updated with a later, increasing updated_at.
UPDATED_SETUP = f"""
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00';
CREATE INDEX IF NOT EXISTS bench_poll_updated ON {TABLE} (updated_at, id);
VACUUM ANALYZE {TABLE};
"""


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the variants, each run in a child process -----------------------------------------------------
class Seen:
    """Which ids came: a bitmap (1,000,000 ids: 125 KB, so it does not hide the RSS being measured)."""

    def __init__(self, max_id: int) -> None:
        self.bits = bytearray(max_id // 8 + 1)
        self.count = 0
        self.duplicates = 0

    def add(self, ident: int) -> None:
        byte, bit = ident >> 3, 1 << (ident & 7)
        if self.bits[byte] & bit:
            self.duplicates += 1
        else:
            self.bits[byte] |= bit
        self.count += 1


def child_anchor(url: str, out: Path, rows: int) -> dict[str, Any]:
    import orjson
    import psycopg
    from psycopg.rows import dict_row

    samples = [rss_now_mb()]
    seen = Seen(rows)
    with psycopg.connect(url) as conn, out.open("wb") as file:
        t0 = time.perf_counter()
        with conn.cursor(name="bench_anchor", row_factory=dict_row) as cur:
            cur.itersize = 10_000
            cur.execute(f"SELECT * FROM {TABLE} ORDER BY id")
            write = file.write
            for row in cur:
                write(orjson.dumps(row, default=str) + b"\n")
                seen.add(row["id"])
                if seen.count % 100_000 == 0:
                    samples.append(rss_now_mb())
        elapsed = time.perf_counter() - t0
    return {"rows": seen.count, "duplicates": seen.duplicates, "seconds": elapsed, "rss": samples}


def child_api(url: str, out: Path, rows: int, trigger: str, inputs: dict[str, Any],
              checkpoint: dict[str, Any] | None, expect: int) -> dict[str, Any]:
    import orjson

    from pgactions import Runtime
    from pgactions.triggers import watch

    samples = [rss_now_mb()]
    seen = Seen(rows)
    with Runtime() as runtime, out.open("wb") as file:
        write = file.write
        t0 = time.perf_counter()
        last = t0
        with watch(runtime, trigger, url, inputs, checkpoint, once=True, timeout=0.0) as feed:
            for event in feed:
                write(orjson.dumps(event) + b"\n")
                seen.add(event["after"]["id"])
                if seen.count % 100_000 == 0:
                    samples.append(rss_now_mb())
                if seen.count == expect:
                    last = time.perf_counter()
        ended = time.perf_counter()
        size = len(orjson.dumps(feed.checkpoint))
    return {"rows": seen.count, "duplicates": seen.duplicates, "seconds": (last if last > t0 else ended) - t0,
            "seconds_to_end": ended - t0, "rss": samples, "checkpoint_bytes": size}


def run_child(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    out = Path(spec["out"])
    profiler = cProfile.Profile() if spec.get("profile") else None
    if profiler is not None:
        profiler.enable()
    if spec["kind"] == "anchor":
        result = child_anchor(spec["url"], out, spec["rows"])
    else:
        result = child_api(spec["url"], out, spec["rows"], spec["trigger"], spec["inputs"], spec.get("checkpoint"),
                           spec["expect"])
    if profiler is not None:
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        result["profile"] = text.getvalue()
    result["hwm"] = hwm_mb()
    sys.stdout.write(json.dumps(result) + "\n")


# -- the parent ------------------------------------------------------------------------------------
def spawn(argv: list[str], stdout: Any) -> tuple[int, float, float, bytes]:
    """(exit status, wall seconds, peak RSS MB of that process, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024, err


def variant(name: str, spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    spec = {**spec, "out": str(tmp / f"{name}.jsonl")}
    result_file = tmp / f"{name}.result"
    with result_file.open("wb") as sink:
        code, wall, peak, err = spawn([sys.executable, __file__, "--child", json.dumps(spec)], sink)
    if code != 0:
        raise SystemExit(f"{name} failed ({code}): {err.decode(errors='replace')[-3000:]}")
    result = json.loads(result_file.read_text().strip().splitlines()[-1])
    result.update(wall=wall, peak=peak, rate=result["rows"] / result["seconds"])
    Path(spec["out"]).unlink(missing_ok=True)
    return result


def cli_variant(name: str, url: str, inputs: dict[str, Any], rows: int, tmp: Path) -> dict[str, Any]:
    out, checkpoint = tmp / f"{name}.jsonl", tmp / f"{name}.cp"
    checkpoint.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pgactions", "watch", "new_rows", "-c", url, "--input", json.dumps(inputs),
            "--once", "--checkpoint", str(checkpoint)]
    with out.open("wb") as sink:
        code, wall, peak, err = spawn(argv, sink)
    if code != 0:
        raise SystemExit(f"{name} failed ({code}): {err.decode(errors='replace')[-3000:]}")
    seen = Seen(rows)
    with out.open("rb") as lines:
        for line in lines:
            seen.add(json.loads(line)["after"]["id"])
    out.unlink()
    return {"rows": seen.count, "duplicates": seen.duplicates, "seconds": wall, "wall": wall, "peak": peak,
            "rate": seen.count / wall, "rss": [], "checkpoint_bytes": checkpoint.stat().st_size}


def show(name: str, result: dict[str, Any], anchor: float | None, expect: int) -> None:
    ok = "ok" if result["rows"] == expect and not result["duplicates"] else \
        f"WRONG: {result['rows']:,} events, {result['duplicates']} duplicates, {expect:,} expected"
    rss = result.get("rss") or []
    flat = (f"  RSS {rss[0]:.0f} MB at start → " + " ".join(f"{r:.0f}" for r in rss[1:]) + " MB per 100,000"
            if len(rss) > 1 else "")
    ratio = f" {result['rate'] / anchor:5.2f}x" if anchor else ""
    cp = f"  checkpoint {result['checkpoint_bytes'] / 1024:,.0f} KB" if result.get("checkpoint_bytes") else ""
    print(f"  {name:24} {result['rate']:9,.0f} rows/s{ratio}  {result['seconds']:6.2f} s  peak RSS "
          f"{result['peak']:6.1f} MB  {ok}{cp}{flat}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", default="1000,5000,10000", help="batchSize values, comma-separated")
    parser.add_argument("--updated", type=int, default=100_000, help="rows updated for new_or_updated_rows")
    parser.add_argument("--no-updated", action="store_true")
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--no-lb0", action="store_true", help="skip the lookBackSeconds: 0 variants")
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile one variant (e.g. api-id-10000) and print it")
    parser.add_argument("--only", help="run only these variants (comma-separated names, e.g. api-id-1000,cli-id-10000)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    import psycopg

    batches = [int(b) for b in args.batches.split(",")]
    from bulk import bench_server  # bench/bulk.py, beside this script (imported here: children stay lean)

    with bench_server(shared_buffers="512MB", fsync="off", synchronous_commit="off", max_wal_size="4GB") as url, \
            tempfile.TemporaryDirectory(prefix="pgactions-bench-polling-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in SETUP.split(";"):
                if statement.strip():
                    conn.execute(statement.replace("%(rows)s", str(args.rows)))  # type: ignore[arg-type]
            size = conn.execute(f"SELECT pg_size_pretty(pg_table_size('{TABLE}'))").fetchone()[0]  # type: ignore[index]
            conn.execute(f"SELECT sum(length(name)) FROM {TABLE}")  # warm the cache
            version = conn.info.server_version
        print(f"PostgreSQL {version}, {os.cpu_count()} CPUs, load {open('/proc/loadavg').read().split()[0]}; "
              f"{TABLE}: {args.rows:,} rows ({size}), set up in {time.perf_counter() - t0:.0f} s", flush=True)
        base = {"url": url, "rows": args.rows}
        results: dict[str, dict[str, Any]] = {}

        only = set(args.only.split(",")) if args.only else None
        anchors: list[float] = []

        def anchor() -> float:
            result = variant("anchor", {**base, "kind": "anchor"}, tmp)
            anchors.append(result["rate"])
            show("anchor", result, None, args.rows)
            return float(result["rate"])

        def run(name: str, spec: dict[str, Any], with_anchor: bool, expect: int) -> None:
            if only is not None and name not in only:
                return
            neighbour = anchor() if with_anchor else None
            spec = {**base, **spec, "profile": name == args.profile}
            result = variant(name, spec, tmp)
            results[name] = result
            show(name, result, neighbour, expect)
            if result.get("profile"):
                print(result["profile"])

        for order in ("id", "created_at"):
            for batch in batches:
                inputs = {"table": TABLE, "orderBy": order, "startFrom": "beginning", "batchSize": batch}
                run(f"api-{order}-{batch}", {"kind": "api", "trigger": "new_rows", "inputs": inputs,
                                             "expect": args.rows}, True, args.rows)
            if not args.no_lb0:
                inputs = {"table": TABLE, "orderBy": order, "startFrom": "beginning", "batchSize": batches[-1],
                          "lookBackSeconds": 0}
                run(f"api-{order}-{batches[-1]}-lb0", {"kind": "api", "trigger": "new_rows", "inputs": inputs,
                                                       "expect": args.rows}, True, args.rows)
        if not args.no_cli:
            for order in ("id", "created_at"):
                batch = batches[-1]
                inputs = {"table": TABLE, "orderBy": order, "startFrom": "beginning", "batchSize": batch}
                name = f"cli-{order}-{batch}"
                if only is not None and name not in only:
                    continue
                neighbour = anchor()
                result = cli_variant(name, url, inputs, args.rows, tmp)
                results[name] = result
                show(name + " (end to end)", result, neighbour, args.rows)
        if anchors:
            print(f"  anchor: {min(anchors):,.0f} to {max(anchors):,.0f} rows/s over {len(anchors)} runs", flush=True)

        if not args.no_updated and (only is None or any(name.startswith("updated-") for name in only)):
            updated_run(url, args, batches, tmp, run)


def updated_run(url: str, args: argparse.Namespace, batches: list[int], tmp: Path, run: Any) -> None:
    """new_or_updated_rows: a checkpoint at the newest row, then args.updated rows updated, then the catch-up."""
    import psycopg

    from pgactions import Runtime
    from pgactions.triggers import watch

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in UPDATED_SETUP.split(";"):
            if statement.strip():
                conn.execute(statement)  # type: ignore[arg-type]
    inputs = {"table": TABLE, "updatedAt": "updated_at", "createdAt": "created_at"}
    with Runtime() as runtime, watch(runtime, "new_or_updated_rows", url, inputs, once=True, timeout=0.0) as feed:
        assert not list(feed)  # startFrom now: the first poll only finds the position
        checkpoint = feed.checkpoint
    step = max(1, args.rows // args.updated)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {TABLE} SET updated_at = clock_timestamp(), amount = amount + 1 "  # type: ignore[arg-type]
                     f"WHERE id % {step} = 0")
        changed = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE updated_at > created_at").fetchone()[0]  # type: ignore[index,arg-type]
        conn.execute(f"VACUUM ANALYZE {TABLE}")
    print(f"new_or_updated_rows: {changed:,} rows updated after the checkpoint", flush=True)
    time.sleep(0.5)
    for batch in batches:
        run(f"updated-{batch}", {"kind": "api", "trigger": "new_or_updated_rows",
                                 "inputs": {**inputs, "batchSize": batch}, "checkpoint": checkpoint,
                                 "expect": changed}, False, changed)


if __name__ == "__main__":
    main()
