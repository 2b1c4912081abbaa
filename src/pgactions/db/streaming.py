"""Stream a result in chunks *and* use psycopg's prepared-statement cache.

psycopg's public ``Cursor.stream()`` never prepares statements.  For the small lookups a flow
repeats thousands of times, the server's parse and plan is then the largest cost (on loopback
~50 µs of a ~140 µs call).  This module mirrors ``Cursor._maybe_prepare_gen`` with libpq's
chunked-rows mode: statements are prepared after psycopg's usual threshold (5 runs), results
still arrive in bounded chunks.

It uses psycopg internals (checked on 3.3; the dependency is pinned below 3.4); :data:`SUPPORTED` is False when
they are missing and callers then use the public ``stream()``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

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


def stream_results(cur: psycopg.Cursor[Any], query: Any, params: Any, size: int) -> Generator[Any, None, None]:
    """Yield the result chunks (PGresult) of *query*; ``cur._tx`` is ready to load each one.

    Leaving early (an exception, a closed generator) cancels the query and drains what the
    server already sent, so the connection is usable again.
    """
    conn = cur._conn
    with conn.lock:
        reader, (key, prep, name), (chunk, final) = _start(conn, cur, query, params, size)
        try:
            while chunk is not None:
                yield chunk
                if final is not None:
                    break
                chunk, final = conn.wait(reader.fetch())
        finally:
            if cur._pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                _cancel_and_drain(conn, reader)
        if key is not None and final is not None:
            conn._prepared.validate(key, prep, name, [final])
        if conn._prepared._to_flush:
            conn.wait(conn._prepared.maintain_gen(conn))


def _start(conn: Any, cur: psycopg.Cursor[Any], query: Any, params: Any, size: int) -> Any:
    """Send the query and read its first chunk, in one wait.

    A statement prepared earlier fails with 0A000 ("cached plan must not change result type")
    once another session alters a table it reads.  Then every prepared statement of this
    connection is dropped and the query runs again, unprepared: the user sees the new columns.
    """
    reader = _Reader(cur)
    sent, first = conn.wait(_send_and_fetch(cur, reader, query, params, size, None))
    if isinstance(first, e.FeatureNotSupported):
        if sent[1] is not Prepare.YES:
            raise first
        conn.wait(reader._drain())
        conn._prepared.clear()
        conn.wait(conn._prepared.maintain_gen(conn))
        reader = _Reader(cur)
        sent, first = conn.wait(_send_and_fetch(cur, reader, query, params, size, False))
        if isinstance(first, Exception):
            raise first
    return reader, sent, first


def _send_and_fetch(cur: psycopg.Cursor[Any], reader: _Reader, query: Any, params: Any, size: int,
                    prepare: bool | None) -> Any:
    sent = yield from _send_gen(cur, query, params, size, prepare)
    try:
        first = yield from reader.fetch()
    except e.FeatureNotSupported as exc:
        return sent, exc
    return sent, first


def _send_gen(cur: psycopg.Cursor[Any], query: Any, params: Any, size: int,
              prepare: bool | None = None) -> Any:
    yield from cur._start_query(query)
    pgq = cur._convert_query(query, params)
    prepared = cur._conn._prepared
    prep, name = prepared.get(pgq, prepare)
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


class _Reader:
    """Reads one chunked result; remembers a result taken early while looking for the end."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.first = True
        self.pending: Any = None

    def fetch(self) -> Any:
        """Next chunk → (chunk, None), or (chunk, final) when the end is already here, or (None, final).

        Taking the end together with the last chunk saves a wait per query: a small result is one
        chunk and the closing TUPLES_OK, usually in the same packet.
        """
        cur = self.cur
        if self.pending is not None:
            res, self.pending = self.pending, None
        else:
            res = yield from fetch(cur._pgconn)
        if res is None:
            return None, None
        status = res.status
        if status in _ROWS:
            cur.pgresult = res
            cur._tx.set_pgresult(res, set_loaders=self.first)
            if self.first:
                cur._make_row = cur._make_row_maker()
            self.first = False
            return res, (yield from self._end_if_ready())
        if status in _DONE:
            if self.first:  # no chunk came: an empty result still tells the columns
                cur.pgresult = res
                cur._tx.set_pgresult(res, set_loaders=True)
            yield from self._drain()
            return None, res
        # An error: read up to the end of the query first, so the connection is idle (reusable)
        # when the error reaches the caller.
        yield from self._drain()
        return cur._raise_for_result(res)

    def _end_if_ready(self) -> Any:
        pgconn = self.cur._pgconn
        pgconn.consume_input()
        if pgconn.is_busy():
            return None
        nxt = pgconn.get_result()
        if nxt is None or nxt.status not in _DONE:
            self.pending = nxt  # another chunk, or an error: the next fetch handles it
            return None
        yield from self._drain()
        return nxt

    def _drain(self) -> Any:
        res = yield from fetch(self.cur._pgconn)
        while res is not None:
            res = yield from fetch(self.cur._pgconn)


def _cancel_and_drain(conn: Any, reader: _Reader) -> None:
    """As psycopg's own stream() does: cancel, consume what arrived, get out of ACTIVE."""
    conn._try_cancel()
    try:
        while conn.wait(reader.fetch())[0] is not None:
            pass
    except Exception:  # the cancel's error result ends the drain
        pass
    try:
        conn.wait(reader.fetch())
    except Exception:
        pass
