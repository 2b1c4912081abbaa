"""Stream a result in chunks *and* use psycopg's prepared-statement cache.

psycopg's public ``Cursor.stream()`` never prepares statements.  For the small lookups a flow
repeats thousands of times, the server's parse and plan is then the largest cost (on loopback
~50 µs of a ~140 µs call).  This module mirrors ``Cursor._maybe_prepare_gen`` with libpq's
chunked-rows mode: statements are prepared after psycopg's usual threshold (5 runs), results
still arrive in bounded chunks.

It uses psycopg internals (checked on 3.3; the dependency is pinned below 3.4); :data:`SUPPORTED` is False when
they are missing and callers then use the public ``stream()``.

Chunks are sized by bytes: libpq fixes a query's chunk size (in rows) when it is sent, so
:data:`WIDTHS` remembers the widest row seen per SQL text and sizes the next run's chunks from it;
a text never seen gets small chunks (:data:`FIRST_CHUNK_ROWS`).  Scripts (several statements in
one text, the simple protocol) are read result by result, in chunks too (:func:`script_results`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

import psycopg
from psycopg import errors as e
from psycopg import pq
from psycopg.waiting import Wait

from pgactions.db import cooperative
from pgactions.spec.errors import ActionError

__all__ = ["CHUNK_BYTES", "FIRST_CHUNK_ROWS", "MAX_CHUNK_ROWS", "SUPPORTED", "WIDTHS", "RowWidths",
           "script_results", "stream_rows"]

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
_ENDS = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY)
_COPY = (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH)


def _copy_refused() -> ActionError:
    """COPY FROM STDIN / TO STDOUT waits for a client stream, which an action has not."""
    return ActionError("INVALID_INPUT", "COPY … FROM STDIN and COPY … TO STDOUT need a client stream, which "
                                        "actions do not have: use Insert Rows, or COPY with a file on the server",
                       extra={"field": "query"})


def _end_copy(conn: Any, status: int) -> Any:
    """Get out of a COPY a statement started (ended with an error, or its data dropped) and read
    up to the end of the query, so the connection can roll back and be used again.  COPY BOTH
    (replication) is left as it is: the session discards a connection that is not idle."""
    pgconn = conn.pgconn
    if status == pq.ExecStatus.COPY_IN:
        while pgconn.put_copy_end(b"an action has no data to copy") == 0:
            yield Wait.W
        while pgconn.flush():
            yield Wait.W
    elif status == pq.ExecStatus.COPY_OUT:
        cooperative.call_blocking(conn._try_cancel)
        while (nbytes := pgconn.get_copy_data(1)[0]) >= 0:
            if nbytes == 0:
                yield Wait.R
                pgconn.consume_input()
    else:
        return False
    yield from _drain_all(pgconn)
    return True

# libpq gathers a fixed number of rows per chunk, chosen when the query is sent.  Chunks are sized
# by bytes from the widest row seen for the same SQL text before; a text never seen gets a small
# chunk, so that rows of any width are held only a few at a time.
FIRST_CHUNK_ROWS = 8
MAX_CHUNK_ROWS = 500
CHUNK_BYTES = 2 * 1024 * 1024


class RowWidths:
    """The widest row (bytes of JSON) seen for each of the last *size* SQL texts, and the chunk
    size that follows from it (about :data:`CHUNK_BYTES` a chunk)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._widths: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sql: str) -> int:
        """The widest row seen for *sql*; 0 when it was never run (or was forgotten)."""
        return self._widths.get(hash(sql), 0)  # one C call: atomic, no lock needed

    def note(self, sql: str, width: int) -> None:
        """*sql* ran, its rows up to *width* bytes: remember the width if it is the widest seen
        (a width once seen is kept while the text stays in use: chunks shrink, never grow back)
        and mark the text as recently used."""
        key = hash(sql)
        widths = self._widths
        if widths.get(key, 0) >= width:
            try:
                widths.move_to_end(key)
            except KeyError:  # forgotten meanwhile by another thread, or never known (width 0)
                pass
            return
        with self._lock:
            widths[key] = width
            widths.move_to_end(key)
            while len(widths) > self.size:
                widths.popitem(last=False)

    def chunk_rows(self, width: int) -> int:
        """Rows per libpq chunk for rows up to *width* bytes (0: never seen)."""
        if width <= 0:
            return FIRST_CHUNK_ROWS
        return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // width))


WIDTHS = RowWidths()


def stream_rows(cur: psycopg.Cursor[Any], query: Any, params: Any, size: int,
                batch_rows: Callable[[], int]) -> Generator[list[Any], None, None]:
    """Yield the rows of *query* (made by the cursor's row maker) in lists of ``batch_rows()``
    rows, asked again after each list; libpq reads them in chunks of *size* rows.

    Chunks libpq has received already are taken in a tight loop, without the waiting machinery,
    so small chunks cost little.  ``cur.pgresult`` is the first chunk (the columns) once the first
    list comes, and the end of the result (TUPLES_OK, COMMAND_OK) after the last.  Leaving early
    (an exception, a closed generator) cancels the query and drains what the server already
    sent, so the connection is usable again.
    """
    conn = cur._conn
    with conn.lock:
        reader, (key, prep, name), (chunk, final) = _start(conn, cur, query, params, size)
        try:
            if chunk is not None:
                tx, make_row = cur._tx, cur._make_row
                rows: list[Any] = []
                want = batch_rows()
                if final is not None and chunk.ntuples <= want:  # a small result: one chunk, one list
                    rows, chunk = tx.load_rows(0, chunk.ntuples, make_row), None
                while chunk is not None:
                    total, start = chunk.ntuples, 0
                    while start < total:
                        stop = min(total, start + want - len(rows))
                        rows += tx.load_rows(start, stop, make_row)
                        start = stop
                        if len(rows) >= want:
                            yield rows
                            rows, want = [], batch_rows()
                    if final is not None:
                        break
                    chunk = reader.fetch_ready()
                    if chunk is None:
                        chunk, final = conn.wait(reader.fetch())
                        if chunk is None:
                            break
                if rows:
                    yield rows
            if final is not None:
                cur.pgresult = final
        finally:
            if cur._pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                chunk, rows = None, []  # let go of the last chunk before draining (see _cancel_and_drain)
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
        self.in_copy = False  # the server waits in a COPY: no draining (it would never end)

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
        if status in _COPY:
            self.in_copy = not (yield from _end_copy(cur._conn, status))
            raise _copy_refused()
        # An error: read up to the end of the query first, so the connection is idle (reusable)
        # when the error reaches the caller.
        yield from self._drain()
        return cur._raise_for_result(res)

    def fetch_ready(self) -> Any:
        """The next chunk when libpq holds it already (None otherwise), without the waiting
        machinery: the common case while a result streams in, so small chunks stay cheap.  Only
        after the first chunk; anything but a chunk is left for :meth:`fetch`."""
        res = self.pending
        if res is None:
            pgconn = self.cur._pgconn
            if pgconn.is_busy():
                return None
            res = self.pending = pgconn.get_result()
            if res is None:
                return None
        if res.status not in _ROWS:
            return None
        self.pending = None
        cur = self.cur
        cur.pgresult = res
        cur._tx.set_pgresult(res, set_loaders=False)
        return res

    def _end_if_ready(self) -> Any:
        # Only what libpq has buffered already: reading the socket here (consume_input) would pull
        # in whatever the server sent meanwhile, faster than the chunks are taken out, so libpq's
        # input buffer would grow towards the whole result (and compacting it get quadratic).
        pgconn = self.cur._pgconn
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
    """As psycopg's own stream() does: cancel, consume what arrived, get out of ACTIVE.

    The chunk last read is let go first, and what arrives is dropped as it comes: draining holds
    one chunk at a time (a chunk of wide rows can be tens of MB)."""
    if reader.in_copy:
        return
    cur = reader.cur
    reader.pending = None
    cur.pgresult = None
    cur._tx.set_pgresult(None, set_loaders=False)
    cooperative.call_blocking(conn._try_cancel)
    try:
        conn.wait(_drain_all(cur._pgconn))
    except Exception:  # the connection failed meanwhile: the session discards it
        pass


def script_results(cur: psycopg.Cursor[Any], script: str, size: int) -> Generator[Any, None, None]:
    """Send *script* (several statements, no parameters) with the simple protocol, in chunked-rows
    mode, and yield its results as they come: row chunks, then each statement's end (TUPLES_OK,
    COMMAND_OK, EMPTY_QUERY).  A failing statement raises its error once the rest of the script's
    answer is read (the connection is then idle).  Leaving early cancels the script.
    """
    conn = cur._conn
    pgconn = cur._pgconn
    with conn.lock:
        conn.wait(_send_script(cur, script, size))
        first, in_copy = True, False
        try:
            while True:
                res = conn.wait(fetch(pgconn))
                if res is None:  # the end of the whole script (libpq gives none between statements)
                    break
                status = res.status
                if status in _ROWS:
                    cur.pgresult = res
                    cur._tx.set_pgresult(res, set_loaders=first)
                    if first:
                        cur._make_row = cur._make_row_maker()
                    first = False
                elif status in _ENDS:
                    if first:  # no chunk came: the result still tells the columns (or the command)
                        cur.pgresult = res
                        cur._tx.set_pgresult(res, set_loaders=True)
                    first = True  # the next statement's rows have columns of their own
                elif status in _COPY:
                    in_copy = not conn.wait(_end_copy(conn, status))
                    raise _copy_refused()
                else:
                    conn.wait(_drain_all(pgconn))
                    cur._raise_for_result(res)
                yield res
        finally:
            if pgconn.transaction_status == pq.TransactionStatus.ACTIVE and not in_copy:
                cur.pgresult = None  # the chunk last read is let go before draining
                cur._tx.set_pgresult(None, set_loaders=False)
                cooperative.call_blocking(conn._try_cancel)
                try:
                    conn.wait(_drain_all(pgconn))
                except Exception:  # the connection failed meanwhile: the session discards it
                    pass


def _send_script(cur: psycopg.Cursor[Any], script: str, size: int) -> Any:
    yield from cur._start_query(script)
    cur._execute_send(cur._convert_query(script, None))  # no parameters: the simple protocol
    cur._pgconn.set_chunked_rows_mode(size)
    cur._last_query = script
    yield from send(cur._pgconn)


def _drain_all(pgconn: Any) -> Any:
    """Read (and drop) everything up to the end of the query."""
    while (yield from fetch(pgconn)) is not None:
        pass


def row_loader(cur: psycopg.Cursor[Any]) -> Any:
    """``load(start, stop)``: rows of the chunk the cursor's transformer was last set to, loaded
    with the connection's loaders (psycopg internals stay in this module)."""
    return lambda start, stop: cur._tx.load_rows(start, stop, cur._make_row)
