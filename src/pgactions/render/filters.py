"""Structured conditions → a SQLAlchemy WHERE clause, for the structured Update/Delete Rows mode.

A condition is ``{"column": c, "operator": op, "value": v}``; conditions in a list are combined
with AND; ``{"and": [...]}`` and ``{"or": [...]}`` nest.  Columns are checked against the table's
real columns and quoted by SQLAlchemy; every value is a bound parameter cast to the column's own
type (so ``"42"`` compares with an integer column and ``42`` with a text one, as a user expects).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pgactions.render.values import bind_value
from pgactions.spec.errors import ActionError

__all__ = ["OPERATORS", "where_clause"]

OPERATORS = ("eq", "ne", "neq", "gt", "gte", "lt", "lte", "in", "is", "is null", "is not null", "like", "ilike",
             "contains")
_COMPARE = {"eq": "__eq__", "ne": "__ne__", "neq": "__ne__", "gt": "__gt__", "gte": "__ge__", "lt": "__lt__",
            "lte": "__le__"}
_IS = {None: None, True: sa.true(), False: sa.false()}


class SqlType(sa.types.UserDefinedType[Any]):
    """A column's type exactly as PostgreSQL's format_type() writes it (already valid SQL)."""

    cache_ok = True

    def __init__(self, spelled: str) -> None:
        self.spelled = spelled

    def get_col_spec(self, **_: Any) -> str:
        return self.spelled


class _Builder:
    def __init__(self, table: sa.Table, sql_types: dict[str, str]) -> None:
        self.table, self.sql_types = table, sql_types
        self.count = 0

    def param(self, value: Any, column: str, array: bool = False) -> Any:
        self.count += 1
        spelled = self.sql_types[column] + ("[]" if array else "")
        json_column = self.sql_types[column] in ("json", "jsonb")
        bound = sa.bindparam(f"w{self.count}", bind_value(value, json_column=json_column and not array),
                             type_=sa.types.NullType())
        return sa.cast(bound, SqlType(spelled))

    def build(self, node: Any, path: str) -> Any:
        if isinstance(node, list):
            return sa.and_(sa.true(), *(self.build(n, f"{path}/{i}") for i, n in enumerate(node)))
        if not isinstance(node, dict):
            raise ActionError("INVALID_INPUT", f"{path}: a condition must be an object",
                              extra={"field": path})
        if set(node) == {"and"} or set(node) == {"or"}:
            (key, items), = node.items()
            if not isinstance(items, list) or not items:
                raise ActionError("INVALID_INPUT", f"{path}/{key}: needs a non-empty list of conditions",
                                  extra={"field": f"{path}/{key}"})
            parts = [self.build(n, f"{path}/{key}/{i}") for i, n in enumerate(items)]
            return sa.and_(*parts) if key == "and" else sa.or_(*parts)
        return self.condition(node, path)

    def condition(self, node: dict[str, Any], path: str) -> Any:
        column, operator = node.get("column"), node.get("operator", "eq")
        if column not in self.sql_types:
            raise ActionError("UNDEFINED_COLUMN", f"{path}/column: {column!r} is not a column of the table; its "
                                                  f"columns are: {', '.join(self.sql_types)}",
                              extra={"field": f"{path}/column", "columns": list(self.sql_types)})
        col = self.table.c[column]
        if operator == "is null":
            return col.is_(None)
        if operator == "is not null":
            return col.is_not(None)
        if "value" not in node:
            raise ActionError("INVALID_INPUT", f"{path}: operator {operator!r} needs a value",
                              extra={"field": f"{path}/value"})
        value = node["value"]
        if operator in _COMPARE:
            if value is None:
                raise ActionError("INVALID_INPUT", f"{path}: comparing with null matches nothing; use the "
                                                   "operator 'is null' or 'is not null'", extra={"field": f"{path}/value"})
            return getattr(col, _COMPARE[operator])(self.param(value, column))
        if operator == "in":
            if not isinstance(value, list):
                raise ActionError("INVALID_INPUT", f"{path}: operator 'in' needs a list of values",
                                  extra={"field": f"{path}/value"})
            return col == sa.func.any(self.param(value, column, array=True))
        if operator == "is":  # PostgREST's is: null, true or false
            if value not in _IS or isinstance(value, (int, float)) and not isinstance(value, bool):
                raise ActionError("INVALID_INPUT", f"{path}: operator 'is' takes null, true or false",
                                  extra={"field": f"{path}/value"})
            return col.is_(_IS[value])
        if operator == "contains":  # arrays and jsonb: the column holds every element given
            return col.op("@>")(self.param(value, column))
        if operator in ("like", "ilike"):
            as_text = sa.cast(col, sa.Text)
            bound = sa.bindparam(f"w{self._next()}", str(value), type_=sa.types.NullType())
            return as_text.like(bound) if operator == "like" else as_text.ilike(bound)
        raise ActionError("INVALID_INPUT", f"{path}/operator: {operator!r} is not one of {', '.join(OPERATORS)}",
                          extra={"field": f"{path}/operator"})

    def _next(self) -> int:
        self.count += 1
        return self.count


def where_clause(table: sa.Table, sql_types: dict[str, str], where: Any, field: str = "where") -> Any:
    """The clause for *where* (a list of conditions, or an and/or group)."""
    return _Builder(table, sql_types).build(where, field)


def is_empty(where: Any) -> bool:
    return where is None or where == [] or where == {}
