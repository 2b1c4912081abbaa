"""Python values → bound parameters psycopg can send."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

__all__ = ["bind_value"]


def bind_value(value: Any, json_column: bool = False) -> Any:
    """Objects (and lists holding objects, or anything bound for a json column) go as jsonb.

    Everything else is left to psycopg: strings go untyped so the server reads them as it would
    a literal ('2026-01-15' into a date column), lists become arrays for ``ANY($1::int[])``.
    """
    if isinstance(value, dict):
        return Jsonb(value)
    if isinstance(value, list):
        if json_column or any(isinstance(v, (dict, list)) for v in value):
            return Jsonb(value)
        return value
    if json_column and isinstance(value, (int, float, bool)):
        return Jsonb(value)
    return value
