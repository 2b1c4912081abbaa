"""Insert Rows and Upsert Rows: many rows in one call, all or nothing.

Two paths, both typed by the table's own columns:

* **COPY** (Insert Rows without conflict handling or returned rows): rows stream to the server in
  PostgreSQL's COPY format; the server parses each value for its column's type.
* **INSERT … SELECT FROM jsonb_populate_recordset(NULL::table, $1)** otherwise: a chunk of rows
  travels as one jsonb parameter and the server turns it into rows of the table's own type, so a
  chunk needs one parameter whatever its size (PostgreSQL's 65,535-parameter limit never
  applies).  The statement comes from the same builder as Upsert Row (``on_conflict``).

Rows are grouped by the set of columns they give, so a column a row leaves out gets its default
(not NULL).  Everything runs in one transaction; when it fails, the failing row is found (COPY
names its line; otherwise the chunks are replayed inside a rolled-back transaction) and the error
says its index.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any, NoReturn

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pgactions.db.convert import to_json_bytes
from pgactions.db.errormap import error_context
from pgactions.db.output import Output, Rows
from pgactions.db.session import Session
from pgactions.handlers.base import Call
from pgactions.handlers.table_write import (
    DIALECT,
    INSERTED_COLUMN,
    TableInfo,
    always_quoted,
    on_conflict,
    table_info,
)
from pgactions.render.templating import quote_identifier
from pgactions.render.values import bytea_value, json_text
from pgactions.spec.errors import ActionError

__all__ = ["run_insert_rows", "run_upsert_rows"]

CHUNK_ROWS = 2000  # rows per INSERT … SELECT statement (one jsonb parameter each)
_LOCATE_CHUNK = 200  # while looking for a failing row, rows replayed per savepoint
_COPY_LINE = re.compile(r"\bline (\d+)")

_UNIQUE_KEYS_SQL = """
SELECT c.conname, i.indisprimary,
       array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)
FROM pg_index i
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u')
WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
ORDER BY i.indisprimary DESC, c.conname NULLS LAST
"""



class Group:
    """Rows that give the same columns, with their indexes in the input."""

    __slots__ = ("indices", "rows")

    def __init__(self, indices: Sequence[int], rows: list[dict[str, Any]]) -> None:
        self.indices, self.rows = indices, rows

    def __len__(self) -> int:
        return len(self.rows)

    def pairs(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return zip(self.indices, self.rows)

    def chunks(self, size: int) -> Iterator[Group]:
        for start in range(0, len(self.rows), size):
            yield Group(self.indices[start:start + size], self.rows[start:start + size])


Groups = dict[tuple[str, ...], Group]  # the columns given (in the table's order) → their rows


def run_insert_rows(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    info = table_info(session, inputs["table"], inputs.get("schema"))
    groups = _groups(info, inputs["rows"])
    mode = inputs.get("onConflict", "error")
    returning = inputs.get("returning", False)
    if mode == "error" and not returning:
        return Output({"rowCount": _copy(session, info, groups)})
    target: tuple[Any, Any] = (None, None)
    update: list[str] | None = None  # None: no ON CONFLICT clause at all
    if mode != "error":
        target, update = _conflict_plan(session, info, inputs, groups, update=mode == "update")
    outcome = _insert_select(session, info, groups, target, update, returning)
    out: dict[str, Any] = {"rowCount": outcome.inserted + outcome.updated}
    if mode == "skip":
        out["skipped"] = outcome.total - outcome.inserted
    if mode == "update":
        out.update(inserted=outcome.inserted, updated=outcome.updated)
    return Output(out, outcome.rows if returning else None)


def run_upsert_rows(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    info = table_info(session, inputs["table"], inputs.get("schema"))
    groups = _groups(info, inputs["rows"])
    do_nothing = inputs.get("onConflict", "update") == "skip"
    target, update = _conflict_plan(session, info, inputs, groups, update=not do_nothing)
    outcome = _insert_select(session, info, groups, target, update, inputs.get("returning", False))
    out: dict[str, Any] = {"rowCount": outcome.inserted + outcome.updated, "inserted": outcome.inserted,
                           "updated": outcome.updated, "skipped": outcome.total - outcome.inserted - outcome.updated}
    return Output(out, outcome.rows if inputs.get("returning", False) else None)


# -- rows --------------------------------------------------------------------------------------


def _groups(info: TableInfo, rows: list[Any]) -> Groups:
    """Rows grouped by the columns they give.  Usually every row gives the same ones: one group,
    the input list itself, found with one C-level comparison per row."""
    first = rows[0] if rows else None
    if type(first) is dict and first:
        keys = first.keys()
        if all(type(row) is dict and row.keys() == keys for row in rows):
            info.check_columns(list(first), "rows/0")
            return {tuple(c for c in info.columns if c in first): Group(range(len(rows)), rows)}
    groups: dict[tuple[str, ...], Group] = {}
    known: dict[tuple[str, ...], Group] = {}  # a row's keys, in its own order → its group
    for index, row in enumerate(rows):
        if type(row) is not dict or not row:
            raise ActionError("INVALID_INPUT", f"row {index} must be an object with at least one column",
                              extra={"field": f"rows/{index}", "rowIndex": index})
        order = tuple(row)
        group = known.get(order)
        if group is None:
            info.check_columns(list(row), f"rows/{index}")
            columns = tuple(c for c in info.columns if c in row)
            group = known[order] = groups.setdefault(columns, Group([], []))
        group.indices.append(index)  # type: ignore[attr-defined]
        group.rows.append(row)
    return groups


# -- COPY ----------------------------------------------------------------------------------------


def _copy(session: Session, info: TableInfo, groups: Groups) -> int:
    conn = session.conn
    total = 0
    # The action's own transaction (the pipeline's unit) holds every group.
    for columns, rows in groups.items():
        json_columns = [i for i, c in enumerate(columns) if info.columns[c] in ("json", "jsonb")]
        bytea_columns = [i for i, c in enumerate(columns) if info.columns[c] == "bytea"]
        json_arrays = [i for i, c in enumerate(columns) if info.columns[c] in ("_json", "_jsonb")]
        names = ", ".join(quote_identifier(c) for c in columns)
        with conn.cursor() as cur:
            try:
                with cur.copy(f"COPY {info.qualified} ({names}) FROM STDIN") as copy:
                    values_of = _values_getter(columns)
                    for position, row in enumerate(rows.rows):
                        values = values_of(row)
                        if json_columns or bytea_columns or json_arrays:
                            values = list(values)
                            for i in json_columns:
                                value = values[i]
                                if value is not None and type(value) is not str:  # text is JSON already
                                    values[i] = json_text(value)
                            for i in bytea_columns:
                                values[i] = bytea_value(values[i], columns[i])
                            for i in json_arrays:  # each element a JSON value
                                if isinstance(values[i], list):
                                    values[i] = [None if v is None else json_text(v) for v in values[i]]
                        try:
                            copy.write_row(values)
                        except (psycopg.ProgrammingError, psycopg.DataError, TypeError) as exc:
                            index = rows.indices[position]
                            raise ActionError("INVALID_VALUE", f"row {index}: {exc}",
                                              extra={"rowIndex": index}) from None
            except psycopg.Error as exc:
                _raise_for_row(exc, _copy_row_index(exc, rows))
        total += len(rows)
    return total


def _values_getter(columns: tuple[str, ...]) -> Any:
    """row → its values in *columns* order, as a tuple (itemgetter returns a bare value for one)."""
    if len(columns) == 1:
        only = columns[0]
        return lambda row: (row[only],)
    return itemgetter(*columns)


def _copy_row_index(exc: psycopg.Error, rows: Group) -> int | None:
    """COPY's error context says 'COPY t, line 117, column …': line n is the group's row n."""
    match = _COPY_LINE.search(exc.diag.context or "") if exc.diag else None
    if match and 1 <= int(match.group(1)) <= len(rows):
        return rows.indices[int(match.group(1)) - 1]
    return None


# -- INSERT … SELECT -------------------------------------------------------------------------


class _Outcome:
    def __init__(self, rows: Rows) -> None:
        self.total = 0
        self.inserted = 0
        self.updated = 0
        self.rows = rows  # returned rows, serialized through the output budget as they come


def _conflict_plan(session: Session, info: TableInfo, inputs: dict[str, Any],
                   groups: Groups, update: bool) -> tuple[Any, list[str] | None]:
    """((conflict columns, constraint name), columns to update) for the ON CONFLICT clause."""
    constraint = inputs.get("constraint")
    columns = inputs.get("conflictColumns")
    if constraint and columns:
        raise ActionError("INVALID_INPUT", "give conflictColumns or constraint, not both",
                          extra={"field": "constraint"})
    if columns:
        info.check_columns(columns, "conflictColumns")
    elif not constraint and (update or inputs.get("onConflict") == "update"):
        columns = _default_key(session, info)
    given = {c for group in groups for c in group}
    if update:
        wanted = inputs.get("updateColumns")
        if wanted is not None:
            info.check_columns(wanted, "updateColumns")
        keys = set(columns or ())
        update_columns = [c for c in (wanted if wanted is not None else info.columns) if c in given and c not in keys]
        if columns:
            _refuse_repeated_keys(groups, columns)
            missing = [c for c in columns if any(c not in group for group in groups)]
            if missing:
                raise ActionError("INVALID_INPUT", f"every row needs a value for the conflict column(s) "
                                                   f"{', '.join(missing)}", extra={"field": "rows"})
        return (columns, constraint), update_columns
    return (columns, constraint), []


def _default_key(session: Session, info: TableInfo) -> list[str]:
    """The primary key, else the table's only unique key."""
    keys = session.conn.execute(_UNIQUE_KEYS_SQL, [info.qualified]).fetchall()
    if not keys:
        raise ActionError("INVALID_INPUT", f"{info.display} has no primary key or unique constraint to match "
                                           "rows on; give conflictColumns", extra={"field": "conflictColumns"})
    primary = [k for k in keys if k[1]]
    if primary:
        return list(primary[0][2])
    if len(keys) > 1:
        listed = "; ".join(f"{name or 'unique index'} ({', '.join(cols)})" for name, _p, cols in keys)
        raise ActionError("INVALID_INPUT", f"{info.display} has several unique keys ({listed}): name one in "
                                           "conflictColumns or constraint", extra={"field": "conflictColumns"})
    return list(keys[0][2])


def _refuse_repeated_keys(groups: Groups, columns: list[str]) -> None:
    """PostgreSQL refuses to update one row twice in a statement; say which rows repeat a key."""
    seen: dict[Any, int] = {}
    for rows in groups.values():
        for index, row in rows.pairs():
            key: Any = tuple([row.get(c) for c in columns])
            try:
                hash(key)
            except TypeError:  # a list or object in a key column: compare its JSON
                key = orjson.dumps(list(key), option=orjson.OPT_NON_STR_KEYS)
            if key in seen:
                raise ActionError("INVALID_INPUT", f"rows {seen[key]} and {index} have the same "
                                                   f"{', '.join(columns)}: give each key once",
                                  extra={"field": f"rows/{index}", "rowIndex": index})
            seen[key] = index


def _statement(info: TableInfo, columns: tuple[str, ...], target: tuple[Any, Any],
               update: list[str] | None, returning: bool) -> str:
    table = info.sa_table()
    source = sa.func.jsonb_populate_recordset(sa.literal_column(f"NULL::{info.qualified}"),
                                              sa.bindparam("rows", type_=sa.types.NullType()))
    rows = source.table_valued(*(sa.column(always_quoted(c)) for c in columns)).alias("r")
    insert: Any = postgresql.insert(table).from_select(list(columns), sa.select(*(rows.c[c] for c in columns)))
    if update is not None:
        insert = on_conflict(insert, target[0], target[1], update)
    returned = [*table.c] if returning else []
    return str(insert.returning(*returned, INSERTED_COLUMN).compile(dialect=DIALECT))


def _insert_select(session: Session, info: TableInfo, groups: Groups,
                   target: tuple[Any, Any], update: list[str] | None, returning: bool) -> _Outcome:
    outcome = _Outcome(Rows())
    plans = [(_statement(info, columns, target, update, returning), columns, rows) for columns, rows in groups.items()]
    try:
        with session.conn.transaction():  # a savepoint in the action's transaction: see _locate
            for sql, columns, rows in plans:
                for chunk in rows.chunks(CHUNK_ROWS):
                    _run_chunk(session, info, sql, columns, chunk, outcome, returning)
    except psycopg.Error as exc:
        if (exc.sqlstate or "").startswith("42"):  # the statement itself is wrong (an unknown constraint …)
            _raise_for_row(exc, None)
        index, own = _locate(session, info, plans)
        _raise_for_row(own or exc, index)
    return outcome


def _run_chunk(session: Session, info: TableInfo, sql: str, columns: tuple[str, ...], chunk: Group,
               outcome: _Outcome | None, returning: bool) -> None:
    if any(info.columns[c] in ("json", "jsonb", "bytea") for c in columns):
        rows = [_json_row(info, columns, index, row) for index, row in chunk.pairs()]
    else:
        rows = chunk.rows
    payload = json_text(rows)
    cur = session.conn.execute(sql, {"rows": payload})
    if outcome is None:
        return
    outcome.total += len(chunk)
    names = [d.name for d in cur.description or ()][:-1]
    batch = cur.fetchall() if cur.description else []
    inserted = sum(1 for row in batch if row[-1])
    outcome.inserted += inserted
    outcome.updated += len(batch) - inserted
    if returning and batch:
        outcome.rows.append_batch(to_json_bytes([dict(zip(names, row[:-1])) for row in batch]), len(batch),
                                  session.budget)


def _json_row(info: TableInfo, columns: tuple[str, ...], index: int, row: dict[str, Any]) -> dict[str, Any]:
    """A row for jsonb_populate_recordset; text given for a json column is JSON text (as in Insert Row)."""
    out = dict(row)
    for c in columns:
        value = row[c]
        if info.columns[c] == "bytea" and type(value) is str:
            decoded = bytea_value(value, c)
            out[c] = decoded if type(decoded) is str else "\\x" + decoded.hex()
        elif type(value) is str and info.columns[c] in ("json", "jsonb"):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ActionError("INVALID_VALUE", f"row {index}, column {c}: the text is not valid JSON",
                                  extra={"rowIndex": index, "column": c}) from None
            out[c] = value
    return out


def _locate(session: Session, info: TableInfo, plans: list[Any]) -> tuple[int | None, psycopg.Error | None]:
    """Replay the rows in a savepoint that is rolled back, a few hundred per nested savepoint,
    then one by one in the chunk that fails: the first failing row and its own error."""
    conn = session.conn
    try:
        with conn.transaction(force_rollback=True):
            for sql, columns, rows in plans:
                for chunk in rows.chunks(_LOCATE_CHUNK):
                    try:
                        with conn.transaction():
                            _run_chunk(session, info, sql, columns, chunk, None, False)
                        continue
                    except psycopg.Error:
                        pass
                    for single in chunk.chunks(1):
                        try:
                            with conn.transaction():
                                _run_chunk(session, info, sql, columns, single, None, False)
                        except psycopg.Error as exc:
                            return single.indices[0], exc
    except psycopg.Error:
        pass  # could not replay (a lost connection …): report the original failure
    return None, None


def _raise_for_row(exc: psycopg.Error, index: int | None) -> NoReturn:
    """Raise the driver's error (mapped at the boundary) naming the row, if it is known."""
    if index is None:
        with error_context(None, rolledBack=True):
            raise exc from None
    with error_context(f"row {index}", rowIndex=index, rolledBack=True):
        raise exc from None
