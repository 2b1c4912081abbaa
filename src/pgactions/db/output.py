"""An action's output: what handlers return, and the one serializer that enforces the output cap.

Handlers never build JSON bytes.  They return an :class:`Output`: a ``head`` object (rowCount,
insertedId …) and, for actions that return rows, :class:`Rows` already serialized while they
were read (so the rows are never held as Python objects and JSON at once).  Every row an action
reads is written through one :class:`OutputBudget`, shared by every statement of the action (a
transaction's steps, a batch's items), so reading stops as soon as the cap is passed; the final
:func:`serialize` checks the whole document once more, so no path can hand out more than the cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from pgactions.db.convert import to_json_bytes
from pgactions.spec.errors import ActionError

__all__ = ["Output", "OutputBudget", "Rows", "serialize"]


class OutputBudget:
    """The bytes an action may still output; every serialized row is charged here."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise too_large(self.limit, f"reading stopped after about {self.used - size:,} bytes")


def too_large(limit: int, detail: str) -> ActionError:
    return ActionError("RESULT_TOO_LARGE", f"the output exceeds the limit of {limit:,} bytes; {detail}",
                       extra={"limitBytes": limit})


@dataclass
class Rows:
    """Rows serialized as they arrived: ``body`` is the inside of a JSON array."""

    body: bytearray = field(default_factory=bytearray)
    count: int = 0
    columns: list[str] = field(default_factory=list)
    returned_rows: bool = True  # False for a statement without a result set (UPDATE w/o RETURNING)
    command_rows: int = 0  # rows such a statement changed

    @property
    def row_count(self) -> int:
        return self.count if self.returned_rows else self.command_rows

    def append_batch(self, encoded_array: bytes, count: int, budget: OutputBudget) -> None:
        """Add the rows of one JSON array (``[{…},{…}]``) serialized by :func:`to_json_bytes`."""
        inside = len(encoded_array) - 2
        budget.charge(inside + 1)
        if self.body:
            self.body += b","
        self.body += memoryview(encoded_array)[1:-1]
        self.count += count

    def as_array(self) -> bytes:
        return b"[" + bytes(self.body) + b"]"

    def parsed(self) -> list[Any]:
        return orjson.loads(self.as_array())

    def first(self) -> Any:
        """The first row as a JSON fragment (Get Row returns exactly one)."""
        return orjson.Fragment(self.as_array()[1:-1]) if self.count == 1 else None


@dataclass
class Output:
    """What a handler returns: ``head`` fields, with ``rows`` (if any) shown first as ``"rows"``."""

    head: dict[str, Any]
    rows: Rows | None = None

    @property
    def row_count(self) -> int:
        return int(self.head.get("rowCount") or 0)

    def data(self) -> dict[str, Any]:
        """The output as Python values: for a later step's templates, or a batch's item list."""
        data = orjson.loads(to_json_bytes(self.head))
        if self.rows is not None:
            return {"rows": self.rows.parsed(), **data}
        return data


def serialize(output: Output, limit: int) -> bytes:
    """The output document: rows first (as the integration guide shows them), then the head."""
    head = to_json_bytes(output.head)
    if output.rows is None:
        document = head
    elif len(head) > 2:
        document = b'{"rows":[' + output.rows.body + b"]," + head[1:]
    else:
        document = b'{"rows":[' + output.rows.body + b"]}"
    if len(document) > limit:
        raise too_large(limit, f"this output is {len(document):,} bytes")
    return bytes(document)
