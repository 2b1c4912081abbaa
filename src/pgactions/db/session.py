"""One action on one pooled connection: units (commit or rollback), settings, capped streaming.

Round trips are counted: a warm ``query_rows`` is one round trip (the statement itself).  A read
that runs alone is one statement in autocommit mode on a session whose
``default_transaction_read_only`` is on, so the server refuses any write; a write runs in a
transaction that the pipeline commits only once the action's output is complete (see
:meth:`Session.unit`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.generators import fetch_many, send

from pgactions.connection.profiles import ConnectionProfile
from pgactions.db import streaming
from pgactions.db.connect import (
    DEFAULT_TIMEOUT_MS,
    POOLED_RESET_SQL,
    SESSION_SETTINGS,
    SESSION_STATE,
    PoolCache,
    SessionState,
    reset_sql,
    search_path,
)
from pgactions.db.convert import to_json_bytes
from pgactions.db.errormap import map_exception
from pgactions.db.output import FileSink, OutputBudget, Rows
from pgactions.db.pool import closed_by_server
from pgactions.db.watchdog import Watchdog
from pgactions.limits import Limits
from pgactions.render.sqltext import statement_info
from pgactions.spec.errors import ActionError

__all__ = ["ENVELOPE_BYTES", "STREAM_CHUNK_ROWS", "Session"]

STREAM_CHUNK_ROWS = 500
ENVELOPE_BYTES = 256  # room kept under the cap for the output's own fields ({"rowCount": …})


class Session:
    """One action (or one batch) on one pooled connection.

    A context manager: checks a connection out, arms the watchdog, and on the way out is the one
    place where driver failures become friendly errors (:func:`map_errors`).  Inside, every action
    or step runs in a :meth:`unit`, which decides commit or rollback once its output is complete.
    """

    def __init__(self, pools: PoolCache, watchdog: Watchdog, profile: ConnectionProfile,
                 timeout: float, limits: Limits, app_name: str | None = None, cancel: Any = None,
                 role: str | None = None, local: dict[str, str] | None = None) -> None:
        self.pools, self.watchdog, self.profile = pools, watchdog, profile
        # Settings the host gives each transaction (set_config(…, true)): a role to switch to (SET
        # LOCAL ROLE, e.g. from a verified token's claim, so row-level security applies) and values
        # such as pgactions.auth (pinned claims policies read).  They end with the transaction.
        self.role = role
        self.local = dict(local or {})
        if role is not None:
            self.local = {"role": role, **self.local}
        self.timeout, self.limits = timeout, limits
        self.app_name = app_name or profile.applicationName
        self._app_name_bytes = self.app_name.encode()
        self.cancel = cancel  # a threading.Event the host sets to stop the action
        self.budget = OutputBudget(limits.max_result_bytes - ENVELOPE_BYTES)
        self.touched_session = False  # user SQL ran: it may have changed session state
        self.discard_after = False  # the session holds what no reset undoes (PREPARE): close it after
        self._pool: Any = None
        self._state: SessionState | None = None  # the connection's SESSION_STATE, looked up once
        self._timeout_ms = max(1, int(timeout * 1000))
        self._watch: Any = None
        self._discard = False
        self._depth = 0  # open units: 0 outside any, 1 for the action's own transaction

    # -- life cycle --------------------------------------------------------------------------
    def __enter__(self) -> Session:
        if self.cancel is not None and self.cancel.is_set():
            raise ActionError("CANCELLED", "the action was cancelled before it started")
        # Each pooled connection may carry a reset whose answer failed (the server restarted …):
        # such a one is closed and the next taken; after the pool's size, a fresh one comes.
        for _attempt in range(self.profile.maxConnections + 1):
            self._pool, self.conn = self.pools.checkout(self.profile)
            self._watch = self.watchdog.arm(self.conn, self.timeout, self.cancel)
            if self._finish_reset():
                return self
            self.watchdog.disarm(self._watch)
            self._pool.put(self.conn, discard=True)
        raise ActionError("CONNECTION_LOST", "no pooled connection could be made ready; try again")

    def _finish_reset(self) -> bool:
        """Read the answer to the reset the previous action sent (usually here already, so no
        wait): False when the connection cannot be used."""
        state = self._state = SESSION_STATE.get(self.conn)  # kept for the action (None: made when needed)
        if state is None or not state.reset_pending:
            return True
        state.reset_pending = False
        try:
            results = self.conn.wait(fetch_many(self.conn.pgconn))
        except (psycopg.Error, OSError):
            return False
        failed = any(r.status == pq.ExecStatus.FATAL_ERROR for r in results)
        last = results[-1] if results else None
        if last is not None and last.status == pq.ExecStatus.TUPLES_OK and last.get_value(0, 0) != b"0":
            return False  # a statement PREPAREd in SQL is still there: this session is not reused
        # Anything more to read now is the server's goodbye (a terminated backend …).
        return not failed and self.conn.pgconn.transaction_status == pq.TransactionStatus.IDLE \
            and not closed_by_server(self.conn)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        cancelled, timed_out = self._watch.cancelled, self._watch.fired  # as the action ended
        self._discard = self._discard or self.discard_after
        pending = False
        try:
            try:
                if self._discard:
                    pass
                elif exc is not None or self.conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                    self._after_failure()
                elif self.touched_session or self._drifted():
                    pending = self._send_reset()
            finally:
                # Watched until the clean-up is done too: a server gone silent during the ROLLBACK
                # is cancelled, then cut off, rather than holding this thread (or the loop) forever.
                self.watchdog.disarm(self._watch)
        finally:
            self._pool.put(self.conn, discard=self._discard or self._watch.fired, pending=pending)
        if exc is None or not isinstance(exc, Exception):
            return
        if cancelled:
            raise ActionError("CANCELLED", "the action was cancelled while it ran; its changes were "
                                           "rolled back") from None
        raise map_exception(exc, connecting=False, timed_out=timed_out) from None

    def _drifted(self) -> bool:
        """Whether a setting the server reports (PostgreSQL sends these on every change, at no
        cost) differs from what every action starts with: a second line behind the judgement
        that a statement could not change the session.  (Unrolled: this runs after every action.)"""
        status = self.conn.pgconn.parameter_status
        return status(b"TimeZone") != b"UTC" or status(b"DateStyle") != b"ISO, YMD" \
            or status(b"IntervalStyle") != b"iso_8601" or status(b"standard_conforming_strings") != b"on" \
            or status(b"application_name") != self._app_name_bytes

    @property
    def timed_out(self) -> bool:
        """Whether the watchdog stepped in (the deadline passed): the failure is a timeout."""
        return bool(self._watch is not None and self._watch.fired)

    def _after_failure(self) -> None:
        conn = self.conn
        status = conn.pgconn.transaction_status
        if conn.closed or conn.broken or status in (pq.TransactionStatus.ACTIVE, pq.TransactionStatus.UNKNOWN) \
                or self._watch.fired:
            self._discard = True
            return
        if status != pq.TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                self._discard = True
                return
        self.forget_session_state()
        if self.touched_session:
            self._reset_session_state()

    def _send_reset(self) -> bool:
        """Send the reset without waiting for it: the server runs it while the host goes on, and
        the next action on this connection reads its answer first (:meth:`_finish_reset`)."""
        state = self._session_state()
        if state.pgbouncer:
            return False  # the pooler shares server sessions: there is no session of ours to reset
        pgconn = self.conn.pgconn
        try:
            pgconn.send_query(reset_sql(self.profile, self.app_name))
            if pgconn.flush():  # not all out at once (rare): wait as every other wait is made
                self.conn.wait(send(pgconn))
        except (psycopg.Error, OSError):
            self._discard = True
            return False
        state.reset_pending = True
        state.read_only, state.timeout_ms = True, DEFAULT_TIMEOUT_MS
        return True

    def _reset_session_state(self) -> None:
        """Whatever the user's SQL changed on the session goes, so the next action starts from the
        profile's own state (see :data:`pgactions.db.connect.RESET_SQL`)."""
        state = self._session_state()
        if state.pgbouncer:
            return  # the pooler shares server sessions: there is no session of ours to reset
        try:
            cur = self.conn.execute(reset_sql(self.profile, self.app_name))
            while cur.nextset():
                pass
            prepared = cur.fetchone()
        except psycopg.Error:
            self._discard = True
            return
        if prepared and prepared[0]:
            self._discard = True
        state.read_only, state.timeout_ms = True, DEFAULT_TIMEOUT_MS

    # -- units: where commit or rollback is decided ---------------------------------------------
    def unit(self, read_only: bool, rollback: bool = False, guarded: bool = False) -> _Unit:
        """The scope of one action or step.  Its changes are kept only when the block ends without
        an error (the output is complete by then) and *rollback* (a dry run) is off.

        Alone, a read runs in autocommit with the session read-only (one round trip; the server
        refuses any write); a write runs in a transaction of its own.  Inside a transaction
        (Run Transaction, a batch), a read runs in a savepoint made read-only with ``SET LOCAL
        transaction_read_only`` and rolled back after it, and a dry run or guarded write
        (*guarded*: maxAffectedRows) in a savepoint of its own.

        A plain object, not a generator-based context manager: the read that runs alone (the
        commonest action) enters and leaves without a generator.
        """
        return _Unit(self, read_only, rollback, guarded)

    def _unit_scope(self, read_only: bool, rollback: bool, guarded: bool) -> AbstractContextManager[None] | None:
        """What a unit does on entering; None for a read that runs alone (done already)."""
        idle = self.conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        if self._depth == 0 and idle:
            if read_only and not self.local and not self._session_state().pgbouncer:
                self._apply_settings(read_only=True)
                self._depth += 1
                return None
            return self._outermost(read_only, rollback)
        if idle:
            return nullcontext()  # inside a read that runs alone (a batch of reads): the session is read-only
        if read_only or rollback or guarded:
            return self._savepoint(read_only, rollback or read_only)
        return nullcontext()

    @contextmanager
    def _outermost(self, read_only: bool, rollback: bool) -> Iterator[None]:
        """A unit that runs alone in a transaction of its own (a write; a read as a role, or in
        PgBouncer mode)."""
        state = self._session_state()
        self._begin(read_only)
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            self._end("ROLLBACK")
            raise
        self._depth -= 1
        if self.conn.pgconn.transaction_status != pq.TransactionStatus.INTRANS:
            # A statement ended our transaction (COMMIT in a script): what it did cannot be undone
            # any more, so say so rather than answer as if all went to plan.
            raise ActionError("INVALID_INPUT", "a statement of the action ended its transaction (COMMIT, "
                                               "ROLLBACK …); transaction control is not allowed in actions",
                              extra={"field": "query"})
        if state.pgbouncer and self.touched_session:
            # No session of ours to reset after the action (the pooler shares server sessions):
            # undo what the action's SQL may have set, inside its transaction, before it ends.
            self.conn.execute(POOLED_RESET_SQL)
        self._end("ROLLBACK" if rollback else "COMMIT")

    @contextmanager
    def _savepoint(self, read_only: bool, rollback: bool) -> Iterator[None]:
        name = f"pgactions_{self._depth}"
        self.conn.execute(f"SAVEPOINT {name}; SET LOCAL transaction_read_only = on" if read_only
                          else f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self.conn.pgconn.transaction_status == pq.TransactionStatus.INERROR:
                self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
            raise
        self._depth -= 1
        self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}" if rollback
                          else f"RELEASE SAVEPOINT {name}")

    def _end(self, verb: str) -> None:
        if self.conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            return
        self.conn.execute(verb)
        if verb == "ROLLBACK":
            self.forget_session_state()  # settings made inside the transaction were undone too

    @contextmanager
    def outside_transaction(self) -> Iterator[None]:
        """For a statement that refuses a transaction block (VACUUM, CREATE INDEX CONCURRENTLY):
        run in autocommit, as a write."""
        self._apply_settings(read_only=False)
        yield

    # -- session settings --------------------------------------------------------------------
    def _begin(self, read_only: bool) -> None:
        state = self._session_state()
        timeout_ms = self._timeout_ms
        if state.pgbouncer:
            self._begin_pooled_transaction(read_only, timeout_ms)
            return
        self._apply_settings(read_only=False)
        if not self.local:
            self.conn.execute("BEGIN READ ONLY" if read_only else "BEGIN")
            return
        calls = ", ".join("set_config(%s, %s, true)" for _ in self.local)
        with self.conn.pipeline():  # one round trip: the settings are in place before any statement
            self.conn.execute("BEGIN READ ONLY" if read_only else "BEGIN")
            self.conn.execute(f"SELECT {calls}", [v for item in self.local.items() for v in item])

    def _apply_settings(self, read_only: bool) -> None:
        """The session read-only (or not), this action's statement timeout and application name;
        sent only when they differ from what the connection has (usually nothing is sent)."""
        state = self._state or self._session_state()
        if state.pgbouncer:
            return
        timeout_ms = self._timeout_ms
        status = self.conn.pgconn.parameter_status
        settings: list[str] = []
        if _session_read_only(status, state) is not read_only:
            settings += ["default_transaction_read_only", "on" if read_only else "off"]
        if state.timeout_ms != timeout_ms:
            settings += ["statement_timeout", str(timeout_ms)]
        if status(b"application_name") != self._app_name_bytes:
            settings += ["application_name", self.app_name]  # reported by the server: no tracking needed
        if settings:
            calls = ", ".join("set_config(%s, %s, false)" for _ in range(len(settings) // 2))
            self.conn.execute(f"SELECT {calls}", settings)
            state.read_only, state.timeout_ms = read_only, timeout_ms

    def _begin_pooled_transaction(self, read_only: bool, timeout_ms: int) -> None:
        """PgBouncer mode: a transaction carrying every setting the action needs (one round trip)."""
        settings = dict(SESSION_SETTINGS, statement_timeout=str(timeout_ms), application_name=self.app_name)
        settings.update(self.local)
        if self.profile.schema:
            settings["search_path"] = search_path(self.profile.schema)
        calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
        with self.conn.pipeline():
            self.conn.execute("BEGIN READ ONLY" if read_only else "BEGIN READ WRITE")
            self.conn.execute(f"SELECT {calls}", [v for item in settings.items() for v in item])

    def forget_session_state(self) -> None:
        state = SESSION_STATE.get(self.conn)
        if state is not None:
            state.forget()

    def _session_state(self) -> SessionState:
        """The connection's :class:`SessionState` (looked up once per checkout)."""
        state = self._state
        if state is None:
            state = self._state = _state_of(self.conn)
        return state

    # -- statements --------------------------------------------------------------------------
    def raw_cursor(self) -> psycopg.RawCursor[Any]:
        """This connection's reusable cursor ($n placeholders go to the server unchanged)."""
        state = self._session_state()
        if state.cursor is None:
            state.cursor = psycopg.RawCursor(self.conn)
        return state.cursor

    #: Where rows may go once they outgrow memory: the runtime's FileSink for an action whose
    #: output is written to a file; None keeps them in memory.
    spill_to: FileSink | None = None

    def run_statement(self, cur: psycopg.Cursor[Any], sql: str, params: Any) -> Rows:
        """Run one statement; serialize its rows (if any) while reading, within the output budget.

        Rows arrive in chunks sized by bytes (:data:`streaming.WIDTHS`: the widest row seen for
        this SQL text before; a text never seen gets small chunks), and are serialized in batches
        sized by bytes too, so memory holds the serialized output (≤ the cap) plus about one
        chunk; passing the cap cancels the rest of the query.  The extended protocol is used, so
        the text must be a single statement.
        """
        # Interned, so equal SQL is the same object: psycopg then keeps the cursor's loaders.
        sql = sys.intern(sql)
        if not streaming.SUPPORTED:
            return self._run_with_public_api(cur, sql, params)
        widest = streaming.WIDTHS.get(sql)
        writer = _RowWriter(Rows(spill=self.spill_to), self.budget, widest)
        batches = streaming.stream_rows(cur, sql, params, streaming.WIDTHS.chunk_rows(widest),
                                        lambda: writer.limit)
        try:
            for batch in batches:
                if writer.names is None:
                    writer.names = _column_names(cur.pgresult)
                writer.write(batch)
            rows = writer.finish(cur.pgresult)
        finally:
            batches.close()
            streaming.WIDTHS.note(sql, writer.widest)  # also (above all) when the cap stopped it
        final = cur.pgresult
        if final is not None and final.status == pq.ExecStatus.COMMAND_OK:
            return Rows(returned_rows=False, command_rows=final.command_tuples or 0)
        return rows

    def _run_with_public_api(self, cur: psycopg.Cursor[Any], sql: str, params: Any) -> Rows:
        """The same with psycopg's public API only (no prepared statements while streaming)."""
        if statement_info(sql).returns_rows:
            widest = streaming.WIDTHS.get(sql)
            writer = _RowWriter(Rows(spill=self.spill_to), self.budget, widest)
            # libpq before 17 has no chunked-rows mode: one row at a time (single-row mode).
            size = streaming.WIDTHS.chunk_rows(widest) if psycopg.capabilities.has_stream_chunked() else 1
            stream = cast(Generator[Any, None, None], cur.stream(sql, params, size=size))
            try:
                batch: list[Any] = []
                for row in stream:
                    batch.append(row)
                    if len(batch) >= writer.limit:
                        if writer.names is None:
                            writer.names = _column_names(cur.pgresult)
                        writer.write(batch)
                        batch = []
                if batch and writer.names is None:
                    writer.names = _column_names(cur.pgresult)
                writer.write(batch)
                return writer.finish(cur.pgresult)
            finally:
                stream.close()
                streaming.WIDTHS.note(sql, writer.widest)
        # Prepared (a single statement, as above) unless the connection must not prepare (PgBouncer).
        cur.execute(sql, params, prepare=None if self.conn.prepare_threshold is None else True)
        return self.read_rows(cur)

    def read_rows(self, cur: psycopg.Cursor[Any]) -> Rows:
        """Serialize the rows of a statement already executed, within the output budget."""
        if not cur.pgresult or cur.pgresult.status != pq.ExecStatus.TUPLES_OK:
            return Rows(returned_rows=False, command_rows=max(cur.rowcount, 0))
        writer = _RowWriter(Rows(spill=self.spill_to), self.budget, 0)
        writer.names = _column_names(cur.pgresult)
        while True:
            batch = cur.fetchmany(writer.limit)
            if not batch:
                break
            writer.write(batch)
        return writer.finish(cur.pgresult)

    def run_script(self, cur: psycopg.Cursor[Any], script: str, statements: int) -> Rows:
        """Several statements without parameters, sent as one text (the simple protocol); the
        outcome of the last one.

        Results are read in chunks as they come and serialized under the budget; the next
        statement's result replaces them (their charge is given back), so an earlier statement's
        rows are never all in memory.  The last statement is the one at index *statements* − 1
        (PostgreSQL's parser counted them): passing the cap there stops the script at once.  An
        earlier result that passes the cap is skipped, and fails the action only should it turn
        out to be the last after all.
        """
        if not streaming.SUPPORTED:  # psycopg's public API: every result is read whole
            cur.execute(script)
            while cur.nextset():
                pass
            return self.read_rows(cur)
        script = sys.intern(script)
        widest = streaming.WIDTHS.get(script)
        budget = self.budget
        outcome = Rows(returned_rows=False)  # the outcome of the latest statement finished
        writer: _RowWriter | None = None  # the rows of the statement being read
        skipping: ActionError | None = None  # that statement's rows passed the cap
        too_large: ActionError | None = None  # the latest statement finished passed the cap
        index = 0  # the statement whose result is coming
        results = streaming.script_results(cur, script, streaming.WIDTHS.chunk_rows(widest))
        try:
            for res in results:
                if res.status in _CHUNKS:
                    if skipping is not None:
                        continue
                    if writer is None:  # a new result set: the previous outcome is replaced
                        budget.refund(_charged(outcome))
                        outcome = Rows(returned_rows=False)
                        writer = _RowWriter(Rows(spill=self.spill_to), budget, widest)
                        writer.names = _column_names(res)
                    try:
                        writer.add_chunk(streaming.row_loader(cur), res)
                    except ActionError as exc:
                        if exc.code != "RESULT_TOO_LARGE" or index >= statements - 1:
                            raise
                        budget.refund(_charged(writer.rows))
                        widest = max(widest, writer.widest)
                        skipping, writer = exc, None
                    continue
                # The end of one statement's result.
                too_large, skipping = skipping, None
                if writer is not None:
                    outcome = writer.finish(res)
                    widest = max(widest, writer.widest)
                    writer = None
                elif too_large is None:
                    budget.refund(_charged(outcome))
                    if res.status == pq.ExecStatus.TUPLES_OK:
                        outcome = Rows()
                        outcome.columns = _column_names(res)
                    else:
                        outcome = Rows(returned_rows=False, command_rows=res.command_tuples or 0)
                index += 1
        finally:
            results.close()
            streaming.WIDTHS.note(script, max(widest, writer.widest if writer is not None else 0))
        if too_large is not None:
            raise too_large
        return outcome

    def query(self, sql: Any, params: Any = None) -> list[dict[str, Any]]:
        """A small query of our own (the catalog, a routine's shape): its rows as dicts, read in
        chunks through the output budget so even a huge catalog cannot exceed the cap."""
        text = sql if isinstance(sql, str) else sql.as_string(self.conn)
        return self.run_statement(self.conn.cursor(), text, params).parsed()


class _Unit:
    """:meth:`Session.unit`'s context manager: decides on entering (as the generator did); a read
    that runs alone is only counted in and out."""

    __slots__ = ("_inner", "_session", "guarded", "read_only", "rollback")

    def __init__(self, session: Session, read_only: bool, rollback: bool, guarded: bool) -> None:
        self._session, self.read_only, self.rollback, self.guarded = session, read_only, rollback, guarded
        self._inner: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        session = self._session
        if self.read_only and session._depth == 0 and not session.local \
                and session.conn.pgconn.transaction_status == pq.TransactionStatus.IDLE \
                and not (session._state or session._session_state()).pgbouncer:
            # A read that runs alone (the commonest action): autocommit, the session read-only.
            session._apply_settings(read_only=True)
            session._depth += 1
            return
        inner = self._inner = session._unit_scope(self.read_only, self.rollback, self.guarded)
        if inner is not None:
            inner.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool | None:
        inner = self._inner
        if inner is None:
            self._session._depth -= 1
            return None
        return inner.__exit__(exc_type, exc, tb)


class _RowWriter:
    """Rows serialized into a :class:`Rows` in batches sized by bytes: while the width of the rows
    is unknown, one at a time; then as many as make about :data:`BATCH_BYTES` of JSON at the
    widest row seen so far (at most :data:`STREAM_CHUNK_ROWS`): ``limit``.  Every batch is
    charged to the budget."""

    __slots__ = ("budget", "limit", "names", "rows", "widest")

    def __init__(self, rows: Rows, budget: OutputBudget, widest: int) -> None:
        self.rows, self.budget, self.widest = rows, budget, widest
        self.names: list[str] | None = None
        self.limit = _batch_rows(widest)

    def add_chunk(self, load: Any, chunk: Any) -> None:
        """The rows of one libpq chunk (*load* reads rows start..stop of it), a batch at a time."""
        total, start = chunk.ntuples, 0
        while start < total:
            stop = min(total, start + self.limit)
            self.write(load(start, stop))
            start = stop

    def write(self, batch: list[Any]) -> None:
        if not batch:
            return
        names = self.names or ()
        encoded = to_json_bytes([dict(zip(names, row)) for row in batch])
        width = (len(encoded) - 2) // len(batch) + 1  # a row with its comma, rounded up
        if width > self.widest:
            self.widest, self.limit = width, _batch_rows(width)
        self.rows.append_batch(encoded, len(batch), self.budget)

    def finish(self, result: Any) -> Rows:
        rows = self.rows
        rows.columns = self.names if self.names is not None else _column_names(result)
        return rows


def _state_of(conn: psycopg.Connection[Any]) -> SessionState:
    state = SESSION_STATE.get(conn)
    if state is None:
        state = SESSION_STATE[conn] = SessionState(None, None)
    return state


BATCH_BYTES = 1024 * 1024  # JSON per serialized batch, once the rows' width is known
_CHUNKS = (pq.ExecStatus.TUPLES_CHUNK, pq.ExecStatus.SINGLE_TUPLE)


def _charged(rows: Rows) -> int:
    """What *rows* cost the budget (every batch was charged its JSON and one separator)."""
    return rows.size + 1 if rows.count else 0


def _batch_rows(widest: int) -> int:
    """Rows per serialized batch for rows up to *widest* bytes (0: not known yet, so one)."""
    return max(1, min(STREAM_CHUNK_ROWS, BATCH_BYTES // widest)) if widest > 0 else 1


def _session_read_only(status: Callable[[bytes], bytes | None], state: SessionState) -> bool | None:
    """The server reports default_transaction_read_only on every change (PostgreSQL 14+), so
    whatever a statement did to it is known without a round trip; older servers: our own record.
    *status*: the connection's ``pgconn.parameter_status``."""
    reported = status(b"default_transaction_read_only")
    if reported is not None:
        return reported == b"on"
    return state.read_only


def _column_names(result: Any) -> list[str]:
    """Column names, with repeats made unique (id, id_2) so no value is silently dropped.

    Read from the result itself: ``cursor.description`` builds column objects we do not need.
    The same columns come back on every run of a statement: made once per list of raw names.
    """
    if result is None:
        return []
    raw = tuple(map(result.fname, range(result.nfields)))
    names = _NAMES.get(raw)
    if names is None:
        names = _unique_names(raw)
        if len(_NAMES) >= _NAMES_KEPT:
            _NAMES.clear()  # many distinct shapes (ad-hoc queries): start again rather than grow
        _NAMES[raw] = names
    return list(names)


_NAMES: dict[tuple[bytes, ...], tuple[str, ...]] = {}
_NAMES_KEPT = 1024


def _unique_names(raw: tuple[bytes, ...]) -> tuple[str, ...]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for fname in raw:
        name = fname.decode("utf-8")
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return tuple(names)
