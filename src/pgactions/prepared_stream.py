"""Stream a result in chunks *and* use psycopg's prepared-statement cache.

psycopg's public ``Cursor.stream()`` never prepares statements.  For the small lookups a flow
repeats thousands of times, the server's parse and plan is then the largest cost (on loopback
~50 µs of a ~140 µs call).  This module mirrors ``Cursor._maybe_prepare_gen`` with libpq's
chunked-rows mode: statements are prepared after psycopg's usual threshold (5 runs), results
still arrive in bounded chunks.

It uses psycopg internals (the dependency is pinned below 3.4); :data:`SUPPORTED` is False when
they are missing and callers then use the public ``stream()``.
"""

from __future__ import annotations

from typing import Any, Iterator

import psycopg
from psycopg import errors as e
from psycopg import pq

__all__ = ["SUPPORTED", "stream_results"]

try:
    from psycopg._preparing import Prepare
    from psycopg.generators import execute, fetch, send

    SUPPORTED = all(hasattr(psycopg.Cursor, name) for name in (
        "_start_query", "_convert_query", "_execute_send", "_send_prepare", "_send_query_prepared",
        "_make_row_maker", "_raise_for_result")) and pq.version() >= 170000
except ImportError:  # pragma: no cover - a psycopg whose internals moved
    SUPPORTED = False

_ROWS = (pq.ExecStatus.TUPLES_CHUNK, pq.ExecStatus.SINGLE_TUPLE)
_DONE = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)


def stream_results(cur: psycopg.Cursor[Any], query: Any, params: Any, size: int) -> Iterator[Any]:
    """Yield the result chunks (PGresult) of *query*; ``cur._tx`` is ready to load each one.

    Leaving early (an exception, a closed generator) cancels the query and drains what the
    server already sent, so the connection is usable again.
    """
    conn = cur._conn
    with conn.lock:
        key, prep, name = conn.wait(_send_gen(cur, query, params, size))
        first = True
        final = None
        try:
            while True:
                chunk, final = conn.wait(_fetch_gen(cur, first))
                if chunk is None:
                    break
                yield chunk
                first = False
        finally:
            if cur._pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                _cancel_and_drain(conn, cur)
        if key is not None and final is not None:
            conn._prepared.validate(key, prep, name, [final])
        conn.wait(conn._prepared.maintain_gen(conn))


def _send_gen(cur: psycopg.Cursor[Any], query: Any, params: Any, size: int) -> Any:
    yield from cur._start_query(query)
    pgq = cur._convert_query(query, params)
    prepared = cur._conn._prepared
    prep, name = prepared.get(pgq, None)
    if prep is Prepare.NO:
        cur._execute_send(pgq, force_extended=True)
    else:
        if prep is Prepare.SHOULD:
            cur._send_prepare(name, pgq)
            (result,) = yield from execute(cur._pgconn)
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise e.error_from_result(result, encoding=cur._encoding)
        cur._send_query_prepared(name, pgq)
    key = prepared.maybe_add_to_cache(pgq, prep, name)
    cur._pgconn.set_chunked_rows_mode(size)
    cur._last_query = query
    yield from send(cur._pgconn)
    return key, prep, name


def _fetch_gen(cur: psycopg.Cursor[Any], first: bool) -> Any:
    """One chunk → (chunk, None); the end → (None, final result)."""
    res = yield from fetch(cur._pgconn)
    if res is None:
        return None, None
    status = res.status
    if status in _ROWS:
        cur.pgresult = res
        cur._tx.set_pgresult(res, set_loaders=first)
        if first:
            cur._make_row = cur._make_row_maker()
        return res, None
    if status in _DONE:
        final = res
        if first:  # no chunk came: an empty result still tells the columns
            cur.pgresult = res
            cur._tx.set_pgresult(res, set_loaders=True)
        while res:
            res = yield from fetch(cur._pgconn)
        return None, final
    return cur._raise_for_result(res)


def _cancel_and_drain(conn: Any, cur: psycopg.Cursor[Any]) -> None:
    """As psycopg's own stream() does: cancel, consume what arrived, get out of ACTIVE."""
    conn._try_cancel()
    try:
        while conn.wait(_fetch_gen(cur, False))[0] is not None:
            pass
    except Exception:  # the cancel's error result ends the drain
        pass
    try:
        conn.wait(_fetch_gen(cur, False))
    except Exception:
        pass
