"""Bench: ``pgactions serve`` over HTTP beside what a team would write by hand and MCP Toolbox.

    python bench/service.py                      # Toolbox too when found (PATH, $TOOLBOX, the bench's cache)
    python bench/service.py --toolbox            # install Toolbox with npm when missing
    python bench/service.py --no-toolbox --duration 5
    python bench/service.py --profile            # + py-spy on one service worker under load
    PGACTIONS_BENCH_DSN=postgresql://… python bench/service.py

Not a test and never run in CI (it installs things, starts servers and takes minutes).  It starts a
throwaway PostgreSQL (as bench/run.py does), a 10,000-row table, then each contender as a
subprocess on a loopback port, all with uvicorn's same settings and 2 worker processes:

* ``service``: ``python -m pgactions serve --no-auth --workers 2``, ``POST /v1/actions/query_rows:run``
  with the connection inline (a profile object) — and ``service (stored)``, the same call naming a
  stored connection (``connectionId``: read from the state directory and decrypted per request);
* ``handwritten``: bench/handwritten_endpoint.py — Starlette + uvicorn + psycopg_pool, one fixed
  statement, no validation (``pip install psycopg-pool`` when missing);
* ``toolbox``: MCP Toolbox for Databases serving the same statement as a ``postgres-sql`` tool
  (``toolbox --enable-api``, ``POST /api/tool/{name}/invoke``); the npm package
  ``@toolbox-sdk/server-linux-x64`` is installed into ~/.cache/pgactions-bench/toolbox with --toolbox.

The load generator is wrk (Debian: ``apt-get install -y wrk``) with bench/wrk_post.lua: at -t1 -c1
(p50/p99) and -t2 -c16 (throughput) for --duration seconds each, every test run for every
contender in turn (interleaved), for the one-row read by primary key and a 1,000-row read.  Any
error — wrk's non-2xx/3xx count, a socket error or timeout — fails the run.  Beside them,
``Runtime.run`` in this process for the same calls (no HTTP).  Memory: the VmRSS of the service's
uvicorn worker processes after warm-up and after 100,000 requests (--memory-requests).

Note: wrk, the servers and PostgreSQL share this machine's cores; on a 2-core VM the contenders
compete with the load generator and the database, so compare the same-run ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pgactions import Runtime
from pgactions.devtools.local_server import free_port

HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk_post.lua"
TOOLBOX_PACKAGE = "@toolbox-sdk/server-linux-x64"
TOOLBOX_CACHE = Path.home() / ".cache" / "pgactions-bench" / "toolbox"
TABLE_ROWS = 10_000

SETUP = f"""
DROP TABLE IF EXISTS bench_users;
CREATE TABLE bench_users (id int PRIMARY KEY, name text, email text, created_at timestamptz);
INSERT INTO bench_users SELECT g, 'user ' || g, 'user' || g || '@example.com', now() - g * interval '1 minute'
FROM generate_series(1, {TABLE_ROWS}) g;
VACUUM ANALYZE bench_users;
"""


@dataclass(frozen=True)
class Query:
    name: str
    sql: str  # $1 placeholder (pgactions, Toolbox)
    rows: int
    max_id: int

    @property
    def psycopg_sql(self) -> str:  # %(id)s placeholder (the hand-written endpoint)
        return self.sql.replace("$1", "%(id)s")


QUERIES = [
    Query("1 row", "SELECT id, name, email, created_at FROM bench_users WHERE id = $1", 1, TABLE_ROWS),
    Query("1,000 rows", "SELECT id, name, email, created_at FROM bench_users WHERE id BETWEEN $1 AND $1 + 999 "
                        "ORDER BY id", 1000, TABLE_ROWS - 999),
]
LOADS = [("c1", 1, 1), ("c16", 2, 16)]  # name, wrk threads, connections


# -- the contenders ------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    requests: int = 0  # sent by wrk so far
    bodies: dict[str, str] = field(default_factory=dict)  # query name → body template (%d = id)
    paths: dict[str, str] = field(default_factory=dict)  # query name → URL path

    def url(self, query: Query) -> str:
        return f"http://127.0.0.1:{self.port}{self.paths[query.name]}"

    def post(self, query: Query, ident: int, timeout: float = 30) -> tuple[int, bytes]:
        data = (self.bodies[query.name] % ident).encode()
        request = urllib.request.Request(self.url(query), data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def workers(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor), or the process itself."""
        assert self.process is not None
        children = _children(self.process.pid)
        workers = [pid for pid in children if b"resource_tracker" not in _cmdline(pid)]
        return workers or [self.process.pid]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of *pids* (from /proc/<pid>/stat), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start(name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str] | None = None) -> Contender:
    log = workdir / f"{name}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=str(workdir),
                                   start_new_session=True)
    return Contender(name, port, process, log)


def _wait_ready(contender: Contender, query: Query, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        if contender.process is not None and contender.process.poll() is not None:
            break
        try:
            status, body = contender.post(query, 1, timeout=5)
            if status == 200:
                return
            last = (status, body[:300])
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    log = contender.log.read_text(errors="replace")[-2000:] if contender.log else ""
    contender.stop()  # not yet in the caller's list of started contenders
    raise SystemExit(f"{contender.name} did not answer on port {contender.port}: {last!r}\n{log}")


def start_service(dsn_profile: dict[str, Any], workdir: Path, workers: int, nodelay_fix: bool) -> Contender:
    port = free_port()
    state = workdir / "service-state"
    serve = ["serve", "--no-auth", "--workers", str(workers), "--port", str(port), "--state-dir", str(state)]
    # python -m pgactions serve …, or the same command with uvicorn's TCP_NODELAY fix applied first.
    argv = ([sys.executable, __file__, "--launch-service", *serve] if nodelay_fix
            else [sys.executable, "-m", "pgactions", *serve])
    contender = _start("service", argv, port, workdir)
    connection = json.dumps(dsn_profile)
    for query in QUERIES:
        inputs = json.dumps({"query": query.sql, "parameters": [0]}).replace("[0]", "[%d]")
        contender.bodies[query.name] = f'{{"connection": {connection.replace("%", "%%")}, "inputs": {inputs}}}'
        contender.paths[query.name] = "/v1/actions/query_rows:run"
    _wait_ready(contender, QUERIES[0])
    return contender


def stored_variant(service: Contender, dsn_profile: dict[str, Any]) -> Contender:
    """The same server, naming a stored connection (``PUT /v1/connections/bench``)."""
    request = urllib.request.Request(f"http://127.0.0.1:{service.port}/v1/connections/bench",
                                     data=json.dumps(dsn_profile).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201), response.status
    stored = Contender("service (stored)", service.port, service.process, service.log)
    for query in QUERIES:
        inputs = json.dumps({"query": query.sql, "parameters": [0]}).replace("[0]", "[%d]")
        stored.bodies[query.name] = f'{{"connectionId": "bench", "inputs": {inputs}}}'
        stored.paths[query.name] = "/v1/actions/query_rows:run"
    return stored


def start_handwritten(dsn: str, workdir: Path, workers: int, nodelay_fix: bool,
                      started: list[Contender]) -> dict[str, Contender]:
    """One hand-written server per statement (it serves one fixed statement, as such code does)."""
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "psycopg-pool"], check=True)
    found = {}
    for query in QUERIES:
        port = free_port()
        env = dict(os.environ, BENCH_DSN=dsn, BENCH_SQL=query.psycopg_sql)
        contender = _start(f"handwritten-{query.rows}", [sys.executable, str(HERE / "handwritten_endpoint.py"),
                                                          "--port", str(port), "--workers", str(workers)]
                           + (["--tcp-nodelay-fix"] if nodelay_fix else []),
                           port, workdir, env)
        contender.name = "handwritten"
        started.append(contender)  # stopped at the end even if the next one fails to start
        contender.bodies[query.name] = '{"id": %d}'
        contender.paths[query.name] = "/query"
        _wait_ready(contender, query)
        found[query.name] = contender
    return found


def toolbox_binary(install: bool) -> str | None:
    candidates = [os.environ.get("TOOLBOX"), shutil.which("toolbox"),
                  str(TOOLBOX_CACHE / "node_modules" / TOOLBOX_PACKAGE / "bin" / "toolbox")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if not install:
        return None
    if not shutil.which("npm"):
        raise SystemExit("--toolbox: npm is not installed (apt-get install -y npm)")
    TOOLBOX_CACHE.mkdir(parents=True, exist_ok=True)
    print(f"installing {TOOLBOX_PACKAGE} with npm into {TOOLBOX_CACHE} …", flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(TOOLBOX_CACHE), TOOLBOX_PACKAGE],
                   check=True)
    binary = TOOLBOX_CACHE / "node_modules" / TOOLBOX_PACKAGE / "bin" / "toolbox"
    binary.chmod(0o755)
    return str(binary)


def start_toolbox(binary: str, server: dict[str, Any], workdir: Path) -> Contender:
    port = free_port()
    lines = ["sources:", "  bench-pg:", "    kind: postgres", f"    host: {server['host']}",
             f"    port: {server['port']}", f"    database: {server['database']}", f"    user: {server['user']}",
             f"    password: {json.dumps(server['password'])}", "tools:"]
    for index, query in enumerate(QUERIES):
        lines += [f"  bench_{index}:", "    kind: postgres-sql", "    source: bench-pg",
                  f"    description: bench read {query.name}", f"    statement: {json.dumps(query.sql)}",
                  "    parameters:", "      - name: id", "        type: integer", "        description: the id"]
    config = workdir / "tools.yaml"
    config.write_text("\n".join(lines) + "\n")
    argv = [binary, "--config", str(config), "--enable-api", "--port", str(port), "--address", "127.0.0.1",
            "--disable-reload", "--disable-version-check", "--log-level", "WARN"]
    contender = _start("toolbox", argv, port, workdir)
    for index, query in enumerate(QUERIES):
        contender.bodies[query.name] = '{"id": %d}'
        contender.paths[query.name] = f"/api/tool/bench_{index}/invoke"
    _wait_ready(contender, QUERIES[0])
    return contender


# -- checking answers ----------------------------------------------------------------------------
def rows_of(name: str, body: bytes) -> list[dict[str, Any]]:
    document = json.loads(body)
    if name == "toolbox":
        result = document["result"]
        return list(json.loads(result)) if isinstance(result, str) else list(result or [])
    return list(document["rows"])


def check_answers(contenders: list[tuple[Contender, Query]]) -> None:
    """Every contender returns the same rows (ids and names) for the same id."""
    for contender, query in contenders:
        status, body = contender.post(query, 42)
        if status != 200:
            raise SystemExit(f"{contender.name} {query.name}: HTTP {status}: {body[:300]!r}")
        rows = rows_of(contender.name, body)
        ids = [row["id"] for row in rows]
        if ids != list(range(42, 42 + query.rows)) or rows[0]["name"] != "user 42":
            raise SystemExit(f"{contender.name} {query.name}: unexpected rows {body[:300]!r}")


# -- wrk ------------------------------------------------------------------------------------------
def wrk(contender: Contender, query: Query, threads: int, connections: int, seconds: float,
        workdir: Path) -> dict[str, Any]:
    body = workdir / f"body-{abs(hash((contender.name, query.name)))}.txt"
    body.write_text(contender.bodies[query.name])
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "--latency",
            "-s", str(LUA), contender.url(query), "--", str(body), str(query.max_id)]
    pids = sorted(set(contender.workers() + ([contender.process.pid] if contender.process else [])))
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pids) - cpu_before
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    result: dict[str, Any] = json.loads(line[len("WRK_JSON "):])
    contender.requests += result["requests"]
    errors = {k: v for k, v in result["errors"].items() if v}
    if errors:
        raise SystemExit(f"{contender.name} {query.name} -c{connections}: errors {errors} "
                         f"(status = non-2xx/3xx answers)\n{out}")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["cpu_us"] = cpu / max(1, result["requests"]) * 1e6  # server CPU per request (all its processes)
    return result


# -- Runtime.run in this process -------------------------------------------------------------------
def bench_inprocess(profile: dict[str, Any], query: Query, seconds: float, threads: int = 1) -> dict[str, Any]:
    """Runtime.run for the same call, no HTTP: latencies at 1 thread, throughput at *threads*."""
    with Runtime() as runtime:
        for i in range(200):
            runtime.run("query_rows", profile, {"query": query.sql, "parameters": [i % query.max_id + 1]})
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def loop(seed: int) -> None:
            mine = []
            i = seed
            while time.monotonic() < stop:
                i = (i * 7919 + 1) % query.max_id
                started = time.perf_counter()
                runtime.run("query_rows", profile, {"query": query.sql, "parameters": [i + 1]})
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        started = time.perf_counter()
        workers = [threading.Thread(target=loop, args=(n + 1,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "rps": len(latencies) / elapsed,
            "latency_us": {"p50": statistics.median(latencies) * 1e6,
                           "p99": latencies[int(len(latencies) * 0.99)] * 1e6}}


# -- profile ---------------------------------------------------------------------------------------
# Where a sample lands: the first rule, in this order, that one of its frames matches.  Samples of
# idle threads (anyio workers waiting for work, the event loop in epoll) are left out.
IDLE = ("Queue.get (queue.py", "EpollSelector.select")
# ... and threads whose innermost Python frame waits in C: the executor's idle workers (SimpleQueue.get)
# and the access log's listener thread waiting for a record.
IDLE_LEAF = ("_worker (concurrent/futures/thread.py", "QueueListener.dequeue (")
CATEGORIES = [
    ("JSON parsing of the request (read_json, loads_exact)", ("loads_exact", "read_json")),
    ("body validation (object_body, options, context)", ("object_body", "_options (", "_context (")),
    ("connection vetting / stored profile (vet, get_connection)", ("Service.vet", "vet_profile", "get_connection",
                                                                   "stored_profile")),
    ("session settings round trip (_apply_settings: application_name per request)", ("_apply_settings",)),
    ("pool checkout + return (db/pool, db/connect)", ("db/pool.py", "db/connect.py", "watchdog.py")),
    ("query on the wire (psycopg execute/fetch, network wait)", ("psycopg/",)),
    ("runtime: templates, unit, row encoding (other pgactions/)", ("pgactions/runtime", "pgactions/db/",
                                                                    "pgactions/spec/", "pgactions/handlers/",
                                                                    "pgactions/sql")),
    ("response: encoding + socket write (json_response, transport.write)", ("json_response", "starlette/responses.py",
                                                                            "_SelectorSocketTransport.write")),
    ("access log + metrics (Boundary._account, log_request, prometheus)", ("_account", "log_request",
                                                                            "prometheus_client", "logging/")),
    ("request id (uuid4)", ("uuid4",)),
    ("thread hand-off (anyio to_thread, in_thread, queue, conditions)", ("anyio/", "in_thread", "Condition.",
                                                                         "queue.py", "_write_to_self",
                                                                         "_read_from_self")),
    ("HTTP parsing + routing + middleware (uvicorn h11, starlette)", ("uvicorn/", "h11/", "starlette/",
                                                                      "Boundary.__call__")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
]


def py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    if not shutil.which("py-spy"):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", "250", "-f", "raw",
                             "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_profile(path: Path) -> list[tuple[str, float]]:
    """Share of active samples per category (a sample = one thread's stack)."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        if any(idle in frame for idle in IDLE for frame in frames[-3:]) or frames[-1].startswith(IDLE_LEAF):
            continue
        total += int(n)
        label = next((name for name, keys in CATEGORIES if any(k in frame for frame in frames for k in keys)),
                     "other")
        counts[label] = counts.get(label, 0) + int(n)
    return sorted(((k, v / total) for k, v in counts.items()), key=lambda kv: -kv[1]) if total else []


# -- the run ------------------------------------------------------------------------------------------
def launch_service(argv: list[str]) -> int:
    """``pgactions serve …`` in this process after uvicorn's TCP_NODELAY fix (--tcp-nodelay-fix)."""
    from handwritten_endpoint import tcp_nodelay_fix  # bench/, beside this script

    from pgactions.cli import main as cli_main

    tcp_nodelay_fix()
    return int(cli_main(argv) or 0)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--launch-service":
        return launch_service(sys.argv[2:])
    from bulk import bench_server  # bench/bulk.py, beside this script

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=1, help="wrk runs per test and contender, best kept")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--toolbox", action="store_true", help="install Toolbox with npm when missing")
    parser.add_argument("--no-toolbox", action="store_true")
    parser.add_argument("--no-stored", action="store_true", help="skip the stored-connection variant")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="py-spy one service worker under -c16 load")
    parser.add_argument("--tcp-nodelay-fix", action=argparse.BooleanOptionalAction, default=True,
                        help="apply the fix for uvicorn's --workers N losing TCP_NODELAY (Kludex/uvicorn#3149) "
                             "to both Python contenders (default); --no-tcp-nodelay-fix: as shipped")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    binary = None if args.no_toolbox else toolbox_binary(args.toolbox)

    workdir = Path(tempfile.mkdtemp(prefix="pgactions-bench-service-"))
    started: list[Contender] = []
    try:
        with bench_server(max_connections=120) as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for statement in SETUP.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            info = psycopg.conninfo.conninfo_to_dict(dsn)
            profile = {"url": dsn, "sslMode": "disable"}
            plain_dsn = dsn + ("&" if "?" in dsn else "?") + "sslmode=disable"
            print(f"cores: {os.cpu_count()}; wrk, the servers and PostgreSQL share them", flush=True)

            fix = args.tcp_nodelay_fix
            print(f"uvicorn TCP_NODELAY fix (Kludex/uvicorn#3149) for both Python contenders: {'on' if fix else 'off'}")
            service = start_service(profile, workdir, args.workers, fix)
            started.append(service)
            handwritten = start_handwritten(plain_dsn, workdir, args.workers, fix, started)
            toolbox = None
            if binary:
                toolbox = start_toolbox(binary, {"host": info.get("host", "127.0.0.1"),
                                                 "port": int(str(info.get("port", 5432))),
                                                 "database": info.get("dbname", "postgres"),
                                                 "user": info.get("user", "postgres"),
                                                 "password": info.get("password", "")}, workdir)
                started.append(toolbox)
            stored = None if args.no_stored else stored_variant(service, profile)

            def lineup(query: Query) -> list[Contender]:
                found = [service] + ([stored] if stored else []) + [handwritten[query.name]]
                return found + ([toolbox] if toolbox else [])

            check_answers([(c, q) for q in QUERIES for c in lineup(q)])
            for query in QUERIES:  # warm: both workers' pools, prepared statements, caches
                for contender in lineup(query):
                    wrk(contender, query, 2, 16, 3, workdir)
            rss_start = {pid: rss_mb(pid) for pid in service.workers()}
            service_requests_start = service.requests + (stored.requests if stored else 0)

            results: dict[tuple[str, str, str], dict[str, Any]] = {}
            for query in QUERIES:
                for load, threads, connections in LOADS:
                    for _round in range(args.rounds):
                        for contender in lineup(query):
                            result = wrk(contender, query, threads, connections, args.duration, workdir)
                            key = (query.name, load, contender.name)
                            best = results.get(key)
                            if best is None or _better(load, result, best):
                                results[key] = result
                            print(f"  {query.name:10} {load:4} {contender.name:17} {result['rps']:9,.0f} req/s  "
                                  f"p50 {result['latency_us']['p50'] / 1000:7.2f} ms  "
                                  f"p99 {result['latency_us']['p99'] / 1000:7.2f} ms  "
                                  f"server CPU {result['cpu_us']:6.0f} µs/req", flush=True)
                inproc = bench_inprocess(profile, query, args.duration)
                results[(query.name, "c1", "Runtime.run")] = inproc
                print(f"  {query.name:10} c1   Runtime.run        {inproc['rps']:9,.0f} calls/s  "
                      f"p50 {inproc['latency_us']['p50'] / 1000:7.2f} ms  "
                      f"p99 {inproc['latency_us']['p99'] / 1000:7.2f} ms", flush=True)

            profile_shares: list[tuple[str, float]] = []
            if args.profile:
                out = workdir / "py-spy.raw"
                spy = py_spy(service.workers()[0], int(args.duration), out)
                time.sleep(1.0)
                wrk(service, QUERIES[0], 2, 16, args.duration, workdir)
                spy.wait()
                if out.exists():
                    profile_shares = summarise_profile(out)
                    kept = Path(tempfile.gettempdir()) / "pgactions-service-profile.raw"
                    shutil.copy(out, kept)
                    print(f"  py-spy collapsed stacks: {kept}")

            memory = measure_memory(service, stored, rss_start, service_requests_start, args, workdir)
            report(results, memory, profile_shares, bool(toolbox), bool(stored))
            for contender in [handwritten[q.name] for q in QUERIES]:
                print(f"  handwritten ({contender.log.name if contender.log else ''}) worker RSS: "
                      + ", ".join(f"{rss_mb(p):.1f} MB" for p in contender.workers()))
    finally:
        for contender in reversed(started):
            contender.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _better(load: str, result: dict[str, Any], best: dict[str, Any]) -> bool:
    if load == "c1":
        return bool(result["latency_us"]["p50"] < best["latency_us"]["p50"])
    return bool(result["rps"] > best["rps"])


def measure_memory(service: Contender, stored: Contender | None, rss_start: dict[int, float], start_count: int,
                   args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Top the service up to --memory-requests (one-row reads at -c16) and read its workers' RSS."""
    def sent() -> int:
        return service.requests + (stored.requests if stored else 0) - start_count

    checkpoints = [(sent(), {pid: rss_mb(pid) for pid in rss_start})]
    while sent() < args.memory_requests:
        wrk(service, QUERIES[0], 2, 16, min(30.0, max(5.0, args.duration)), workdir)
        checkpoints.append((sent(), {pid: rss_mb(pid) for pid in rss_start}))
    return {"start": rss_start, "checkpoints": checkpoints}


def report(results: dict[tuple[str, str, str], dict[str, Any]], memory: dict[str, Any],
           shares: list[tuple[str, float]], toolbox: bool, stored: bool) -> None:
    names = ["service"] + (["service (stored)"] if stored else []) + ["handwritten"] + (["toolbox"] if toolbox else [])
    for query in QUERIES:
        hand_c1 = results[(query.name, "c1", "handwritten")]
        hand_c16 = results[(query.name, "c16", "handwritten")]
        print(f"\n{query.name}: p50/p99 at -c1 -t1, throughput at -c16 -t2 (best of rounds), 0 errors")
        print(f"  {'contender':18} {'p50 c1':>9} {'p99 c1':>9} {'p50/hand':>9} {'req/s c16':>10} {'vs hand':>8}"
              f" {'p99 c16':>9} {'CPU/req':>8}" + (f" {'vs toolbox':>10}" if toolbox else ""))
        for name in names + ["Runtime.run"]:
            c1 = results[(query.name, "c1", name)]
            c16 = results.get((query.name, "c16", name))
            line = (f"  {name:18} {c1['latency_us']['p50'] / 1000:7.2f}ms {c1['latency_us']['p99'] / 1000:7.2f}ms "
                    f"{c1['latency_us']['p50'] / hand_c1['latency_us']['p50']:8.2f}x ")
            if c16:
                line += (f"{c16['rps']:10,.0f} {c16['rps'] / hand_c16['rps']:7.2f}x "
                         f"{c16['latency_us']['p99'] / 1000:7.2f}ms {c16['cpu_us']:6.0f}µs")
                if toolbox:
                    line += f" {c16['rps'] / results[(query.name, 'c16', 'toolbox')]['rps']:9.2f}x"
            else:
                line += f"{c1['rps']:10,.0f} (1 thread, in this process, no HTTP)"
            print(line)
        service_c1, service_c16 = results[(query.name, "c1", "service")], results[(query.name, "c16", "service")]
        floor = (service_c16["rps"] >= 0.9 * hand_c16["rps"]
                 and service_c1["latency_us"]["p50"] <= 1.2 * hand_c1["latency_us"]["p50"])
        goal = service_c16["rps"] > hand_c16["rps"] and (
            not toolbox or service_c16["rps"] >= 0.5 * results[(query.name, "c16", "toolbox")]["rps"])
        print(f"  floor (c16 ≥ 0.9x hand, p50 c1 ≤ 1.2x hand): {'met' if floor else 'NOT met'}; "
              f"goal (beat hand{', ≥ 0.5x Toolbox' if toolbox else ''}): {'met' if goal else 'NOT met'}")
    print("\nservice worker RSS (VmRSS), by requests served since warm-up:")
    print("  after warm-up:     " + ", ".join(f"{mb:6.1f} MB" for mb in memory["start"].values()))
    for count, readings in memory["checkpoints"]:
        print(f"  {count:>8,} requests: " + ", ".join(f"{mb:6.1f} MB" for mb in readings.values()))
    last = memory["checkpoints"][-1][1]
    growth = max(last[pid] - memory["start"][pid] for pid in last)
    print(f"  target < 150 MB per worker after 100,000 requests: {'met' if max(last.values()) < 150 else 'NOT met'}"
          f" (largest growth since warm-up {growth:+.1f} MB)")
    if shares:
        print("\nservice worker profile (py-spy, active samples, one-row read at -c16):")
        for label, share in shares:
            print(f"  {share * 100:5.1f} %  {label}")


if __name__ == "__main__":
    sys.exit(main())
