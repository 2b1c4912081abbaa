"""(c) Bulk writes: insert_rows and upsert_rows beside psycopg's own COPY and per-row loops.

    python bench/bulk.py                # starts a throwaway server; also run by bench/run.py
    PGACTIONS_BENCH_DSN=postgresql://… python bench/bulk.py

100,000 rows given as JSON-like dicts (int, text, a timestamp as an ISO string, a numeric, a jsonb
object).  Baselines, same rows, same run: psycopg COPY (text format, rows written as tuples, the
json as orjson text), psycopg executemany, and a per-row INSERT / upsert loop in autocommit (what
a one-item-at-a-time tool does; measured on 5,000 rows).  Targets: insert_rows ≥ 0.7x COPY's
rows/s and ≥ 10x the per-row loop; upsert_rows ≥ 10x the per-row upsert loop.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg

from pgactions import Runtime
from pgactions.devtools.local_server import LocalServer

BULK_ROWS = int(os.environ.get("PGACTIONS_BENCH_BULK_ROWS", 100_000))
LOOP_ROWS = 5_000
COLUMNS = ("id", "name", "created_at", "amount", "attrs")
TABLE = ("CREATE TABLE IF NOT EXISTS bench_bulk (id int PRIMARY KEY, name text NOT NULL, created_at timestamptz, "
         "amount numeric(12,2), attrs jsonb)")
INSERT = "INSERT INTO bench_bulk (id, name, created_at, amount, attrs) VALUES (%s, %s, %s, %s, %s)"
UPSERT = INSERT + (" ON CONFLICT (id) DO UPDATE SET name = excluded.name, created_at = excluded.created_at, "
                   "amount = excluded.amount, attrs = excluded.attrs")


def make_rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"customer {i}", "created_at": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T10:{i % 60:02d}:00Z",
             "amount": f"{i % 100000 / 100:.2f}", "attrs": {"k": i, "tags": ["a", "b"], "vip": i % 7 == 0}}
            for i in range(n)]


def _best(fn: Callable[[], None], reset: Callable[[], None], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        reset()
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_bulk(url: str) -> dict[str, float]:
    rows = make_rows(BULK_ROWS)
    loop_rows = rows[:LOOP_ROWS]
    admin = psycopg.connect(url, autocommit=True)
    admin.execute("DROP TABLE IF EXISTS bench_bulk")
    admin.execute(TABLE)

    def truncate() -> None:
        admin.execute("TRUNCATE bench_bulk")

    def as_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["id"], row["name"], row["created_at"], row["amount"], orjson.dumps(row["attrs"]).decode())

    def copy() -> None:
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            with cur.copy("COPY bench_bulk (id, name, created_at, amount, attrs) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(as_tuple(row))

    def executemany() -> None:
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.executemany(INSERT, [as_tuple(r) for r in rows])

    def loop(sql: str) -> Callable[[], None]:
        def run() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                for row in loop_rows:
                    conn.execute(sql, as_tuple(row))
        return run

    results: dict[str, float] = {}
    with Runtime() as runtime:
        profile = {"url": url, "sslMode": "disable"}
        runtime.run("query_rows", profile, {"query": "SELECT 1"})  # warm pool

        def insert_rows() -> None:
            out = runtime.run("insert_rows", profile, {"table": "bench_bulk", "rows": rows}).data
            assert out["rowCount"] == len(rows)

        def upsert_rows() -> None:
            out = runtime.run("upsert_rows", profile, {"table": "bench_bulk", "rows": rows}).data
            assert out["rowCount"] == len(rows)

        results["copy"] = len(rows) / _best(copy, truncate)
        results["insert_rows"] = len(rows) / _best(insert_rows, truncate)
        results["executemany"] = len(rows) / _best(executemany, truncate, repeat=1)
        results["insert_loop"] = len(loop_rows) / _best(loop(INSERT), truncate, repeat=1)
        results["upsert_rows_new"] = len(rows) / _best(upsert_rows, truncate)
        results["upsert_rows_existing"] = len(rows) / _best(upsert_rows, lambda: None)
        results["upsert_loop"] = len(loop_rows) / _best(loop(UPSERT), truncate, repeat=1)
    admin.execute("DROP TABLE bench_bulk")
    admin.close()
    return results


def report(r: dict[str, float]) -> None:
    print(f"\n(c) bulk writes, {BULK_ROWS:,} rows as JSON-like dicts (per-row loops on {LOOP_ROWS:,})")
    print(f"    psycopg COPY (text, tuples):          {r['copy']:12,.0f} rows/s")
    print(f"    psycopg executemany:                  {r['executemany']:12,.0f} rows/s")
    print(f"    per-row INSERT loop (autocommit):     {r['insert_loop']:12,.0f} rows/s")
    print(f"    pgactions insert_rows (COPY path):    {r['insert_rows']:12,.0f} rows/s")
    print(f"      ratio vs COPY:                      {r['insert_rows'] / r['copy']:12.2f}x  (target ≥ 0.7x)")
    print(f"      ratio vs per-row INSERT loop:       {r['insert_rows'] / r['insert_loop']:12.1f}x  (target ≥ 10x)")
    print(f"    per-row upsert loop (autocommit):     {r['upsert_loop']:12,.0f} rows/s")
    print(f"    pgactions upsert_rows, all new:       {r['upsert_rows_new']:12,.0f} rows/s")
    print(f"    pgactions upsert_rows, all existing:  {r['upsert_rows_existing']:12,.0f} rows/s")
    print(f"      ratio (new) vs per-row upsert loop: {r['upsert_rows_new'] / r['upsert_loop']:12.1f}x  (target ≥ 10x)")
    print(f"      ratio (existing) vs the loop:       {r['upsert_rows_existing'] / r['upsert_loop']:12.1f}x")


@contextmanager
def bench_server(max_connections: int = 40, **settings: str) -> Iterator[str]:
    """PGACTIONS_BENCH_DSN, or a throwaway local server for the run, with these postgresql.conf
    *settings* over ``shared_buffers = 256MB`` (every bench script uses it)."""
    url = os.environ.get("PGACTIONS_BENCH_DSN")
    if url:
        yield url
        return
    server = LocalServer(ssl=False, max_connections=max_connections,
                         extra_conf={"shared_buffers": "256MB", **settings}).start()
    try:
        yield server.url()
    finally:
        server.stop()


def main() -> int:
    with bench_server() as url:
        report(bench_bulk(url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
