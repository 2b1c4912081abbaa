"""PostgreSQL values → JSON, decided once per connection by psycopg loaders.

Loading straight into JSON-ready values (ISO strings, ``orjson.Fragment`` for json/jsonb and
numbers) is both exact and fast: no ``datetime``/``Decimal`` objects and no JSON re-parsing.
The session runs with ``TimeZone=UTC``, ``DateStyle=ISO`` and ``IntervalStyle=iso_8601`` (set in
:mod:`pgactions.db.connect`), which the loaders below rely on.  The forms are listed in
docs/types.md.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import psycopg
from psycopg.adapt import Buffer, Loader
from psycopg.types import TypeInfo
from psycopg.types.array import register_array
from psycopg.types.string import ByteaLoader

__all__ = ["JSON_SAFE_INT", "register_loaders", "register_user_arrays", "to_json_bytes"]

JSON_SAFE_INT = 2**53 - 1  # the largest integer a JavaScript number holds exactly


def _text(data: Buffer) -> str:
    return bytes(data).decode("utf-8")


class BigIntLoader(Loader):
    """int8 as a number, or as a string beyond ±(2^53 − 1) where JSON readers would round it."""

    def load(self, data: Buffer) -> Any:
        value = int(bytes(data))
        return value if -JSON_SAFE_INT <= value <= JSON_SAFE_INT else str(value)


class NumericStringLoader(Loader):
    """numeric as its exact decimal text: "12.50" (the default)."""

    def load(self, data: Buffer) -> Any:
        return _text(data)


class NumericNumberLoader(Loader):
    """numeric as a JSON number with every digit kept; NaN and ±Infinity as strings."""

    def load(self, data: Buffer) -> Any:
        raw = bytes(data)
        if raw[-1:] in (b"N", b"y"):  # NaN, Infinity, -Infinity
            return raw.decode()
        return orjson.Fragment(raw)


class FloatLoader(Loader):
    """float4/float8 as numbers; NaN and ±Infinity (no JSON number) as strings."""

    def load(self, data: Buffer) -> Any:
        value = float(bytes(data))
        return value if math.isfinite(value) else bytes(data).decode()


class JsonFragmentLoader(Loader):
    """json/jsonb: the server's JSON text is embedded as is, never parsed and re-serialized."""

    def load(self, data: Buffer) -> Any:
        return orjson.Fragment(bytes(data))


class Base64ByteaLoader(ByteaLoader):
    def load(self, data: Buffer) -> Any:
        return base64.b64encode(super().load(bytes(data))).decode("ascii")


class TextLoader(Loader):
    def load(self, data: Buffer) -> Any:
        return _text(data)


class TimestamptzLoader(Loader):
    """'2026-01-15 10:30:00+00' (UTC session) → '2026-01-15T10:30:00Z'; infinity stays 'infinity'."""

    def load(self, data: Buffer) -> Any:
        text = _text(data)
        if text.endswith("+00"):
            return text[:-3].replace(" ", "T", 1) + "Z"
        return text.replace(" ", "T", 1) if text[:1].isdigit() else text


class TimestampLoader(Loader):
    """timestamp without time zone: naive ISO, never shifted: '2026-01-15T10:30:00'."""

    def load(self, data: Buffer) -> Any:
        text = _text(data)
        return text.replace(" ", "T", 1) if text[:1].isdigit() else text


class TimetzLoader(Loader):
    """'10:30:00+02' → '10:30:00+02:00' (ISO 8601 offsets carry minutes)."""

    def load(self, data: Buffer) -> Any:
        text = _text(data)
        sign = max(text.rfind("+"), text.rfind("-"))
        if sign > 0 and len(text) - sign == 3:
            return text + ":00"
        return text


_AS_TEXT = (
    "date", "time", "interval", "uuid", "inet", "cidr", "macaddr", "macaddr8", "money", "xml",
    "tsvector", "tsquery", "bit", "varbit", "point", "line", "lseg", "box", "path", "polygon",
    "circle", "int4range", "int8range", "numrange", "daterange", "tsrange", "tstzrange",
    "int4multirange", "int8multirange", "nummultirange", "datemultirange", "tsmultirange",
    "tstzmultirange", "pg_lsn", "txid_snapshot", "pg_snapshot", "jsonpath",
)


def register_loaders(conn: psycopg.Connection[Any], numeric_as_number: bool = False) -> None:
    """Install the JSON-ready loaders on one connection (text format)."""
    adapters = conn.adapters
    adapters.register_loader("int8", BigIntLoader)
    adapters.register_loader("numeric", NumericNumberLoader if numeric_as_number else NumericStringLoader)
    adapters.register_loader("float4", FloatLoader)
    adapters.register_loader("float8", FloatLoader)
    adapters.register_loader("json", JsonFragmentLoader)
    adapters.register_loader("jsonb", JsonFragmentLoader)
    adapters.register_loader("bytea", Base64ByteaLoader)
    adapters.register_loader("timestamptz", TimestamptzLoader)
    adapters.register_loader("timestamp", TimestampLoader)
    adapters.register_loader("timetz", TimetzLoader)
    for name in _AS_TEXT:
        if adapters.types.get(name) is not None:
            adapters.register_loader(name, TextLoader)


def register_user_arrays(conn: psycopg.Connection[Any], types: list[tuple[str, int, int]]) -> None:
    """Arrays of enums and domains as lists: (name, element type id, array type id) each.

    A domain's elements load as its base type (an int domain gives ints), an enum's as labels.
    """
    for name, element_oid, array_oid in types:
        register_array(TypeInfo(name, element_oid, array_oid), conn)


def _fallback(value: Any) -> Any:
    """Anything a loader did not make JSON-ready still gets a readable form."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_fallback, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        # An integer past 64 bits (read exactly from jsonb): written as its own digits.
        return orjson.dumps(_exact_ints(value), default=_fallback, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def _exact_ints(value: Any) -> Any:
    if type(value) is int and not -(2**63) <= value < 2**64:
        return orjson.Fragment(str(value).encode())
    if isinstance(value, dict):
        return {k: _exact_ints(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_exact_ints(v) for v in value]
    return value
