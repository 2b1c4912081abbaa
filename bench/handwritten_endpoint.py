"""What a team would write by hand instead of ``pgactions serve``: the bench's baseline.

One Starlette endpoint over an async psycopg_pool running one fixed statement, served by uvicorn
with the same settings as ``pgactions serve`` (workers, log level, no access log).  No input
validation beyond a KeyError, no templates, no auth, no metrics, no access log:

    POST /query   {"id": 42}   →  {"rows": [{...}], "rowCount": 1}

    BENCH_DSN=postgresql://… BENCH_SQL="SELECT … WHERE id = %(id)s" \
        python bench/handwritten_endpoint.py --port 8081 --workers 2

psycopg_pool is not a dependency of pgactions: ``pip install psycopg-pool``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "5"))  # pgactions' default maxConnections per worker


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


def create_app() -> Starlette:
    dsn, sql = os.environ["BENCH_DSN"], os.environ["BENCH_SQL"]
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=POOL_SIZE, open=False,
                               kwargs={"autocommit": True, "row_factory": dict_row})

    async def query(request: Request) -> Response:
        body = orjson.loads(await request.body())
        async with pool.connection() as conn:
            cur = await conn.execute(sql, {"id": body["id"]})
            rows = await cur.fetchall()
        return Response(orjson.dumps({"rows": rows, "rowCount": len(rows)}, default=_default),
                        media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    return Starlette(routes=[Route("/query", query, methods=["POST"])], lifespan=lifespan)


def tcp_nodelay_fix() -> None:
    """Work around uvicorn's --workers N losing TCP_NODELAY (Kludex/uvicorn#3149): the same fix
    ``pgactions serve`` applies to itself (serve_cli.keep_tcp_nodelay).  The bench applies it to
    the hand-written endpoint too (``--tcp-nodelay-fix``), so both contenders run alike."""
    from pgactions.service.serve_cli import keep_tcp_nodelay

    keep_tcp_nodelay()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tcp-nodelay-fix", action="store_true", help="see tcp_nodelay_fix()")
    args = parser.parse_args()
    if args.tcp_nodelay_fix:
        tcp_nodelay_fix()
    # The same uvicorn settings as pgactions.service.serve_cli.
    uvicorn.run("handwritten_endpoint:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers if args.workers > 1 else None, log_level="warning", access_log=False,
                server_header=False, lifespan="on", app_dir=os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    main()
