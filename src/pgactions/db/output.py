"""An action's output: what handlers return, and the one serializer that enforces the output cap.

Handlers never build JSON bytes.  They return an :class:`Output`: a ``head`` object (rowCount,
insertedId …) and, for actions that return rows, :class:`Rows` already serialized while they
were read (so the rows are never held as Python objects and JSON at once).  Every row an action
reads is written through one :class:`OutputBudget`, shared by every statement of the action (a
transaction's steps, a batch's items), so reading stops as soon as the cap is passed; the final
:func:`serialize` checks the whole document once more, so no path can hand out more than the cap.

The rows' JSON is held once: :func:`serialize` finishes the document in the rows' own buffer and
hands that memory over (no copy).  For an output written to a file (:class:`FileSink`, the CLI's
``--output``), rows past :data:`SPILL_BYTES` go to a temporary file beside it as they are read,
which becomes the document: memory stays at about one batch whatever the size.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from pgactions.db.convert import to_json_bytes
from pgactions.spec.errors import ActionError

__all__ = ["SPILL_BYTES", "FileSink", "Output", "OutputBudget", "Rows", "loads_exact", "serialize"]

_LONG_NUMBER = re.compile(rb"\d{19}")


def loads_exact(document: bytes) -> Any:
    """JSON text → Python values, every integer exact: orjson (fast) turns integers past 64 bits
    into floats, so a text holding a run of 19 digits or more goes to the standard library."""
    if _LONG_NUMBER.search(document):
        return json.loads(document)
    return orjson.loads(document)


class OutputBudget:
    """The bytes an action may still output; every serialized row is charged here."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, size: int) -> None:
        used = self.used + size
        if used > self.limit:  # what is refused is not counted: a script may skip those rows
            raise too_large(self.limit, f"reading stopped after about {self.used:,} bytes")
        self.used = used

    def refund(self, size: int) -> None:
        """Give back what rows that will not be output were charged (a script's earlier results)."""
        self.used -= size


def too_large(limit: int, detail: str) -> ActionError:
    return ActionError("RESULT_TOO_LARGE", f"the output exceeds the limit of {limit:,} bytes; {detail}",
                       extra={"limitBytes": limit})


# Every buffer of rows starts with the document's own opening, so the document can be finished in
# place (its closing and the head appended): no copy of the rows is made on the way out.
_PREFIX = b'{"rows":['
_START = len(_PREFIX)
SPILL_BYTES = 1024 * 1024  # with a FileSink, rows beyond this go to a temporary file beside the output
# A first batch up to this size is kept as it came (its JSON array) until a second one comes: a
# small result (a lookup by key) is then finished with one join, without a growable buffer.
KEEP_FIRST_BYTES = 64 * 1024


class Rows:
    """Rows serialized as they arrived, the inside of a JSON array (``size`` bytes).

    They live in a growable buffer (``io.BytesIO``, whose ``getvalue()`` hands its memory over
    without copying), or, when the runtime writes the output to a file (*spill*: its
    :class:`FileSink`), in a temporary file of the sink's once they pass :data:`SPILL_BYTES`.
    """

    __slots__ = ("_file", "_finished", "_first", "_out", "_spill", "columns", "command_rows", "count", "returned_rows",
                 "size")

    def __init__(self, *, returned_rows: bool = True, command_rows: int = 0,
                 spill: FileSink | None = None) -> None:
        self.count = 0
        self.size = 0
        self.columns: list[str] = []
        self.returned_rows = returned_rows  # False for a statement without a result set (UPDATE w/o RETURNING)
        self.command_rows = command_rows  # rows such a statement changed
        self._spill = spill
        self._out: Any = None  # an io.BytesIO made by the first batch, or a temporary file (spilled)
        self._first: bytes | None = None  # or the first batch itself, while it is small and alone
        self._file = False  # _out is the temporary file
        self._finished = False  # finish() wrote the document's end after the rows

    def __repr__(self) -> str:
        return f"Rows(count={self.count}, size={self.size}, columns={self.columns!r})"

    @property
    def row_count(self) -> int:
        return self.count if self.returned_rows else self.command_rows

    @property
    def in_file(self) -> bool:
        return self._file

    def append_batch(self, encoded_array: bytes, count: int, budget: OutputBudget) -> None:
        """Add the rows of one JSON array (``[{…},{…}]``) serialized by :func:`to_json_bytes`."""
        inside = len(encoded_array) - 2
        budget.charge(inside + 1)
        out = self._out
        if out is None:
            if self._first is None and not self.size and inside <= KEEP_FIRST_BYTES:
                self._first = encoded_array
                self.size, self.count = inside, self.count + count
                return
            out = self._buffer()
        elif self._finished:  # more rows after finish(): its end goes
            out.seek(_START + self.size)
            out.truncate()
            self._finished = False
        if self.size:
            out.write(b",")
            self.size += 1
        try:
            out.write(memoryview(encoded_array)[1:-1])
        except OSError as exc:  # only a file fails: disk full …
            raise self._spill.write_error(exc) from None  # type: ignore[union-attr]
        self.size += inside
        self.count += count
        if self._spill is not None and not self._file and self.size > SPILL_BYTES:
            self._to_file(self._spill)

    def _buffer(self) -> io.BytesIO:
        """The growable buffer, made when a second batch comes (or a first one that is large),
        holding the first batch kept so far."""
        out = self._out = io.BytesIO()
        out.write(_PREFIX)
        if self._first is not None:
            out.write(memoryview(self._first)[1:-1])
            self._first = None
        return out

    def _to_file(self, sink: FileSink) -> None:
        try:
            file = sink.temp_file()
            with self._out.getbuffer() as view:
                file.write(view[:_START + self.size])
        except OSError as exc:
            raise sink.write_error(exc) from None
        self._out, self._file = file, True

    def inside(self) -> bytes:
        """The rows' JSON without the brackets (a copy)."""
        if self._first is not None:
            return self._first[1:-1]
        if self._out is None:
            return b""
        if self._file:
            self._out.flush()
            return os.pread(self._out.fileno(), self.size, _START)
        with self._out.getbuffer() as view:
            return bytes(view[_START:_START + self.size])

    def as_array(self) -> bytes:
        return b"".join((b"[", self.inside(), b"]"))

    def parsed(self) -> list[Any]:
        return loads_exact(self.as_array())

    def first(self) -> Any:
        """The first row as a JSON fragment (Get Row returns exactly one)."""
        return orjson.Fragment(self.inside()) if self.count == 1 else None

    def document_size(self, head: bytes) -> int:
        return _START + self.size + (len(head) + 1 if len(head) > 2 else 2)

    def finish(self, head: bytes) -> bytes | BinaryIO:
        """The document, finished in place: bytes (no copy: the buffer's own memory), or the
        temporary file the rows spilled to, rows and head written."""
        tail = b"]," + head[1:] if len(head) > 2 else b"]}"
        out = self._out
        if out is None:
            if self._first is not None:
                return b"".join((_PREFIX, memoryview(self._first)[1:-1], tail))
            return _PREFIX + tail
        if self._finished:  # finished before (for another head): from the rows' end again
            out.seek(_START + self.size)
            out.truncate()
        self._finished = True
        out.write(tail)
        if self._file:
            out.flush()
            return out  # type: ignore[no-any-return]
        return out.getvalue()  # type: ignore[no-any-return]


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
        data = loads_exact(to_json_bytes(self.head))
        if self.rows is not None:
            return {"rows": self.rows.parsed(), **data}
        return data


def serialize(output: Output, limit: int, sink: FileSink | None = None) -> bytes:
    """The output document: rows first (as the integration guide shows them), then the head.

    Built without copying the rows; with a *sink*, the document goes there (rows that spilled to
    one of its temporary files stay there) and ``b""`` is returned.
    """
    head = to_json_bytes(output.head)
    rows = output.rows
    size = len(head) if rows is None else rows.document_size(head)
    if size > limit:
        raise too_large(limit, f"this output is {size:,} bytes")
    document = head if rows is None else rows.finish(head)
    if sink is None:
        if isinstance(document, bytes):
            return document
        document.seek(0)  # rows spilled without a sink to take them (not done by the runtime)
        return document.read()
    sink.take(document, size)
    return b""


class FileSink:
    """The output document written to *path*: into a temporary file in the same folder, renamed
    into place by :meth:`commit` (after the action's transaction committed), or removed by
    :meth:`discard`.  The temporary files are ``.NAME.XXXXXXXX.tmp`` beside the output."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.folder, self.name = os.path.split(self.path)
        self.size = 0
        self._temps: dict[str, BinaryIO] = {}
        self._document: str | None = None

    def check(self) -> None:
        """Refuse a path that cannot be written, before anything runs (OSError says why)."""
        if os.path.isdir(self.path):
            raise IsADirectoryError(errno.EISDIR, "is a folder", self.path)
        self.temp_file()
        self.discard()

    def temp_file(self) -> BinaryIO:
        """A new temporary file in the output's folder (created with the umask's permissions);
        OSError when the folder cannot be written."""
        for _ in range(100):
            name = os.path.join(self.folder, f".{self.name}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            except FileExistsError:
                continue
            file = self._temps[name] = os.fdopen(fd, "w+b")
            return file
        raise FileExistsError(errno.EEXIST, "no free temporary name", self.folder)

    def take(self, document: bytes | BinaryIO, size: int) -> None:
        """*document* is the output: bytes, or one of this sink's temporary files."""
        try:
            if isinstance(document, bytes):
                file = self.temp_file()
                file.write(document)
            else:
                file = document
            file.flush()
            os.fsync(file.fileno())
        except OSError as exc:
            raise self.write_error(exc) from None
        self._document = next(name for name, f in self._temps.items() if f is file)
        self.size = size

    def write_error(self, exc: OSError) -> ActionError:
        return ActionError("INVALID_INPUT", f"cannot write the output file {self.path}: {exc.strerror or exc}",
                           extra={"field": "output"})

    def commit(self) -> None:
        """Put the document in place (an atomic rename) and remove any other temporary file."""
        if self._document is None:
            raise RuntimeError("no output document to commit")
        name = self._document
        try:
            self._temps[name].close()
            os.replace(name, self.path)
            del self._temps[name]  # in place: not a temporary file any more
        except OSError as exc:
            raise self.write_error(exc) from None
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove every temporary file (the action failed, or they were left over)."""
        for name, file in list(self._temps.items()):
            file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        self._temps.clear()
        self._document = None
