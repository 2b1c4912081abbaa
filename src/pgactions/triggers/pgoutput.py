"""A decoder for pgoutput, PostgreSQL's logical replication output plugin (protocol version 1).

pgoutput sends one binary message per call of the plugin: Begin, Commit, Origin, Relation,
Type, Insert, Update, Delete, Truncate (and, with options we never ask for, Message and the
streaming messages of protocol 2+).  Column values come as the type's text output, exactly the
text a query returns in text format, so :mod:`pgactions.triggers.cdc` hands them to the same
psycopg loaders as query results (docs/types.md).

Messages are decoded into small tuples (no classes on the hot path); tuple data becomes a list
with one entry per column: the value's bytes, ``None`` for NULL, or :data:`UNCHANGED` for a
TOASTed value an UPDATE did not change (pgoutput does not send it).

The format is documented in PostgreSQL's "Logical Replication Message Formats"; every integer
is big-endian; strings are NUL-terminated; LSNs are 64-bit; times are microseconds since
2000-01-01 UTC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "BEGIN", "COMMIT", "DELETE", "INSERT", "ORIGIN", "RELATION", "TRUNCATE", "TYPE", "UNCHANGED",
    "UPDATE", "Column", "DecodeError", "Relation", "decode", "format_lsn", "parse_lsn", "pg_time_iso",
]

# Message kinds (their first byte).
BEGIN, COMMIT, ORIGIN, RELATION, TYPE = ord("B"), ord("C"), ord("O"), ord("R"), ord("Y")
INSERT, UPDATE, DELETE, TRUNCATE, MESSAGE = ord("I"), ord("U"), ord("D"), ord("T"), ord("M")

_Q = struct.Struct("!Q")
_I = struct.Struct("!I")
_H = struct.Struct("!H")
_BEGIN = struct.Struct("!QqI")        # final LSN, commit time, xid
_COMMIT = struct.Struct("!BQQq")      # flags, commit LSN, end LSN, commit time
_REL_HEAD = struct.Struct("!I")
_COLUMN_TAIL = struct.Struct("!Ii")   # type oid, typmod
_TRUNC = struct.Struct("!IB")         # number of relations, options

PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


class _Unchanged:
    """A TOASTed value the UPDATE did not change: pgoutput does not send it ('u')."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()


class DecodeError(ValueError):
    """A message this decoder does not understand (a protocol it was not asked for)."""


@dataclass(slots=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    key: bool  # part of the replica identity (primary key, the chosen index, or FULL: all)


@dataclass(slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # 'd' default (primary key), 'n' nothing, 'f' full, 'i' index
    columns: list[Column] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_lsn(text: str) -> int:
    """'0/16B3748' → 23803720."""
    try:
        high, low = text.split("/")
        value = (int(high, 16) << 32) | int(low, 16)
    except (ValueError, AttributeError):
        raise ValueError(f"not an LSN: {text!r} (expected the form '0/16B3748')") from None
    if not 0 <= value < 2**64:
        raise ValueError(f"not an LSN: {text!r}")
    return value


def format_lsn(value: int) -> str:
    """23803720 → '0/16B3748' (PostgreSQL's own spelling)."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def pg_time_iso(microseconds: int) -> str:
    """A replication timestamp as ISO 8601 in UTC with 'Z', like timestamptz values."""
    text = (PG_EPOCH + timedelta(microseconds=microseconds)).isoformat()
    return text[:-6] + "Z"  # '+00:00'


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode("utf-8", "replace"), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[list[Any], int]:
    (count,) = _H.unpack_from(buf, pos)
    pos += 2
    values: list[Any] = []
    append = values.append
    unpack = _I.unpack_from
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == 116:  # 't': text
            (size,) = unpack(buf, pos)
            pos += 4
            append(buf[pos:pos + size])
            pos += size
        elif kind == 110:  # 'n': NULL
            append(None)
        elif kind == 117:  # 'u': unchanged TOASTed value
            append(UNCHANGED)
        else:  # 'b' (binary, only with the binary option) or garbage
            raise DecodeError(f"unexpected tuple value kind {chr(kind)!r}")
    return values, pos


def decode(buf: bytes) -> tuple[Any, ...]:
    """One pgoutput message → a tuple whose first item is its kind:

    - ``(BEGIN, final_lsn, commit_time_us, xid)``
    - ``(COMMIT, flags, commit_lsn, end_lsn, commit_time_us)``
    - ``(RELATION, Relation)``, ``(TYPE, oid, schema, name)``, ``(ORIGIN, lsn, name)``
    - ``(INSERT, relid, new)``, ``(UPDATE, relid, old_kind, old, new)``,
      ``(DELETE, relid, old_kind, old)`` — *old_kind* 'K' (key columns only), 'O' (the whole old
      row, REPLICA IDENTITY FULL) or None (no old row sent)
    - ``(TRUNCATE, [relid …], options)`` — options: 1 CASCADE, 2 RESTART IDENTITY
    """
    kind = buf[0]
    if kind == INSERT:
        (relid,) = _I.unpack_from(buf, 1)
        if buf[5] != 78:  # 'N'
            raise DecodeError("INSERT without a new tuple")
        new, _ = _tuple(buf, 6)
        return (INSERT, relid, new)
    if kind == UPDATE:
        (relid,) = _I.unpack_from(buf, 1)
        pos = 5
        old_kind = None
        old = None
        marker = buf[pos]
        if marker in (75, 79):  # 'K', 'O'
            old_kind = chr(marker)
            old, pos = _tuple(buf, pos + 1)
            marker = buf[pos]
        if marker != 78:
            raise DecodeError("UPDATE without a new tuple")
        new, _ = _tuple(buf, pos + 1)
        return (UPDATE, relid, old_kind, old, new)
    if kind == DELETE:
        (relid,) = _I.unpack_from(buf, 1)
        marker = buf[5]
        if marker not in (75, 79):
            raise DecodeError("DELETE without an old tuple")
        old, _ = _tuple(buf, 6)
        return (DELETE, relid, chr(marker), old)
    if kind == BEGIN:
        final_lsn, commit_time, xid = _BEGIN.unpack_from(buf, 1)
        return (BEGIN, final_lsn, commit_time, xid)
    if kind == COMMIT:
        flags, commit_lsn, end_lsn, commit_time = _COMMIT.unpack_from(buf, 1)
        return (COMMIT, flags, commit_lsn, end_lsn, commit_time)
    if kind == RELATION:
        (oid,) = _REL_HEAD.unpack_from(buf, 1)
        schema, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        identity = chr(buf[pos])
        (ncols,) = _H.unpack_from(buf, pos + 1)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = buf[pos]
            colname, pos = _cstring(buf, pos + 1)
            type_oid, typmod = _COLUMN_TAIL.unpack_from(buf, pos)
            pos += 8
            columns.append(Column(colname, type_oid, typmod, bool(flags & 1)))
        return (RELATION, Relation(oid, schema or "pg_catalog", name, identity, columns))
    if kind == TRUNCATE:
        count, options = _TRUNC.unpack_from(buf, 1)
        relids = list(struct.unpack_from(f"!{count}I", buf, 6))
        return (TRUNCATE, relids, options)
    if kind == TYPE:
        (oid,) = _I.unpack_from(buf, 1)
        schema, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        return (TYPE, oid, schema, name)
    if kind == ORIGIN:
        (lsn,) = _Q.unpack_from(buf, 1)
        name, _ = _cstring(buf, 9)
        return (ORIGIN, lsn, name)
    if kind == MESSAGE:
        return (MESSAGE,)
    raise DecodeError(f"unknown pgoutput message {chr(kind)!r} (protocol version 1 was asked for)")
