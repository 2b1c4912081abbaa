"""Insert Row and Upsert Row: statements built with SQLAlchemy Core from the table's real columns.

Identifiers are quoted by SQLAlchemy and every value is a bound parameter.  The table's columns,
their types and its primary key come from the catalog in one query, so an unknown column is a
friendly UNDEFINED_COLUMN listing the real ones, json/jsonb columns get objects as jsonb, and
``insertedId`` is the primary key whatever its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pgactions.db.output import Output
from pgactions.db.session import Session
from pgactions.handlers.base import Call
from pgactions.render.templating import quote_identifier
from pgactions.render.values import column_value
from pgactions.spec.errors import ActionError

__all__ = ["DIALECT", "INSERTED_COLUMN", "TableInfo", "always_quoted", "bound_values", "on_conflict", "run_insert", "run_upsert",
           "table_info", "typed_values"]

DIALECT = postgresql.psycopg.dialect()
_INSERTED_FLAG = "_pgactions_inserted"

_TABLE_COLUMNS_SQL = """
SELECT a.attname, t.typname, t.typcategory,
       array_position(i.indkey::int2[], a.attnum) AS pk_position,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class TableInfo:
    schema: str | None
    name: str
    columns: dict[str, str]  # name → type name
    primary_key: tuple[str, ...]
    sql_types: dict[str, str]  # name → the type as SQL (format_type), for casts

    @property
    def qualified(self) -> str:
        return quote_identifier(*([self.schema] if self.schema else []), self.name)

    def sa_table(self) -> sa.Table:
        """The table for SQLAlchemy Core, every name always quoted: SQLAlchemy leaves "plain" names
        bare, and its test for plain lets a trailing newline through ("items\n" would name items)."""
        return sa.Table(always_quoted(self.name), sa.MetaData(), *(sa.Column(always_quoted(c)) for c in self.columns),
                        schema=always_quoted(self.schema) if self.schema else None)

    def check_columns(self, names: list[str], field: str) -> None:
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            raise ActionError(
                "UNDEFINED_COLUMN",
                f"{', '.join(map(repr, unknown))} {'is not a column' if len(unknown) == 1 else 'are not columns'} "
                f"of {self.display}; its columns are: {', '.join(self.columns)}",
                extra={"field": field, "columns": list(self.columns)})

    @property
    def all_names(self) -> str:
        """The schema, table and column names in one text (to look for a character in any)."""
        return "\0".join([self.schema or "", self.name, *self.columns])

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def table_info(session: Session, table: str, schema: str | None) -> TableInfo:
    qualified = quote_identifier(*([schema] if schema else []), table)
    rows = session.conn.execute(_TABLE_COLUMNS_SQL, [qualified]).fetchall()
    if not rows:
        where = f"schema {schema!r}" if schema else "the connection's search path"
        hint = ""
        if "." in table and not schema:
            hint = f"; to name a schema, put {table.split('.', 1)[0]!r} in the schema field"
        raise ActionError("UNDEFINED_TABLE", f"table {table!r} was not found in {where}{hint}",
                          extra={"table": table})
    columns = {r[0]: r[1] for r in rows}
    pk = tuple(r[0] for r in sorted((r for r in rows if r[3] is not None), key=lambda r: r[3]))
    return TableInfo(schema, table, columns, pk, {r[0]: r[4] for r in rows})


def always_quoted(name: str) -> sa.sql.quoted_name:
    return sa.sql.quoted_name(name, True)


def typed_values(info: TableInfo, columns: dict[str, Any]) -> dict[str, Any]:
    """Each value bound as its column's type needs (json as jsonb, bytea from base64 …)."""
    return {name: column_value(value, info.columns[name], name) for name, value in columns.items()}


def _execute_returning(session: Session, stmt: sa.sql.expression.ClauseElement) -> dict[str, Any]:
    """Run a one-row INSERT … RETURNING; the row is read through the output budget like any."""
    compiled = stmt.compile(dialect=DIALECT)
    rows = session.query(str(compiled), compiled.params)
    return rows[0] if rows else {}


def _inserted_id(info: TableInfo, row: dict[str, Any]) -> Any:
    if not info.primary_key:
        return None
    if len(info.primary_key) == 1:
        return row.get(info.primary_key[0])
    return {name: row.get(name) for name in info.primary_key}


def bound_values(table: sa.Table, values: dict[str, Any]) -> dict[Any, Any]:
    # Parameter names of our own (p0, p1 …): column names may hold any character.
    return {table.c[name]: sa.bindparam(f"p{i}", value, type_=sa.types.NullType())
            for i, (name, value) in enumerate(values.items())}


# True for a row the statement inserted, false for one it updated (a new row version has xmax 0).
INSERTED_COLUMN: Any = sa.literal_column("(xmax = 0)").label(_INSERTED_FLAG)


def on_conflict(insert: Any, columns: list[str] | None, constraint: str | None, update: list[str]) -> Any:
    """The ON CONFLICT clause of Upsert Row and the bulk writes: DO UPDATE of *update* (from the
    proposed row), or DO NOTHING when *update* is empty.  The target is the conflict columns or a
    named constraint; DO NOTHING may have none (any unique violation skips the row)."""
    target: dict[str, Any] = {"constraint": constraint} if constraint else (
        {"index_elements": columns} if columns else {})
    if not update:
        return insert.on_conflict_do_nothing(**target)
    return insert.on_conflict_do_update(**target, set_={c: insert.excluded[c] for c in update})


def run_insert(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    info = table_info(session, inputs["table"], inputs.get("schema"))
    info.check_columns(list(inputs["columns"]), "columns")
    values = typed_values(info, inputs["columns"])
    table = info.sa_table()
    stmt = sa.insert(table).values(bound_values(table, values)).returning(*table.c)
    row = _execute_returning(session, stmt)
    return Output({"insertedId": _inserted_id(info, row), "rowCount": 1, "row": row})


def run_upsert(call: Call) -> Output:
    inputs, session = call.inputs, call.session
    info = table_info(session, inputs["table"], inputs.get("schema"))
    conflict = list(inputs["conflictColumns"])
    info.check_columns(list(inputs["columns"]), "columns")
    info.check_columns(conflict, "conflictColumns")
    missing = [c for c in conflict if c not in inputs["columns"]]
    if missing:
        raise ActionError("INVALID_INPUT", f"conflict column(s) {', '.join(missing)} need a value in columns",
                          extra={"field": "conflictColumns"})
    update = inputs.get("updateColumns")
    if update is None:
        update = [c for c in inputs["columns"] if c not in conflict]
    info.check_columns(update, "updateColumns")
    values = typed_values(info, inputs["columns"])
    table = info.sa_table()
    insert = postgresql.insert(table).values(bound_values(table, values))
    # With nothing to update, "update" a conflict column to itself so the row still comes back.
    upsert = on_conflict(insert, conflict, None, update or conflict[:1]).returning(*table.c, INSERTED_COLUMN)
    row = _execute_returning(session, upsert)
    inserted = bool(row.pop(INSERTED_COLUMN.name, True))
    return Output({"rowCount": 1, "inserted": inserted, "row": row, "insertedId": _inserted_id(info, row)})
