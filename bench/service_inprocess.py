"""Bench: the service's request path in one process, without HTTP — where its CPU goes.

    python bench/service_inprocess.py                 # throwaway PostgreSQL, 10,000 rows
    python bench/service_inprocess.py --requests 20000 --concurrency 1 8
    PGACTIONS_BENCH_DSN=postgresql://… python bench/service_inprocess.py

Not a test.  Each contender is an ASGI app called directly on a uvloop event loop (no socket, no
uvicorn: their cost is the same for every contender), with the one-row read of bench/service.py,
and measured in CPU time per request of this process:

* ``service``: ``pgactions serve``'s app (``create_app``, auth off), ``POST /v1/actions/query_rows:run``;
* ``runtime only``: the thinnest wrapper around what the service keeps — the vetted profile,
  ``Service.run_work`` (the event loop's greenlet path, see pgactions.db.cooperative) and
  ``Runtime.run`` — with no request parsing or checks, no auth, no metrics, no access log: the
  floor of this design;
* ``handwritten``: bench/handwritten_endpoint.py (Starlette + async psycopg_pool, no checks).

The gap between ``service`` and ``runtime only`` is the service's own layer; the gap between
``runtime only`` and ``handwritten`` is the runtime (validation, the watchdog, the session checks,
capped output) and the greenlet's hand-offs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

SQL = "SELECT id, name, email, created_at FROM bench_users WHERE id = $1"
ROWS = 10_000
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def service_app(dsn: str) -> tuple[App, Callable[[int], tuple[str, bytes]]]:
    from pgactions.service.app import create_app
    from pgactions.service.config import ServiceConfig

    app = create_app(ServiceConfig(state_dir=tempfile.mkdtemp(prefix="pgactions-bench-"), auth_enabled=False))
    connection = {"url": dsn, "sslMode": "disable"}
    return app, lambda n: ("/v1/actions/query_rows:run", orjson.dumps(
        {"connection": connection, "inputs": {"query": SQL, "parameters": [n]}}))


def runtime_only_app(dsn: str) -> tuple[App, Callable[[int], tuple[str, bytes]]]:
    from pgactions.service.app import create_app
    from pgactions.service.config import ServiceConfig

    service = create_app(ServiceConfig(state_dir=tempfile.mkdtemp(prefix="pgactions-bench-"),
                                       auth_enabled=False)).state.service
    principal = service.authenticator.authenticate(None)
    connection = {"url": dsn, "sslMode": "disable"}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            service.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = orjson.loads((await receive())["body"])
        resolved = service.cached_connection(principal, body)

        def work(cancel: Any, _counted: bool = False) -> bytes:
            profile = resolved[0] if resolved else service.resolve_connection(principal, body)[0]
            return service.runtime.run("query_rows", profile, body["inputs"], cancel=cancel).json  # type: ignore[no-any-return]

        out = await service.run_work(None, resolved[0] if resolved else None, work)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]})
        await send({"type": "http.response.body", "body": out})

    return app, lambda n: ("/", orjson.dumps({"connection": connection, "inputs": {"query": SQL, "parameters": [n]}}))


def handwritten_app(dsn: str) -> tuple[App, Callable[[int], tuple[str, bytes]]]:
    os.environ["BENCH_DSN"], os.environ["BENCH_SQL"] = dsn, SQL.replace("$1", "%(id)s")
    import handwritten_endpoint

    return handwritten_endpoint.create_app(), lambda n: ("/query", orjson.dumps({"id": n}))


async def _lifespan(app: App) -> tuple[asyncio.Queue[Any], asyncio.Future[Any]]:
    messages: asyncio.Queue[Any] = asyncio.Queue()
    started = asyncio.Event()
    await messages.put({"type": "lifespan.startup"})

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, send))
    await started.wait()
    return messages, task


async def _measure(app: App, request: Callable[[int], tuple[str, bytes]], count: int, concurrency: int) -> float:
    messages, lifespan = await _lifespan(app)
    statuses: list[int] = []

    async def one(n: int) -> None:
        path, body = request(n % ROWS + 1)
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # no disconnect
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                             (b"content-length", b"%d" % len(body))],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "state": {}}
        await app(scope, receive, send)

    for n in range(300):  # warm: pools open, caches filled
        await one(n)
    statuses.clear()
    started = time.process_time()

    async def worker(first: int) -> None:
        for n in range(first, count, concurrency):
            await one(n)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    spent = time.process_time() - started
    if set(statuses) != {200} or len(statuses) != count:
        raise SystemExit(f"unexpected answers: {sorted(set(statuses))}")
    await messages.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 30)
    return spent / count * 1e6


def main() -> int:
    import uvloop
    from bulk import bench_server  # bench/bulk.py, beside this script

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with bench_server() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_users")
            conn.execute("CREATE TABLE bench_users (id int PRIMARY KEY, name text, email text, created_at timestamptz)")
            conn.execute("INSERT INTO bench_users SELECT g, 'user ' || g, 'user' || g || '@example.com', "
                         f"now() - g * interval '1 minute' FROM generate_series(1, {ROWS}) g")
        makers = {"service": service_app, "runtime only": runtime_only_app, "handwritten": handwritten_app}
        results: dict[tuple[str, int], float] = {}
        for _ in range(args.rounds):  # interleaved rounds, best kept
            for concurrency in args.concurrency:
                for name, make in makers.items():
                    app, request = make(dsn)
                    cpu = uvloop.run(_measure(app, request, args.requests, concurrency))
                    results[(name, concurrency)] = min(cpu, results.get((name, concurrency), cpu))
        print("one-row read, CPU µs per request in this process (no HTTP), best of rounds:")
        for concurrency in args.concurrency:
            hand = results[("handwritten", concurrency)]
            for name in makers:
                cpu = results[(name, concurrency)]
                print(f"  c{concurrency:<3} {name:14s} {cpu:6.0f} µs  ({cpu / hand:.2f}x hand-written)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
