"""Python values → bound parameters psycopg can send."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import orjson
from jinja2 import Undefined
from psycopg.types.json import Jsonb as _PsycopgJsonb

from pgactions.spec.errors import ActionError

__all__ = ["Jsonb", "bind_value", "bytea_value", "column_value", "json_text"]


def _json_default(value: Any) -> Any:
    """What JSON has no type for, as the text a flow would expect: dates and times in ISO 8601
    (``{{ now }}`` inside an object), exact decimals, bytes in base64."""
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Undefined):  # a template's value that refers to nothing
        raise ActionError("TEMPLATE_ERROR", f"a value made by a template is not defined: {value._undefined_message}")
    try:
        return str(value)
    except Exception as exc:  # an object whose text form fails
        raise ActionError("INVALID_VALUE", f"a {type(value).__name__} value cannot be written as JSON") from exc


def json_text(value: Any) -> str:
    """*value* as JSON text; integers past 64 bits stay exact (orjson refuses them: the standard
    library writes them)."""
    try:
        text = orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, ActionError):
            raise exc.__cause__ from None
        text = _standard_json(value).encode()
    if b"null" in text and _holds_non_finite(value):
        # orjson writes NaN and ±Infinity as null: refuse them as JSON itself does.
        raise ActionError("INVALID_VALUE", "NaN and Infinity are not JSON numbers: send them as text or null")
    return text.decode()


def _standard_json(value: Any) -> str:
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ActionError("INVALID_VALUE", "NaN and Infinity are not JSON numbers: send them as text or null") from None


def _holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_holds_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_non_finite(v) for v in value)
    return False


class Jsonb(_PsycopgJsonb):
    """psycopg's Jsonb, written with :func:`json_text` (its default, json.dumps, fails on a
    datetime from a template)."""

    def __init__(self, obj: Any) -> None:
        super().__init__(obj, dumps=json_text)


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


def bytea_value(value: Any, column: str) -> Any:
    """Text for a bytea column: base64 (the form pgactions reads bytea as), or PostgreSQL's own
    hex form when it starts with ``\\x``.  So a row read with Get Row writes back unchanged."""
    if not isinstance(value, str) or value.startswith("\\x"):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ActionError("INVALID_VALUE", f"column {column}: bytea values are given as base64 text (or as "
                                           "\\x followed by hex digits)", extra={"column": column}) from None


def column_value(value: Any, typname: str, column: str) -> Any:
    """A value bound for a column whose type is known (``pg_type.typname``; arrays start with _)."""
    if typname == "bytea":
        return bind_value(bytea_value(value, column))
    if typname in ("_json", "_jsonb") and isinstance(value, list):  # an array of json values
        return [None if v is None else Jsonb(v) for v in value]
    return bind_value(value, json_column=typname in ("json", "jsonb"))
