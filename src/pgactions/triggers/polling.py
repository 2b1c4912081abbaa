"""Polling triggers: ``new_rows`` (by an ordering column) and ``new_or_updated_rows`` (by an
updated-at column), read by keyset with a checkpoint the host keeps (docs/triggers-polling.md).

    source = open_polling(runtime, profile, "new_rows", {"table": "orders", "orderBy": "id"}, checkpoint)
    batch = source.poll(timeout=5.0)    # Batch(events, checkpoint)
    ...deliver batch.events, store batch.checkpoint...

**The position.**  Rows are read in the order of ``(column, key…)`` — the ordering (or updated-at)
column, then the primary key as tie-breaker — after the position of the last row delivered:
``(col, pk) > (last_col, last_pk)``, ``ORDER BY col, pk LIMIT batchSize``.  Every query is a Find
Rows action run through :meth:`Runtime.run`, so rows come in the JSON forms of query results
(docs/types.md), identifiers are quoted and values bound as in Find Rows, the ``where`` filters are
Find Rows' own, and the output cap applies (a batch that would pass it is halved until it fits).

**Late commits.**  A transaction that took its sequence value or timestamp before a later row
committed, and commits after that row was polled, would be behind the position and never read.
With ``lookBackSeconds`` > 0 every poll also reads the keys of the rows behind the position down
to a *low-water mark* — the position the poller had reached ``lookBackSeconds`` before the
previous poll began (recorded in the checkpoint with the time, ``marks``) — and delivers the rows
not in the checkpoint's ``seen`` list (the positions — key and version — already delivered above
the low-water mark).  A transaction that commits within ``lookBackSeconds`` of taking its value is
delivered exactly once; later than that it may be missed (the documented caveat).  No clock of the
database is compared with the poller's: the marks are positions the poller saw, timed by itself.

**The checkpoint** is a JSON-ready dict (``CHECKPOINT_VERSION``)::

    {"v": 1, "trigger": "new_rows", "table": "public.orders", "columns": ["created_at", "id"],
     "position": ["2026-01-15T10:30:00.123456Z", 41] | null,      # null: before every row
     "marks": [[unix_time, position | null], ...],                # where the poller was, when
     "seen": [[...position], ...],                                # delivered, above the low-water mark
     "floor": position | null,                                    # the look-back never goes below it
     "since": unix_time | null}                                   # start of the previous poll

The runtime keeps nothing between runs: the source's state is its checkpoint.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

from pgactions import ActionError, Runtime
from pgactions.connection.profiles import ConnectionProfile
from pgactions.render.identifiers import quote_identifier
from pgactions.triggers.base import Batch

__all__ = ["CHECKPOINT_VERSION", "DEFAULT_BATCH_SIZE", "DEFAULT_LOOK_BACK_SECONDS", "MAX_SEEN", "PollingSource",
           "check_polling", "explain_poll", "open_polling"]

CHECKPOINT_VERSION = 1
DEFAULT_BATCH_SIZE = 100
MAX_BATCH_SIZE = 10_000
DEFAULT_LOOK_BACK_SECONDS = 10.0
# The look-back re-reads at most this many rows' keys; beyond it the window is cut (docs).
MAX_SEEN = 10_000
# Marks kept per look-back window: a new one at most every lookBack / _MARKS_PER_WINDOW seconds.
_MARKS_PER_WINDOW = 16
TRIGGERS = {"new_rows": "orderBy", "new_or_updated_rows": "updatedAt"}
_INPUTS = {
    "new_rows": {"table", "orderBy", "startFrom", "batchSize", "columns", "where", "lookBackSeconds", "key"},
    "new_or_updated_rows": {"table", "updatedAt", "key", "startFrom", "batchSize", "columns", "where",
                            "lookBackSeconds", "createdAt"},
}

Position = list[Any]
Profile = str | dict[str, Any] | ConnectionProfile

_TABLE_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind,
       (SELECT coalesce(json_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum)), '[]')
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = c.oid AND i.indisprimary) AS key,
       (SELECT json_agg(json_build_object('name', a.attname, 'notNull', a.attnotnull) ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = coalesce(to_regclass($1), to_regclass($2))
"""

# Indexes of the table whose first column is $2 (their columns in order).
_INDEX_SQL = """
SELECT ci.relname AS index, (SELECT json_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
                              FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) AS columns
  FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
  JOIN pg_attribute a0 ON a0.attrelid = i.indrelid AND a0.attnum = i.indkey[0]
 WHERE i.indrelid = to_regclass($1) AND a0.attname = $2 AND i.indpred IS NULL AND i.indisvalid
"""


class _Table:
    """The table a trigger reads: its real schema and name, primary key and columns."""

    def __init__(self, schema: str, name: str, key: list[str], columns: dict[str, bool]) -> None:
        self.schema, self.name, self.key, self.columns = schema, name, key, columns
        self.display = f"{schema}.{name}"
        self.quoted = quote_identifier(schema, name)


def _resolve_table(runtime: Runtime, profile: Profile, table: str) -> _Table:
    """``schema.table`` or ``table`` (the profile's search path): a table named exactly so first,
    then the text split at its first dot."""
    if not isinstance(table, str) or not table:
        raise ActionError("INVALID_INPUT", "table: give the table's name, as `table` or `schema.table`",
                          extra={"field": "table"})
    split = quote_identifier(*table.split(".", 1)) if "." in table else None
    try:
        whole: str | None = quote_identifier(table)
    except ActionError:
        if split is None:
            raise
        whole = None  # too long as one name, fine as schema.table
    rows = runtime.run("query_rows", profile, {"query": _TABLE_SQL, "parameters": [whole, split]}).data["rows"]
    if not rows:
        raise ActionError("UNDEFINED_TABLE", f"table {table!r} does not exist (or this user cannot see it)",
                          extra={"table": table})
    row = rows[0]
    return _Table(row["schema"], row["name"], list(row["key"] or []),
                  {c["name"]: bool(c["notNull"]) for c in row["columns"] or []})


def _invalid(field: str, message: str) -> ActionError:
    return ActionError("INVALID_INPUT", f"{field}: {message}", extra={"field": field})


def _check_column(table: _Table, column: Any, field: str) -> str:
    if not isinstance(column, str) or not column:
        raise _invalid(field, "give a column name")
    if column not in table.columns:
        raise ActionError("UNDEFINED_COLUMN", f"{field}: {column!r} is not a column of {table.display}; its "
                                              f"columns are: {', '.join(table.columns)}",
                          extra={"field": field, "columns": list(table.columns)})
    return column


# -- structured where conditions for keyset ranges (Find Rows' operators) ---------------------------

def _after(columns: list[str], position: Position) -> list[dict[str, Any]]:
    """``(c0, c1 …) > (v0, v1 …)`` as Find Rows conditions, with a redundant ``c0 >= v0`` first so
    PostgreSQL scans an index on c0 from the position instead of reading the table."""
    alternatives: list[dict[str, Any]] = []
    for i, column in enumerate(columns):
        equal = [{"column": columns[j], "operator": "eq", "value": position[j]} for j in range(i)]
        greater = {"column": column, "operator": "gt", "value": position[i]}
        alternatives.append({"and": [*equal, greater]} if equal else greater)
    if len(columns) == 1:
        return alternatives
    return [{"column": columns[0], "operator": "gte", "value": position[0]}, {"or": alternatives}]


def _not_after(columns: list[str], position: Position) -> list[dict[str, Any]]:
    """``(c0, c1 …) <= (v0, v1 …)``."""
    alternatives: list[dict[str, Any]] = []
    for i, column in enumerate(columns):
        equal = [{"column": columns[j], "operator": "eq", "value": position[j]} for j in range(i)]
        less = {"column": column, "operator": "lt", "value": position[i]}
        alternatives.append({"and": [*equal, less]} if equal else less)
    alternatives.append({"and": [{"column": c, "operator": "eq", "value": v} for c, v in zip(columns, position)]})
    if len(columns) == 1:
        return [{"column": columns[0], "operator": "lte", "value": position[0]}]
    return [{"column": columns[0], "operator": "lte", "value": position[0]}, {"or": alternatives}]


def _at(columns: list[str], positions: list[Position]) -> dict[str, Any]:
    """Rows at exactly one of *positions*."""
    return {"or": [{"and": [{"column": c, "operator": "eq", "value": v} for c, v in zip(columns, p)]}
                   for p in positions]}


class PollingSource:
    """A polling trigger (see the module's docstring); made by :func:`open_polling`."""

    def __init__(self, runtime: Runtime, profile: Profile, trigger_id: str, inputs: dict[str, Any],
                 checkpoint: dict[str, Any] | None, *, interval: float = 1.0, max_seen: int = MAX_SEEN,
                 clock: Callable[[], float] = time.time) -> None:
        if trigger_id not in TRIGGERS:
            raise ActionError("INVALID_INPUT", f"unknown polling trigger {trigger_id!r}: use "
                                               f"{' or '.join(TRIGGERS)}", extra={"field": "trigger"})
        if not isinstance(inputs, dict):
            raise _invalid("inputs", "must be an object")
        unknown = sorted(set(inputs) - _INPUTS[trigger_id])
        if unknown:
            raise _invalid(unknown[0], f"not an input of {trigger_id} (its inputs: "
                                       f"{', '.join(sorted(_INPUTS[trigger_id]))})")
        self.runtime, self.profile, self.trigger_id = runtime, profile, trigger_id
        self.interval, self.max_seen, self.clock = interval, max_seen, clock
        self.table = _resolve_table(runtime, profile, inputs.get("table"))  # type: ignore[arg-type]
        order_field = TRIGGERS[trigger_id]
        self.order = _check_column(self.table, inputs.get(order_field), order_field)
        key = inputs.get("key") or self.table.key
        if isinstance(key, str):
            key = [key]
        if not isinstance(key, list) or not key:
            raise _invalid("key", f"{self.table.display} has no primary key: give `key`, the column(s) that "
                                  "identify a row")
        self.key = [_check_column(self.table, k, f"key/{i}") for i, k in enumerate(key)]
        self.columns = [self.order] + [k for k in self.key if k != self.order]  # the position
        self.created = (_check_column(self.table, inputs["createdAt"], "createdAt")
                        if inputs.get("createdAt") is not None else None)
        selected = inputs.get("columns")
        if selected is not None:
            if not isinstance(selected, list) or not selected:
                raise _invalid("columns", "give a non-empty list of column names")
            selected = [_check_column(self.table, c, f"columns/{i}") for i, c in enumerate(selected)]
        self.selected: list[str] | None = selected
        where = inputs.get("where") or []
        if not isinstance(where, list):
            raise _invalid("where", "give a list of conditions (Find Rows' where)")
        self.where: list[Any] = where
        start = inputs.get("startFrom", "now")
        if start not in ("now", "beginning"):
            raise _invalid("startFrom", "use \"now\" (only rows from now on, the default) or \"beginning\"")
        self.start_from = start
        batch = inputs.get("batchSize", DEFAULT_BATCH_SIZE)
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH_SIZE:
            raise _invalid("batchSize", f"give a whole number from 1 to {MAX_BATCH_SIZE:,}")
        self.batch_size = batch
        look_back = inputs.get("lookBackSeconds", DEFAULT_LOOK_BACK_SECONDS)
        if isinstance(look_back, bool) or not isinstance(look_back, (int, float)) or not 0 <= look_back <= 86_400:
            raise _invalid("lookBackSeconds", "give a number of seconds from 0 to 86400")
        self.look_back = float(look_back)
        self._cap = batch  # halved while a batch would pass the output cap
        self._state = self._load(checkpoint)
        # Catching up (the last round's fresh rows filled the batch, no late rows left waiting):
        # and the fresh rows delivered since the last look-back.
        self._full, self._unchecked = False, 0

    # -- checkpoint --------------------------------------------------------------------------------
    def _load(self, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
        if checkpoint is None:
            return {"v": CHECKPOINT_VERSION, "trigger": self.trigger_id, "table": self.table.display,
                    "columns": self.columns, "position": None, "started": False, "marks": [], "seen": [],
                    "floor": None, "since": None}
        if not isinstance(checkpoint, dict) or checkpoint.get("v") != CHECKPOINT_VERSION:
            raise _invalid("checkpoint", "not a checkpoint of a polling trigger (or of another version)")
        mine = (self.trigger_id, self.table.display, self.columns)
        theirs = (checkpoint.get("trigger"), checkpoint.get("table"), checkpoint.get("columns"))
        if mine != theirs:
            raise _invalid("checkpoint", f"it belongs to {theirs[0]} on {theirs[1]} by {theirs[2]}, not "
                                         f"{mine[0]} on {mine[1]} by {mine[2]}")
        state = dict(checkpoint)
        # Copies: the source changes its lists, and the caller's checkpoint must stay as it was.
        state["marks"] = [list(m) for m in state.get("marks") or []]
        state["seen"] = [list(p) for p in state.get("seen") or []]
        state.setdefault("floor", None)
        state.setdefault("since", None)
        state["started"] = bool(state["marks"]) or state.get("position") is not None  # else startFrom applies
        return state

    @property
    def checkpoint(self) -> dict[str, Any]:
        """The current checkpoint (a copy): everything delivered so far is behind it."""
        state = self._state
        return {"v": CHECKPOINT_VERSION, "trigger": self.trigger_id, "table": self.table.display,
                "columns": list(self.columns), "position": state["position"],
                "marks": [list(m) for m in state["marks"]], "seen": [list(s) for s in state["seen"]],
                "floor": state["floor"], "since": state["since"]}

    # -- the source interface ----------------------------------------------------------------------
    def poll(self, timeout: float) -> Batch:
        """Read once; while nothing came, again every ``interval`` seconds until *timeout*."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            events = self._round()
            left = deadline - time.monotonic()
            if events or left <= 0:
                return Batch(events, self.checkpoint)
            time.sleep(min(self.interval, left))

    def ack(self, checkpoint: dict[str, Any] | None) -> None:
        """Nothing is held on the server: the checkpoint is the whole state."""

    def close(self) -> None:
        """Nothing to release: the runtime owns the pooled connections."""

    # -- one round -----------------------------------------------------------------------------------
    def _find(self, where: list[Any], *, select: list[str] | None = None, descending: bool = False,
              limit: int) -> list[dict[str, Any]]:
        inputs: dict[str, Any] = {
            "table": self.table.name, "schema": self.table.schema, "where": [*self.where, *where],
            "orderBy": [{"column": c, "direction": "desc" if descending else "asc"} for c in self.columns],
            "limit": limit,
        }
        if select is not None:
            inputs["select"] = select
        return self.runtime.run("find_rows", self.profile, inputs).data["rows"]  # type: ignore[no-any-return]

    def _find_capped(self, where: list[Any], limit: int) -> list[dict[str, Any]]:
        """Whole rows, at most *limit*, fewer while they would pass the output cap."""
        select = None
        if self.selected is not None:
            select = self.selected + [c for c in self.columns + ([self.created] if self.created else [])
                                      if c not in self.selected]
        while True:
            try:
                return self._find(where, select=select, limit=min(limit, self._cap))
            except ActionError as exc:
                if exc.code != "RESULT_TOO_LARGE" or min(limit, self._cap) <= 1:
                    raise
                self._cap = max(1, min(limit, self._cap) // 2)

    def _position(self, row: dict[str, Any]) -> Position:
        return [row[c] for c in self.columns]

    def _event(self, row: dict[str, Any]) -> dict[str, Any]:
        op = "insert"
        if self.trigger_id == "new_or_updated_rows":
            op = "insert" if self.created is not None and row.get(self.created) == row.get(self.order) else "update"
        after = {c: row[c] for c in self.selected} if self.selected is not None else row
        return {"op": op, "table": self.table.display, "after": after}

    def _round(self) -> list[dict[str, Any]]:
        state = self._state
        started_at = self.clock()
        if not state["started"]:
            if self.start_from == "now":  # a failed read leaves the state as it was: the next poll starts again
                last = self._find([{"column": self.order, "operator": "is not null"}], select=self.columns,
                                  descending=True, limit=1)
                state["started"] = True
                state["position"] = self._position(last[0]) if last else None
                state["marks"] = [[self.clock(), state["position"]]]
                state["since"] = started_at
                return []
            state["started"] = True
            state["marks"] = [[started_at, None]]
        position: Position | None = state["position"]
        # While catching up, the look-back (the keys of up to max_seen rows behind the position)
        # would cost more than the batch itself: it runs every few rounds instead, before the rows
        # delivered since reach half of its window, and then reads that many keys more — so it
        # reaches as far behind the position of its previous run as it did when it ran each round.
        skip = self._full and self._unchecked + self.batch_size <= self.max_seen // 2
        late, pending, seen = (([], False, state["seen"]) if skip
                               else self._look_back(position, self.max_seen + self._unchecked))
        fresh: list[dict[str, Any]] = []
        room = self.batch_size - len(late)
        if room > 0:
            fresh_where = ([{"column": self.order, "operator": "is not null"}] if position is None
                           else _after(self.columns, position))
            fresh = self._find_capped(fresh_where, room)
        read_at = self.clock()  # after the read: every row behind the new position was visible by then
        if fresh:
            state["position"] = self._position(fresh[-1])
        if self.look_back > 0:
            state["seen"] = seen + [self._position(r) for r in late] + [self._position(r) for r in fresh]
        if not pending and not skip:
            state["since"] = started_at  # else the next poll looks back as far as this one did
        self._full = not pending and room > 0 and len(fresh) >= room
        self._unchecked = self._unchecked + len(fresh) if skip else len(fresh)
        self._add_mark(read_at, state["position"])
        return [self._event(r) for r in late] + [self._event(r) for r in fresh]

    def _low_water(self) -> tuple[Position | None, int]:
        """The newest mark made at least lookBack seconds before the previous poll began (the
        oldest when none is that old), and its index."""
        marks = self._state["marks"]
        since = self._state["since"]
        if not marks:
            return self._state["position"], -1
        threshold = (since if since is not None else self.clock()) - self.look_back
        index = bisect.bisect_right([m[0] for m in marks], threshold) - 1
        index = max(index, 0)
        return marks[index][1], index

    def _look_back(self, position: Position | None,
                   reach: int) -> tuple[list[dict[str, Any]], bool, list[Position]]:
        """Rows behind *position*, above the low-water mark, not delivered yet (as whole rows,
        oldest first, at most a batch); whether more such rows wait; the seen positions still in
        the window.  At most *reach* keys are read (the window's older end is cut there)."""
        state = self._state
        if self.look_back <= 0 or position is None:
            return [], False, []
        low, index = self._low_water()
        state["marks"] = state["marks"][max(index, 0):]  # older marks are never chosen again
        where = _not_after(self.columns, position)
        if low is not None:
            where += _after(self.columns, low)
        if state["floor"] is not None:
            where += _after(self.columns, state["floor"])
        keys = self._find(where, select=self.columns, descending=True, limit=reach + 1)
        if len(keys) > reach:  # the window holds more rows than the look-back keeps
            state["floor"] = self._position(keys[reach])
            keys = keys[:reach]
        delivered = {_hashable(p) for p in state["seen"]}
        in_window = [self._position(k) for k in reversed(keys)]  # oldest first
        seen = [p for p in in_window if _hashable(p) in delivered]
        unseen = [p for p in in_window if _hashable(p) not in delivered]
        if not unseen:
            return [], False, seen
        wanted = unseen[: self.batch_size]
        rows = self._find_capped([_at(self.columns, wanted)], len(wanted))
        # A row updated since its key was read has another position now: it comes as a fresh one.
        return rows, len(unseen) > len(wanted), seen

    def _add_mark(self, at: float, position: Position | None) -> None:
        marks = self._state["marks"]
        if self.look_back <= 0:  # no look-back: only the latest mark matters (the source has started)
            marks[:] = [[at, position]]
            return
        spacing = self.look_back / _MARKS_PER_WINDOW
        if not marks or at - marks[-1][0] >= spacing:
            marks.append([at, position])
        # else too soon after the last mark: skipping one only makes the look-back reach further back


def _hashable(position: Position) -> tuple[Any, ...]:
    return tuple(_hashable(v) if isinstance(v, list) else repr(v) if isinstance(v, dict) else v for v in position)


def open_polling(runtime: Runtime, profile: Profile, trigger_id: str, inputs: dict[str, Any],
                 checkpoint: dict[str, Any] | None, *, interval: float = 1.0,
                 max_seen: int = MAX_SEEN) -> PollingSource:
    """A polling trigger source (:class:`pgactions.triggers.base.TriggerSource`).

    *trigger_id*: ``new_rows`` (inputs ``{table, orderBy, startFrom?, batchSize?, columns?, where?,
    lookBackSeconds?, key?}``) or ``new_or_updated_rows`` (``{table, updatedAt, key?, createdAt?,
    startFrom?, batchSize?, columns?, where?, lookBackSeconds?}``).  *checkpoint*: one this source
    (same trigger, table and position columns) returned before, or None to start fresh.
    *interval*: seconds between reads while :meth:`~PollingSource.poll` waits for rows.
    *max_seen*: at most this many rows are re-read by the look-back.  Raises :class:`ActionError`
    (INVALID_INPUT, UNDEFINED_TABLE, UNDEFINED_COLUMN, or any error of Find Rows) for bad inputs.
    """
    return PollingSource(runtime, profile, trigger_id, inputs, checkpoint, interval=interval, max_seen=max_seen)


# -- checks -----------------------------------------------------------------------------------------

def explain_poll(runtime: Runtime, profile: Profile, inputs: dict[str, Any], trigger_id: str | None = None) -> str:
    """The plan (EXPLAIN text) of a poll's keyset query after the table's newest row: the same
    range conditions, order and limit a poll uses; empty when the table has no rows."""
    table, columns = _checked(runtime, profile, inputs, trigger_id)
    order_by = ", ".join(quote_identifier(c) for c in columns)
    newest = runtime.run("query_rows", profile, {
        "query": f"SELECT {order_by} FROM {table.quoted} WHERE {quote_identifier(columns[0])} IS NOT NULL "
                 f"ORDER BY {', '.join(quote_identifier(c) + ' DESC' for c in columns)} LIMIT 1"}).data["rows"]
    if not newest:
        return ""
    values = [newest[0][c] for c in columns]
    first = quote_identifier(columns[0])
    alternatives = []
    for i, column in enumerate(columns):
        parts = [f"{quote_identifier(columns[j])} = ${j + 1}" for j in range(i)]
        parts.append(f"{quote_identifier(column)} > ${i + 1}")
        alternatives.append("(" + " AND ".join(parts) + ")")
    limit = inputs.get("batchSize", DEFAULT_BATCH_SIZE)
    sql = (f"EXPLAIN SELECT * FROM {table.quoted} WHERE {first} >= $1 AND ({' OR '.join(alternatives)}) "
           f"ORDER BY {order_by} LIMIT {int(limit)}")
    rows = runtime.run("query_rows", profile, {"query": sql, "parameters": values}).data["rows"]
    return "\n".join(str(next(iter(r.values()))) for r in rows)


def _checked(runtime: Runtime, profile: Profile, inputs: dict[str, Any],
             trigger_id: str | None) -> tuple[_Table, list[str]]:
    field = TRIGGERS[trigger_id] if trigger_id else ("updatedAt" if "updatedAt" in inputs else "orderBy")
    table = _resolve_table(runtime, profile, inputs.get("table"))  # type: ignore[arg-type]
    order = _check_column(table, inputs.get(field), field)
    key = inputs.get("key") or table.key
    key = [key] if isinstance(key, str) else list(key or [])
    return table, [order] + [k for k in key if k != order]


def check_polling(runtime: Runtime, profile: Profile, inputs: dict[str, Any],
                  trigger_id: str | None = None) -> list[str]:
    """Warnings about a polling trigger's set-up, in test-connection's style (sentences saying what
    to do): no index starting with the ordering column (every poll would read the whole table), a
    plan with a sequential scan, a nullable ordering column, no key.  Empty: nothing to warn about.
    Raises :class:`ActionError` for a table or column that does not exist."""
    table, columns = _checked(runtime, profile, inputs, trigger_id)
    order = columns[0]
    warnings = []
    if not (inputs.get("key") or table.key):
        warnings.append(f"{table.display} has no primary key: give `key`, the column(s) that identify a row, "
                        "or rows with equal values of the ordering column may be skipped.")
    indexes = runtime.run("query_rows", profile, {"query": _INDEX_SQL,
                                                  "parameters": [table.quoted, order]}).data["rows"]
    wanted = ", ".join(quote_identifier(c) for c in columns)
    if not indexes:
        warnings.append(f"No index of {table.display} starts with {order!r}: every poll reads the whole table. "
                        f"Create one: CREATE INDEX ON {table.quoted} ({wanted});")
    if not table.columns.get(order, False):
        warnings.append(f"{table.display}.{order} may be NULL: rows where it is NULL are never delivered. Make "
                        f"it NOT NULL with a default (e.g. DEFAULT now()).")
    plan = explain_poll(runtime, profile, inputs, trigger_id)
    if "Seq Scan" in plan and indexes:
        warnings.append(f"PostgreSQL plans a poll of {table.display} as a sequential scan (it reads the whole "
                        f"table); an index on ({wanted}) lets it read only the new rows.")
    return warnings
