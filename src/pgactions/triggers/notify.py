"""The ``notification`` trigger: LISTEN on a channel, with an optional per-table trigger that
NOTIFYs every row change (docs/triggers-polling.md, "LISTEN/NOTIFY").

    install_notify_trigger(runtime, profile, "orders", "orders_changed")    # once, by the owner
    source = open_notification(profile, {"channel": "orders_changed"}, checkpoint)
    batch = source.poll(timeout=5.0)    # Batch(events, checkpoint)

**Events.**  A notification is ``{"op": "notification", "channel", "payload"}`` (the payload text
as sent).  One sent by the table helper — JSON ``{op, table, key, row}`` — is decoded into an event
like the other triggers': ``{"op": "insert"|"update"|"delete"|"truncate", "table": "schema.table",
"channel", "key", "after": row}`` (``"before"`` for a delete).  The row is in the JSON forms of
query results (docs/types.md): PostgreSQL parses the trigger's JSON back into the table's row type
(``jsonb_populate_record``) and our loaders write it out.  A row too large for a notification
(PostgreSQL's limit is 8,000 bytes) is sent as its key only, and the listener fetches it (Find
Rows by key; ``"after": null`` when it is gone by then; a deleted row's ``before`` is then absent
and ``"rowOmitted": true`` says so).

**Not durable.**  PostgreSQL keeps no notification for a listener that is not connected: whatever
is sent while the listener is away (a server restart, a terminated backend, a network break, the
host stopped) is lost.  The listener reconnects by itself (backoff from 0.1 s doubling to
``max_backoff``), LISTENs again and reports the time it could not hear as one event first in the
next batch: ``{"op": "gap", "channel", "since": ISO time, "until": ISO time, "reason"}``.  A
source opened with a checkpoint reports the gap since that checkpoint was made.  For changes that
must not be lost, use the polling triggers or CDC.

**The checkpoint**: ``{"v": 1, "trigger": "notification", "channel": c, "listening": ISO time}`` —
the last moment the listener was known to be listening.

The listening session is a connection of the source's own (autocommit, ``application_name``
``pgactions listen <channel>`` unless told otherwise), never one of the runtime's pool: after a
failure it is closed before another is opened, and :meth:`close` ends it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
from typing import Any

import psycopg
from psycopg import sql as psql

from pgactions import ActionError, Runtime
from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.render.identifiers import quote_identifier
from pgactions.triggers.base import Batch
from pgactions.triggers.polling import _TABLE_SQL, _resolve_table, _Table

__all__ = ["CHECKPOINT_VERSION", "KEY_ONLY_BYTES", "NotificationSource", "install_notify_trigger",
           "notify_trigger_names", "open_notification", "remove_notify_trigger"]

CHECKPOINT_VERSION = 1
# A payload longer than this (in bytes) is sent as the key only: PostgreSQL refuses 8,000 and more.
KEY_ONLY_BYTES = 7900
_ROW_OPS = ("insert", "update", "delete")
Profile = str | dict[str, Any] | ConnectionProfile


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _unix(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class NotificationSource:
    """A LISTEN/NOTIFY trigger (see the module's docstring); made by :func:`open_notification`."""

    def __init__(self, profile: Profile, inputs: dict[str, Any], checkpoint: dict[str, Any] | None, *,
                 runtime: Runtime | None = None, application_name: str | None = None,
                 max_backoff: float = 5.0, max_events: int = 1000) -> None:
        if not isinstance(inputs, dict) or not isinstance(inputs.get("channel"), str) or not inputs["channel"]:
            raise ActionError("INVALID_INPUT", "channel: give the channel's name", extra={"field": "channel"})
        unknown = sorted(set(inputs) - {"channel"})
        if unknown:
            raise ActionError("INVALID_INPUT", f"{unknown[0]}: not an input of notification (its inputs: channel)",
                              extra={"field": unknown[0]})
        self.channel: str = inputs["channel"]
        self._listen_sql = f"LISTEN {quote_identifier(self.channel)}"  # refuses NUL and names over 63 bytes
        self.profile = load_profile(profile)
        self.application_name = (application_name or f"pgactions listen {self.channel}")[:63]
        self.max_backoff, self.max_events = max_backoff, max_events
        self._runtime, self._own_runtime = runtime, False
        self._conn: psycopg.Connection[Any] | None = None
        self._delay = 0.1
        self._next_attempt = 0.0
        self._listening_at: float | None = None  # last moment known to be listening
        self._lost_at: float | None = None  # listening stopped then (None: not lost)
        self._reason = ""
        if checkpoint is not None:
            if not isinstance(checkpoint, dict) or checkpoint.get("trigger") != "notification" \
                    or checkpoint.get("channel") != self.channel:
                raise ActionError("INVALID_INPUT", "checkpoint: not a checkpoint of a notification trigger on "
                                                   f"channel {self.channel!r}", extra={"field": "checkpoint"})
            if isinstance(checkpoint.get("listening"), str):
                self._lost_at = _unix(checkpoint["listening"])
                self._reason = "the listener was not running"
        self._closed = False

    # -- the source interface ----------------------------------------------------------------------
    @property
    def checkpoint(self) -> dict[str, Any]:
        at = self._listening_at if self._lost_at is None else self._lost_at
        return {"v": CHECKPOINT_VERSION, "trigger": "notification", "channel": self.channel,
                "listening": _iso(at) if at is not None else None}

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def backend_pid(self) -> int | None:
        """The listening session's server process (None while disconnected)."""
        return self._conn.info.backend_pid if self._conn is not None and not self._conn.closed else None

    def poll(self, timeout: float) -> Batch:
        """Notifications received within *timeout* seconds (returning as soon as some came), after a
        gap event when listening had stopped; reconnects while disconnected."""
        if self._closed:
            raise RuntimeError("the notification source is closed")
        deadline = time.monotonic() + max(0.0, timeout)
        events: list[dict[str, Any]] = []
        while True:
            if self._conn is None:
                gap = self._connect()
                if gap is not None:
                    events.append(gap)
            if self._conn is not None:
                notes = self._receive(0.0 if events else max(0.0, deadline - time.monotonic()))
                if notes:
                    events += self._decode(notes)
            left = deadline - time.monotonic()
            if events or left <= 0:
                return Batch(events, self.checkpoint)
            if self._conn is None:  # wait for the next attempt, or the end of the poll
                time.sleep(max(0.0, min(left, self._next_attempt - time.monotonic())))

    def ack(self, checkpoint: dict[str, Any] | None) -> None:
        """Nothing is held on the server (NOTIFY keeps nothing for a listener)."""

    def close(self) -> None:
        self._closed = True
        self._drop()
        if self._own_runtime and self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    def __enter__(self) -> NotificationSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the listening session -----------------------------------------------------------------------
    def _connect(self) -> dict[str, Any] | None:
        """One attempt, if its time has come; the gap event when listening resumes after a loss."""
        if time.monotonic() < self._next_attempt:
            return None
        kwargs = dict(self.profile.connect_kwargs(), application_name=self.application_name)
        conn = None
        try:
            conn = psycopg.Connection.connect(autocommit=True, **kwargs)
            conn.execute(self._listen_sql)
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()  # never leave a half-made session behind
            if self._lost_at is None:
                self._lost_at, self._reason = time.time(), _reason(exc)
            self._next_attempt = time.monotonic() + self._delay * random.uniform(0.8, 1.2)
            self._delay = min(self._delay * 2, self.max_backoff)
            return None
        self._conn, self._delay = conn, 0.1
        now = time.time()
        self._listening_at = now
        if self._lost_at is None:
            return None
        gap = {"op": "gap", "channel": self.channel, "since": _iso(self._lost_at), "until": _iso(now),
               "reason": self._reason}
        self._lost_at, self._reason = None, ""
        return gap

    def _receive(self, timeout: float) -> list[psycopg.Notify]:
        assert self._conn is not None
        try:
            notes = list(self._conn.notifies(timeout=timeout, stop_after=1))
            if notes:  # take whatever else already came, without waiting
                notes += list(self._conn.notifies(timeout=0, stop_after=self.max_events))
            self._listening_at = time.time()
            return notes
        except psycopg.Error as exc:  # terminated backend, server restart, network break
            self._lost_at = self._listening_at or time.time()
            self._reason = _reason(exc)
            self._drop()
            self._next_attempt = time.monotonic()  # the first attempt at once, then backing off
            return []

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 - closing a broken connection may fail; it is gone either way
                pass

    # -- decoding ----------------------------------------------------------------------------------
    def _runtime_for_rows(self) -> Runtime:
        if self._runtime is None:
            self._runtime, self._own_runtime = Runtime(), True
        return self._runtime

    def _decode(self, notes: list[psycopg.Notify]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        pending: dict[str, list[tuple[dict[str, Any], str, str]]] = {}  # table → (event, field, payload)
        for note in notes:
            change = _table_change(note.payload)
            if change is None:
                events.append({"op": "notification", "channel": note.channel, "payload": note.payload})
                continue
            event: dict[str, Any] = {"op": change["op"], "table": change["table"], "channel": note.channel}
            events.append(event)
            if change["op"] == "truncate":
                continue
            event["key"] = change.get("key")
            field = "before" if change["op"] == "delete" else "after"
            if "row" in change:
                pending.setdefault(change["table"], []).append((event, field, note.payload))
            elif change["op"] == "delete":
                event["rowOmitted"] = True
            elif isinstance(change.get("key"), dict):
                event[field] = self._fetch(change["table"], change["key"])
            else:
                event[field], event["rowOmitted"] = None, True
        for table, items in pending.items():
            rows = self._normalize(table, [payload for _, _, payload in items])
            for index, (event, field, payload) in enumerate(items):
                event[field] = rows[index] if rows is not None else _loads(payload)["row"]
        return events

    def _normalize(self, table: str, payloads: list[str]) -> list[dict[str, Any]] | None:
        """The trigger's rows (to_jsonb) in the JSON forms of query results, by PostgreSQL parsing
        them back into the table's row type; None when that fails (then the rows are given as
        to_jsonb wrote them, numbers with a fraction as text)."""
        query = (f"SELECT r.* FROM unnest($1::text[]) WITH ORDINALITY AS e(p, n) CROSS JOIN LATERAL "
                 f"jsonb_populate_record(NULL::{quote_identifier(*table.split('.', 1))}, e.p::jsonb -> 'row') "
                 f"AS r ORDER BY e.n")
        try:
            rows = self._runtime_for_rows().run("query_rows", self.profile,
                                                {"query": query, "parameters": [payloads]}).data["rows"]
        except ActionError:
            return None
        return rows if len(rows) == len(payloads) else None  # type: ignore[no-any-return]

    def _fetch(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        schema, _, name = table.partition(".")
        try:
            rows = self._runtime_for_rows().run("find_rows", self.profile, {
                "table": name, "schema": schema, "limit": 1,
                "where": [{"column": c, "operator": "eq", "value": v} for c, v in key.items()]}).data["rows"]
        except ActionError:
            return None
        return rows[0] if rows else None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=str)  # numeric digits kept exactly, as text (docs/types.md)


def _table_change(payload: str) -> dict[str, Any] | None:
    """The table helper's payload, or None for anything else."""
    if not payload.startswith("{"):
        return None
    try:
        data = _loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("table"), str) or "." not in data["table"]:
        return None
    if set(data) - {"op", "table", "key", "row", "keyOmitted"}:
        return None
    if data.get("op") == "truncate" or (data.get("op") in _ROW_OPS and ("key" in data or "keyOmitted" in data)):
        return data
    return None


def open_notification(profile: Profile, inputs: dict[str, Any], checkpoint: dict[str, Any] | None, *,
                      runtime: Runtime | None = None, application_name: str | None = None,
                      max_backoff: float = 5.0) -> NotificationSource:
    """A LISTEN/NOTIFY trigger source (:class:`pgactions.triggers.base.TriggerSource`) on
    ``inputs["channel"]``.  *checkpoint*: one it returned before (a gap since then is reported), or
    None.  *runtime*: used to bring helper rows to the JSON forms of query results and to fetch rows
    sent by key (default: a Runtime of the source's own, made when first needed and closed with it).
    *application_name*: the listening session's (default ``pgactions listen <channel>``).
    *max_backoff*: the longest wait between reconnection attempts.  Connecting happens in
    :meth:`~NotificationSource.poll`, so an unreachable server is a gap, never an exception."""
    return NotificationSource(profile, inputs, checkpoint, runtime=runtime, application_name=application_name,
                              max_backoff=max_backoff)


# -- the table helper -------------------------------------------------------------------------------

def notify_trigger_names(schema: str, table: str, channel: str) -> tuple[str, str]:
    """The function's and the trigger's name for *table* and *channel* (one per pair)."""
    digest = hashlib.sha1(f"{schema}.{table}\x00{channel}".encode(), usedforsecurity=False).hexdigest()[:16]
    return f"pgactions_notify_{digest}", f"pgactions_notify_{digest}"


_FUNCTION_SQL = """CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgactions$
DECLARE
    rec record;
    k jsonb;
    payload text;
    tbl text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify({channel}, jsonb_build_object('op', 'truncate', 'table', tbl)::text);
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN rec := OLD; ELSE rec := NEW; END IF;
    k := jsonb_build_object({key});
    payload := jsonb_build_object('op', lower(TG_OP), 'table', tbl, 'key', k, 'row', to_jsonb(rec))::text;
    IF octet_length(payload) > {limit} THEN  -- PostgreSQL refuses payloads of 8000 bytes and more
        payload := jsonb_build_object('op', lower(TG_OP), 'table', tbl, 'key', k)::text;
        IF octet_length(payload) > {limit} THEN
            payload := jsonb_build_object('op', lower(TG_OP), 'table', tbl, 'keyOmitted', true)::text;
        END IF;
    END IF;
    PERFORM pg_notify({channel}, payload);
    RETURN NULL;
END
$pgactions$"""


def _helper_statements(schema: str, table: str, key: list[str], channel: str) -> tuple[list[str], list[str]]:
    function, trigger = notify_trigger_names(schema, table, channel)
    qualified_fn, qualified_table = quote_identifier(schema, function), quote_identifier(schema, table)
    literal = psql.Literal(channel).as_string(None)
    key_sql = ", ".join(f"{psql.Literal(c).as_string(None)}, rec.{quote_identifier(c)}" for c in key)
    install = [
        _FUNCTION_SQL.format(function=qualified_fn, channel=literal, key=key_sql, limit=KEY_ONLY_BYTES),
        f"DROP TRIGGER IF EXISTS {quote_identifier(trigger)} ON {qualified_table}",
        f"DROP TRIGGER IF EXISTS {quote_identifier(trigger + '_truncate')} ON {qualified_table}",
        f"CREATE TRIGGER {quote_identifier(trigger)} AFTER INSERT OR UPDATE OR DELETE ON {qualified_table} "
        f"FOR EACH ROW EXECUTE FUNCTION {qualified_fn}()",
        f"CREATE TRIGGER {quote_identifier(trigger + '_truncate')} AFTER TRUNCATE ON {qualified_table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {qualified_fn}()",
        f"COMMENT ON FUNCTION {qualified_fn}() IS "
        f"{psql.Literal(f'pgactions: NOTIFY {channel} on changes of {schema}.{table}').as_string(None)}",
    ]
    remove = [
        f"DROP TRIGGER IF EXISTS {quote_identifier(trigger)} ON {qualified_table}",
        f"DROP TRIGGER IF EXISTS {quote_identifier(trigger + '_truncate')} ON {qualified_table}",
        f"DROP FUNCTION IF EXISTS {qualified_fn}()",
    ]
    return install, remove


def _table_facts(target: Runtime | psycopg.Connection[Any], profile: Profile | None,
                 table: str) -> tuple[str, str, list[str]]:
    if isinstance(target, Runtime):
        if profile is None:
            raise ActionError("INVALID_INPUT", "give the connection profile with a Runtime")
        found = _resolve_table(target, profile, table)
    else:
        whole = quote_identifier(table)
        split = quote_identifier(*table.split(".", 1)) if "." in table else None
        row = target.execute(_TABLE_SQL.replace("$1", "%s").replace("$2", "%s"), [whole, split]).fetchone()
        if row is None:
            raise ActionError("UNDEFINED_TABLE", f"table {table!r} does not exist (or this user cannot see it)",
                              extra={"table": table})
        found = _Table(row[0], row[1], list(row[3] or []), {c["name"]: c["notNull"] for c in row[4] or []})
    return found.schema, found.name, found.key


def _run(target: Runtime | psycopg.Connection[Any], profile: Profile | None, statements: list[str]) -> None:
    if isinstance(target, Runtime):
        assert profile is not None
        target.run("run_transaction", profile, {"steps": [
            {"action": "execute_query", "inputs": {"query": s}} for s in statements]})
        return
    with target.transaction():
        for statement in statements:
            target.execute(statement.encode())  # bytes: no client-side placeholders in the function body


def install_notify_trigger(target: Runtime | psycopg.Connection[Any], profile: Profile | None, table: str,
                           channel: str, *, key: list[str] | None = None) -> dict[str, Any]:
    """Install (or replace) a trigger on *table* (``schema.table`` or ``table``) that NOTIFYs
    *channel* of every insert, update, delete (``{op, table, key, row}``; key only when the payload
    would pass ~7,900 bytes) and truncate (``{op, table}``).  *target*: a Runtime (with *profile*;
    the statements run as one Run Transaction) or an open psycopg connection (*profile* unused).
    *key*: the columns that identify a row (default the primary key).  Needs the right to create
    triggers on the table (its owner).  Returns ``{table, channel, function, trigger, key}``."""
    schema, name, primary = _table_facts(target, profile, table)
    columns = list(key or primary)
    if not columns:
        raise ActionError("INVALID_INPUT", f"{schema}.{name} has no primary key: give `key`, the column(s) that "
                                           "identify a row", extra={"field": "key"})
    install, _ = _helper_statements(schema, name, columns, channel)
    _run(target, profile, install)
    function, trigger = notify_trigger_names(schema, name, channel)
    return {"table": f"{schema}.{name}", "channel": channel, "function": f"{schema}.{function}",
            "trigger": trigger, "key": columns}


def remove_notify_trigger(target: Runtime | psycopg.Connection[Any], profile: Profile | None, table: str,
                          channel: str) -> None:
    """Remove what :func:`install_notify_trigger` installed for *table* and *channel* (nothing
    happens when it is not there)."""
    schema, name, primary = _table_facts(target, profile, table)
    _, remove = _helper_statements(schema, name, primary or ["-"], channel)
    _run(target, profile, remove)
