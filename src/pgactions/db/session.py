"""One action on one pooled connection: session settings, streaming with a size cap, clean-up.

Round trips are counted: a warm ``query_rows`` is one round trip (the statement itself).  Each
action is a single statement run in autocommit mode, which PostgreSQL makes atomic on its own;
read-only actions rely on the session's ``default_transaction_read_only`` being on, write
actions switch it off first (one extra round trip only when the previous action was of the other
kind).
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg import pq

from pgactions.connection.profiles import ConnectionProfile
from pgactions.db import streaming as prepared_stream
from pgactions.db.connect import SESSION_SETTINGS, SESSION_STATE, PoolCache, SessionState, search_path
from pgactions.db.convert import to_json_bytes
from pgactions.db.errormap import map_exception
from pgactions.db.watchdog import Watchdog
from pgactions.render.sqltext import statement_info
from pgactions.spec.errors import ActionError

__all__ = ["Limits", "RowsJSON", "Session"]

STREAM_CHUNK_ROWS = 500


@dataclass(frozen=True)
class Limits:
    """Host-configurable limits.  An input's ``timeout`` may not exceed ``max_timeout``."""

    default_timeout: float = 60.0
    max_timeout: float = 60.0
    max_result_bytes: int = 10 * 1024 * 1024
    numeric_as_number: bool = False

    def timeout_for(self, requested: float | None, profile_default: float | None = None) -> float:
        """The action's own timeout input, else the connection's statementTimeout, else the default."""
        if requested is None and profile_default is not None:
            if profile_default > self.max_timeout:
                raise ActionError("INVALID_INPUT", f"the connection's statementTimeout {profile_default:g}s is "
                                                   f"above the maximum of {self.max_timeout:g}s",
                                  extra={"field": "connection.statementTimeout"})
            return float(profile_default)
        if requested is None:
            return min(self.default_timeout, self.max_timeout)
        if requested > self.max_timeout:
            raise ActionError("INVALID_INPUT", f"timeout {requested:g}s is above the maximum of "
                                               f"{self.max_timeout:g}s", extra={"field": "timeout"})
        return float(requested)


@dataclass
class RowsJSON:
    """Rows already serialized: ``body`` is the inside of a JSON array."""

    body: bytes
    count: int
    columns: list[str]
    returned_rows: bool = True  # False for a statement without a result set (UPDATE w/o RETURNING)
    command_rows: int = 0  # rows a statement without a result set changed

    @property
    def row_count(self) -> int:
        return self.count if self.returned_rows else self.command_rows


class Session:
    """Context manager: checks a connection out, arms the watchdog, maps every failure once."""

    def __init__(self, pools: PoolCache, watchdog: Watchdog, profile: ConnectionProfile,
                 timeout: float, limits: Limits, app_name: str | None = None, cancel: Any = None) -> None:
        self.pools, self.watchdog, self.profile = pools, watchdog, profile
        self.timeout, self.limits = timeout, limits
        self.app_name = app_name or profile.applicationName
        self._app_name_bytes = self.app_name.encode()
        self.cancel = cancel  # a threading.Event the host sets to stop the action
        self.parameters_given: int | None = None
        self._pool: Any = None
        self._watch: Any = None
        self._discard = False
        self._began = False  # PgBouncer mode: prepare() opened this action's transaction

    # -- life cycle --------------------------------------------------------------------------
    def __enter__(self) -> Session:
        if self.cancel is not None and self.cancel.is_set():
            raise ActionError("CANCELLED", "the action was cancelled before it started")
        self._pool, self.conn = self.pools.checkout(self.profile)
        self._watch = self.watchdog.arm(self.conn, self.timeout, self.cancel)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        own_failure = None  # a failure of the COMMIT below, which nobody else will raise
        if exc is None:
            exc = own_failure = self._commit_open_transaction()
        self.watchdog.disarm(self._watch)
        try:
            if exc is not None:
                self._after_failure()
        finally:
            self._pool.put(self.conn, discard=self._discard)
        if exc is None:
            return
        if self._watch.cancelled:
            raise ActionError("CANCELLED", "the action was cancelled while it ran; its changes were "
                                           "rolled back") from None
        if isinstance(exc, Exception) and not isinstance(exc, ActionError):
            raise map_exception(exc, connecting=False, timed_out=self._watch.fired,
                                given_parameters=self.parameters_given) from None
        if own_failure is not None:
            raise own_failure

    @property
    def timed_out(self) -> bool:
        """Whether the watchdog stepped in (the deadline passed): the failure is a timeout."""
        return bool(self._watch is not None and self._watch.fired)

    def _commit_open_transaction(self) -> BaseException | None:
        """PgBouncer mode runs each action in a transaction of its own: commit it.  A transaction a
        user's script left open (BEGIN without COMMIT) is not ours to commit: the pool discards it."""
        if not self._began or self.conn.pgconn.transaction_status != pq.TransactionStatus.INTRANS:
            return None
        try:
            self.conn.execute("COMMIT")
        except BaseException as exc:  # a deferred constraint, a lost connection …
            return exc
        return None

    def _after_failure(self) -> None:
        conn = self.conn
        status = conn.pgconn.transaction_status
        if conn.closed or conn.broken or status in (pq.TransactionStatus.ACTIVE, pq.TransactionStatus.UNKNOWN) \
                or self._watch.fired:
            self._discard = True
            return
        if status != pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                self._discard = True
                return
        self.forget_session_state()

    # -- session settings --------------------------------------------------------------------
    @contextmanager
    def transaction(self, force_rollback: bool = False, read_only: bool = False) -> Iterator[Any]:
        """A transaction (a savepoint when one is open already): committed when the block ends,
        rolled back when it raises or with *force_rollback* (a dry run)."""
        if self.conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            # Settings first: set_config inside a transaction would be undone by its rollback.
            self.prepare(read_only=read_only)
        with self.conn.transaction(force_rollback=force_rollback) as tx:
            yield tx

    def prepare(self, read_only: bool) -> None:
        """Make the session read-only (or not) with this action's statement timeout.

        Inside a transaction already open (a batch, run_transaction, a dry run) nothing changes:
        whoever opened it prepared the session first."""
        state = _state_of(self.conn)
        if self.conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return
        timeout_ms = max(1, int(self.timeout * 1000))
        if state.pgbouncer:
            self._begin_pooled_transaction(read_only, timeout_ms)
            return
        settings: list[str] = []
        if _session_read_only(self.conn, state) is not read_only:
            settings += ["default_transaction_read_only", "on" if read_only else "off"]
        if state.timeout_ms != timeout_ms:
            settings += ["statement_timeout", str(timeout_ms)]
        if self.conn.pgconn.parameter_status(b"application_name") != self._app_name_bytes:
            settings += ["application_name", self.app_name]  # reported by the server: no tracking needed
        if settings:
            calls = ", ".join("set_config(%s, %s, false)" for _ in range(len(settings) // 2))
            self.conn.execute(f"SELECT {calls}", settings)
            state.read_only, state.timeout_ms = read_only, timeout_ms

    def _begin_pooled_transaction(self, read_only: bool, timeout_ms: int) -> None:
        """PgBouncer mode: a transaction carrying every setting the action needs (one round trip)."""
        settings = dict(SESSION_SETTINGS, statement_timeout=str(timeout_ms), application_name=self.app_name)
        if self.profile.schema:
            settings["search_path"] = search_path(self.profile.schema)
        calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
        with self.conn.pipeline():
            self.conn.execute("BEGIN READ ONLY" if read_only else "BEGIN READ WRITE")
            self.conn.execute(f"SELECT {calls}", [v for item in settings.items() for v in item])
        self._began = True

    def leave_transaction(self) -> bool:
        """PgBouncer mode, after a statement refused to run in a transaction block (VACUUM, CREATE
        INDEX CONCURRENTLY …): roll back so it can run on its own.  False when not applicable."""
        if not _state_of(self.conn).pgbouncer or self.conn.pgconn.transaction_status != pq.TransactionStatus.INERROR:
            return False
        self.conn.execute("ROLLBACK")
        self._began = False
        return True

    def forget_session_state(self) -> None:
        state = SESSION_STATE.get(self.conn)
        if state is not None:
            state.forget()

    # -- statements --------------------------------------------------------------------------
    def raw_cursor(self) -> psycopg.RawCursor[Any]:
        """This connection's reusable cursor ($n placeholders go to the server unchanged)."""
        state = _state_of(self.conn)
        if state.cursor is None:
            state.cursor = psycopg.RawCursor(self.conn)
        return state.cursor

    def run_statement(self, cur: psycopg.Cursor[Any], sql: str, params: Any, budget: int) -> RowsJSON:
        """Run one statement; serialize its rows (if any) while reading; stop at *budget* bytes.

        Rows arrive in chunks, so memory holds at most the serialized output (≤ budget) plus one
        chunk; stopping early cancels the rest of the query.  The extended protocol is used, so
        the text must be a single statement.
        """
        # Interned, so equal SQL is the same object: psycopg then keeps the cursor's loaders.
        sql = sys.intern(sql)
        if not prepared_stream.SUPPORTED:
            return self._run_with_public_api(cur, sql, params, budget)
        results = prepared_stream.stream_results(cur, sql, params, STREAM_CHUNK_ROWS)
        try:
            rows = self._serialize(cur, (cur._tx.load_rows(0, r.ntuples, cur._make_row) for r in results), budget)
        finally:
            results.close()
        final = cur.pgresult
        if final is not None and final.status == pq.ExecStatus.COMMAND_OK:
            return RowsJSON(b"", 0, [], returned_rows=False, command_rows=final.command_tuples or 0)
        return rows

    def _run_with_public_api(self, cur: psycopg.Cursor[Any], sql: str, params: Any, budget: int) -> RowsJSON:
        """The same with psycopg's public API only (no prepared statements while streaming)."""
        if statement_info(sql).returns_rows:
            stream = cast(Generator[Any, None, None], cur.stream(sql, params, size=STREAM_CHUNK_ROWS))
            try:
                return self._serialize(cur, _batched(stream), budget)
            finally:
                stream.close()
        # Prepared (a single statement, as above) unless the connection must not prepare (PgBouncer).
        cur.execute(sql, params, prepare=None if self.conn.prepare_threshold is None else True)
        return self.read_rows(cur, budget)

    def read_rows(self, cur: psycopg.Cursor[Any], budget: int) -> RowsJSON:
        """Serialize the rows of a statement already executed."""
        if not cur.pgresult or cur.pgresult.status != pq.ExecStatus.TUPLES_OK:
            return RowsJSON(b"", 0, [], returned_rows=False, command_rows=max(cur.rowcount, 0))
        return self._serialize(cur, iter(lambda: cur.fetchmany(STREAM_CHUNK_ROWS), []), budget)

    def _serialize(self, cur: psycopg.Cursor[Any], batches: Iterator[list[Any]], budget: int) -> RowsJSON:
        chunks: list[bytes] = []
        size = 0
        count = 0
        names: list[str] | None = None
        for batch in batches:
            if not batch:
                continue
            if names is None:
                names = _column_names(cur.pgresult)
            size = self._flush([dict(zip(names, row)) for row in batch], chunks, size, budget)
            count += len(batch)
        if names is None:
            names = _column_names(cur.pgresult)
        return RowsJSON(b",".join(chunks), count, names)

    def _flush(self, batch: list[dict[str, Any]], chunks: list[bytes], size: int, budget: int) -> int:
        encoded = to_json_bytes(batch)[1:-1]
        size += len(encoded) + 1
        if size > budget:
            raise ActionError(
                "RESULT_TOO_LARGE",
                f"the rows exceed the output limit of {self.limits.max_result_bytes:,} bytes; "
                f"reading stopped after about {sum(len(c) for c in chunks):,} bytes",
                extra={"limitBytes": self.limits.max_result_bytes})
        chunks.append(encoded)
        return size


def _state_of(conn: psycopg.Connection[Any]) -> SessionState:
    state = SESSION_STATE.get(conn)
    if state is None:
        state = SESSION_STATE[conn] = SessionState(None, None)
    return state


def _batched(rows: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= STREAM_CHUNK_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _session_read_only(conn: psycopg.Connection[Any], state: SessionState) -> bool | None:
    """The server reports default_transaction_read_only on every change (PostgreSQL 14+), so
    whatever a statement did to it is known without a round trip; older servers: our own record."""
    reported = conn.pgconn.parameter_status(b"default_transaction_read_only")
    if reported is not None:
        return reported == b"on"
    return state.read_only


def _column_names(result: Any) -> list[str]:
    """Column names, with repeats made unique (id, id_2) so no value is silently dropped.

    Read from the result itself: ``cursor.description`` builds column objects we do not need.
    """
    names: list[str] = []
    seen: dict[str, int] = {}
    for index in range(result.nfields if result is not None else 0):
        name = result.fname(index).decode("utf-8")
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return names
