"""CDC (issue 16): events delivered as JSON, beside PostgreSQL's own pg_recvlogical, same run.

    python bench/cdc.py                      # starts a throwaway server with wal_level = logical
    python bench/cdc.py --rows 20000 --no-million --lag-seconds 5
    python bench/cdc.py --clients            # also: the three replication clients, decode only

- **burst**: one INSERT of N rows (default 100,000), then one UPDATE of all of them; the clock runs
  from the statement's commit to the last event delivered: ``open_cdc`` → ``poll`` → every
  event serialized with ``to_json_bytes`` and written to a file → ``ack``.  Beside it, on a burst
  of its own (the rounds interleave, median of 3): ``pg_recvlogical`` with test_decoding
  streaming to a file, from the commit to its COMMIT line landing in the file.
- **lag**: a steady 1,000 rows/s (10-row transactions every 10 ms) for some seconds; lag = time
  the event is delivered − its commitTime; p50 and p99.
- **memory**: the consumer's RSS sampled while it reads a 1,000,000-row transaction.
- **--clients**: psycopg 3's libpq binding (ours), ``pg_logical_slot_peek_binary_changes`` over
  SQL, and psycopg2's LogicalReplicationConnection (when installed), each decoding the same
  N-row transaction with our pgoutput decoder (no JSON), warm WAL.

Targets: events as JSON ≥ 0.25× pg_recvlogical's rate (goal 0.5×); lag p99 < 1 s at
1,000 rows/s; memory flat during the 1,000,000-change burst.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from pgactions.db.convert import to_json_bytes
from pgactions.devtools.local_server import LocalServer
from pgactions.triggers import pgoutput as po
from pgactions.triggers.cdc import drop_slot, open_cdc

BINDIR = Path("/usr/lib/postgresql/15/bin")
TABLE_SQL = ("CREATE TABLE IF NOT EXISTS bench_cdc (id int PRIMARY KEY, name text, amount numeric, "
             "created_at timestamptz, attrs jsonb)")
INSERT_SQL = ("INSERT INTO bench_cdc SELECT g, 'name ' || g, g * 1.25, now(), jsonb_build_object('k', g) "
              "FROM generate_series(%s::int, %s::int) g")


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recvlogical_path() -> str:
    local = BINDIR / "pg_recvlogical"
    return str(local) if local.exists() else "pg_recvlogical"


class Bench:
    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.url = server.url()
        self.admin = psycopg.connect(self.url, autocommit=True)
        self.admin.execute(TABLE_SQL)
        self.next_id = 1
        self.round = 0

    def fresh_table(self) -> None:
        self.admin.execute("TRUNCATE bench_cdc")
        self.next_id = 1

    # -- ours ---------------------------------------------------------------------------
    def ours(self, rows: int, op: str, sink: Path) -> float:
        """events/s from the commit of one statement of *rows* changes to the last event delivered."""
        self.round += 1
        slot, pub = f"bench_ours_{self.round}", "bench_pub"
        source = open_cdc(self.url, {"tables": ["bench_cdc"], "slot": slot, "publication": pub,
                                     "batchSize": 2000}, None)
        try:
            if op == "update":
                self._insert_quiet(rows, source)
            committed: list[float] = []
            worker = threading.Thread(target=self._statement, args=(rows, op, committed))
            worker.start()
            got = 0
            with sink.open("wb") as out:
                while got < rows:
                    batch = source.poll(5.0)
                    if batch.events:
                        out.write(b"\n".join(to_json_bytes(e) for e in batch.events) + b"\n")
                        got += len(batch.events)
                    source.ack(batch.checkpoint)
                done = time.perf_counter()
            worker.join()
            return rows / (done - committed[0])
        finally:
            source.close()
            drop_slot(self.url, slot)

    def _insert_quiet(self, rows: int, source: Any) -> None:
        """Rows for an update burst, their insert events drained first (not timed)."""
        self.fresh_table()
        self.admin.execute(INSERT_SQL, [1, rows])
        got = 0
        while got < rows:
            batch = source.poll(5.0)
            got += len(batch.events)
            source.ack(batch.checkpoint)

    def _statement(self, rows: int, op: str, committed: list[float]) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            if op == "insert":
                start = self.next_id
                self.next_id += rows
                conn.execute(INSERT_SQL, [start, start + rows - 1])
            else:
                conn.execute("UPDATE bench_cdc SET amount = amount + 1, name = name || '!'")
            committed.append(time.perf_counter())

    # -- pg_recvlogical -----------------------------------------------------------------
    def recvlogical(self, rows: int, op: str, sink: Path) -> float:
        self.round += 1
        slot = f"bench_td_{self.round}"
        if op == "update":
            self.fresh_table()
            self.admin.execute(INSERT_SQL, [1, rows])
        self.admin.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", [slot])
        sink.unlink(missing_ok=True)
        proc = subprocess.Popen([recvlogical_path(), "-d", self.url, "-S", slot, "--start", "-f", str(sink),
                                 "-F", "0", "-s", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.3)  # connected and streaming
            committed: list[float] = []
            self._statement(rows, op, committed)
            marker = b"COMMIT"
            while True:
                if sink.exists() and sink.stat().st_size > 0:
                    with sink.open("rb") as fh:
                        fh.seek(max(0, sink.stat().st_size - 200))
                        if marker in fh.read():
                            break
                if proc.poll() is not None:
                    raise RuntimeError(f"pg_recvlogical stopped: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.002)
            done = time.perf_counter()
            lines = sum(1 for line in sink.open("rb") if b": INSERT:" in line or b": UPDATE:" in line)
            assert lines == rows, f"pg_recvlogical wrote {lines} changes of {rows}"
            return rows / (done - committed[0])
        finally:
            proc.terminate()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
            drop_slot(self.url, slot)  # waits for the walsender pg_recvlogical leaves a moment

    # -- lag ----------------------------------------------------------------------------
    def lag(self, seconds: float, rate: int = 1000) -> tuple[float, float, float, int]:
        slot = "bench_lag"
        source = open_cdc(self.url, {"tables": ["bench_cdc"], "slot": slot, "publication": "bench_pub"}, None)
        self.fresh_table()
        stop = threading.Event()

        def produce() -> None:
            with psycopg.connect(self.url, autocommit=True) as conn:
                next_id, tick, per = 1, 0.01, rate // 100
                t0 = time.perf_counter()
                while not stop.is_set():
                    conn.execute(INSERT_SQL, [next_id, next_id + per - 1])
                    next_id += per
                    wait = t0 + tick * ((next_id - 1) // per) - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)

        lags: list[float] = []
        worker = threading.Thread(target=produce)
        worker.start()
        end = time.monotonic() + seconds
        try:
            with open(os.devnull, "wb") as out:
                while time.monotonic() < end:
                    batch = source.poll(0.5)
                    if batch.events:
                        out.write(b"\n".join(to_json_bytes(e) for e in batch.events))
                        now = time.time()
                        for e in batch.events:
                            lags.append(now - datetime.fromisoformat(e["commitTime"].replace("Z", "+00:00")).timestamp())
                    source.ack(batch.checkpoint)
        finally:
            stop.set()
            worker.join()
            source.close()
            drop_slot(self.url, slot)
        lags.sort()
        p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000  # noqa: E731
        return p(0.5), p(0.99), lags[-1] * 1000, len(lags) * 1 // max(1, int(seconds))

    # -- memory -------------------------------------------------------------------------
    def memory(self, rows: int) -> tuple[float, float, float]:
        slot = "bench_mem"
        source = open_cdc(self.url, {"tables": ["bench_cdc"], "slot": slot, "publication": "bench_pub",
                                     "batchSize": 2000}, None)
        self.fresh_table()
        try:
            samples: list[float] = []
            committed: list[float] = []
            worker = threading.Thread(target=self._statement, args=(rows, "insert", committed))
            worker.start()
            got, start_rss = 0, rss_mb()
            with open(os.devnull, "wb") as out:
                while got < rows:
                    batch = source.poll(5.0)
                    out.write(b"\n".join(to_json_bytes(e) for e in batch.events))
                    got += len(batch.events)
                    source.ack(batch.checkpoint)
                    if got and len(samples) < got // 50_000:
                        samples.append(rss_mb())
            worker.join()
            return start_rss, samples[0] if samples else start_rss, max(samples or [start_rss])
        finally:
            source.close()
            drop_slot(self.url, slot)

    # -- the clients, decode only -------------------------------------------------------
    def clients(self, rows: int) -> dict[str, float]:
        self.fresh_table()
        for s in ("cl_ours", "cl_sql", "cl_pg2", "cl_warm"):
            self.admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [s])
        self.admin.execute(INSERT_SQL, [1, rows])
        out: dict[str, float] = {}
        self._stream_pq("cl_warm", rows)  # reads the WAL once: every client below finds it cached
        out["psycopg 3 libpq binding, streaming (ours)"] = self._stream_pq("cl_ours", rows)
        t0 = time.perf_counter()
        with psycopg.connect(self.url, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT data FROM pg_logical_slot_peek_binary_changes('cl_sql', NULL, NULL, "
                        "'proto_version', '1', 'publication_names', 'bench_pub')", binary=True)
            n = sum(1 for (d,) in cur if po.decode(bytes(d))[0] == po.INSERT)
        assert n == rows
        out["pg_logical_slot_peek_binary_changes (SQL)"] = rows / (time.perf_counter() - t0)
        try:
            import psycopg2  # type: ignore[import-untyped]
            import psycopg2.extras  # type: ignore[import-untyped]
        except ImportError:
            psycopg2 = None
        if psycopg2 is not None:
            t0 = time.perf_counter()
            conn2 = psycopg2.connect(self.url, connection_factory=psycopg2.extras.LogicalReplicationConnection)
            cur2 = conn2.cursor()
            cur2.start_replication(slot_name="cl_pg2", decode=False,
                                   options={"proto_version": "1", "publication_names": "bench_pub"})
            n = 0
            while True:
                msg = cur2.read_message()
                if msg is None:
                    select.select([cur2], [], [], 1)
                    continue
                kind = po.decode(msg.payload)[0]
                if kind == po.INSERT:
                    n += 1
                elif kind == po.COMMIT:
                    break
            out["psycopg2 LogicalReplicationConnection"] = rows / (time.perf_counter() - t0)
            conn2.close()
        for s in ("cl_ours", "cl_sql", "cl_pg2", "cl_warm"):
            self.admin.execute("SELECT pg_drop_replication_slot(%s)", [s])
        return out

    def _stream_pq(self, slot: str, rows: int) -> float:
        t0 = time.perf_counter()
        conn = psycopg.Connection.connect(self.url, replication="database", autocommit=True)
        pg = conn.pgconn
        pg.send_query(f"START_REPLICATION SLOT {slot} LOGICAL 0/0 (proto_version '1', "
                      "publication_names 'bench_pub')".encode())
        pg.get_result()
        n = 0
        while True:
            size, data = pg.get_copy_data(1)
            if size == 0:
                select.select([pg.socket], [], [], 1)
                pg.consume_input()
                continue
            if data[0] == 119:
                kind = po.decode(bytes(data[25:]))[0]
                if kind == po.INSERT:
                    n += 1
                elif kind == po.COMMIT:
                    break
        conn.close()
        assert n == rows
        return rows / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument("--million", type=int, default=1_000_000, help="rows of the memory burst (0: skip)")
    parser.add_argument("--no-million", action="store_true")
    parser.add_argument("--clients", action="store_true", help="also compare the replication clients")
    args = parser.parse_args()
    conf = {"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20",
            "max_wal_size": "4GB", "shared_buffers": "256MB",
            "synchronous_commit": "on"}  # the walsender sends flushed WAL only: async commit would add ~wal_writer_delay
    with LocalServer(ssl=False, extra_conf=conf) as server, tempfile.TemporaryDirectory() as tmp:
        bench = Bench(server)
        bench.admin.execute("CREATE PUBLICATION bench_pub FOR TABLE bench_cdc")
        print(f"PostgreSQL {bench.admin.info.server_version}, {os.cpu_count()} CPUs, {args.rows:,} rows per burst, "
              f"median of {args.rounds} interleaved rounds")
        for op in ("insert", "update"):
            ours, theirs = [], []
            for _ in range(args.rounds):
                if op == "insert":
                    bench.fresh_table()
                ours.append(bench.ours(args.rows, op, Path(tmp) / "ours.jsonl"))
                if op == "insert":
                    bench.fresh_table()
                theirs.append(bench.recvlogical(args.rows, op, Path(tmp) / "recv.txt"))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"{op} burst: pgactions CDC {a:,.0f} events/s as JSON; pg_recvlogical (test_decoding → file) "
                  f"{b:,.0f} changes/s; ratio {a / b:.2f}x (bar 0.25x, goal 0.5x)")
        p50, p99, worst, rate = bench.lag(args.lag_seconds)
        print(f"lag at 1,000 rows/s for {args.lag_seconds:.0f} s ({rate:,} events/s delivered): p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms, max {worst:.1f} ms (target p99 < 1000 ms)")
        if args.million and not args.no_million:
            start, first, peak = bench.memory(args.million)
            print(f"memory, {args.million:,}-change transaction: RSS {start:.0f} MB before, {first:.0f} MB after "
                  f"50,000 events, peak {peak:.0f} MB (flat: the source holds one batch)")
        if args.clients:
            for name, rate_ in bench.clients(args.rows).items():
                print(f"client, decode only, {args.rows:,} changes: {name}: {rate_:,.0f} changes/s")
        bench.admin.close()


if __name__ == "__main__":
    main()
