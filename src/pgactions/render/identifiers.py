"""Names put into SQL text: quoted by PostgreSQL's rules, refused when PostgreSQL would store them
differently (docs/templating.md); the ``identifier`` filter is the one way a template writes SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql

from pgactions.render.excerpts import shown
from pgactions.spec.errors import ActionError

__all__ = ["SQLIdentifier", "identifier_filter", "quote_identifier"]

# numeric_dollar: a dialect whose placeholders are $n does not double "%" in names (the pyformat
# default does, so table "50%" would be named "50%%" in SQL sent without parameters).
_PREPARER = postgresql.dialect(paramstyle="numeric_dollar").identifier_preparer
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def quote_identifier(*parts: str) -> str:
    """``"schema"."table"``: each part quoted by PostgreSQL's rules (SQLAlchemy's preparer).

    A part holding a NUL character, or longer than 63 bytes in UTF-8, is INVALID_INPUT: PostgreSQL
    cannot store the first and silently cuts the second to 63 bytes, which could name another table.
    """
    for part in parts:
        if "\x00" in part:
            raise ActionError("INVALID_INPUT", f"the name {shown(part)} contains a NUL character, "
                                               "which a PostgreSQL name cannot hold")
        if len(part) > _MAX_IDENTIFIER_BYTES // 4:  # shorter ones are at most 60 bytes in UTF-8
            encoded = part.encode("utf-8", "surrogatepass")
            if len(encoded) > _MAX_IDENTIFIER_BYTES:
                cut = encoded[:_MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")
                raise ActionError(
                    "INVALID_INPUT",
                    f"the name {shown(part)} is {len(encoded)} bytes long; PostgreSQL names are at most "
                    f"{_MAX_IDENTIFIER_BYTES} bytes (PostgreSQL would cut it to {cut!r}, which may name "
                    "something else)")
    return ".".join(_PREPARER.quote_identifier(p) for p in parts)


class SQLIdentifier(str):
    """An identifier already quoted by PostgreSQL's rules; only the ``identifier`` filter makes one."""


def identifier_filter(value: Any) -> SQLIdentifier:
    """``{{ name | identifier }}``: quote a name (or a list of names, joined by dots) for SQL text."""
    parts = value if isinstance(value, (list, tuple)) else [value]
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ActionError("TEMPLATE_ERROR", "the identifier filter takes a non-empty name or list of names")
    return SQLIdentifier(quote_identifier(*parts))
