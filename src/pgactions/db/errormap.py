"""Where driver and pool exceptions become friendly :class:`ActionError` s, and how a failure is
told where it happened.

:func:`map_exception` is called at the database boundary only: :class:`~pgactions.db.session.Session`
maps whatever escapes an action, the pool maps connect failures.  Code inside an action never maps;
it says where it is with :func:`error_context` (a step, a batch item, a row), which the
boundary adds to the error it builds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from pgactions.connection.diagnosis import diagnose_connect_failure
from pgactions.db.pool import PoolTimeout
from pgactions.spec.errors import SQLSTATE_CLASSES, SQLSTATE_CODES, ActionError

__all__ = ["code_for_sqlstate", "error_context", "map_exception", "scrub"]

log = logging.getLogger("pgactions")


def code_for_sqlstate(sqlstate: str) -> str:
    """Exact SQLSTATE first, then its two-letter class, else DATABASE_ERROR."""
    return SQLSTATE_CODES.get(sqlstate) or SQLSTATE_CLASSES.get(sqlstate[:2], "DATABASE_ERROR")


@contextmanager
def error_context(label: str | None, **where: Any) -> Iterator[None]:
    """Name where a failure inside the block happened: *where* goes into the error object
    (``{"step": "s1", "stepIndex": 0}``) and *label* before its detail ("step 's1': …").

    The exception passes through unchanged (a driver error is mapped at the boundary, which then
    adds this context); the innermost context comes first in the detail.
    """
    try:
        yield
    except Exception as exc:
        contexts = getattr(exc, "_pgactions_context", None)
        if contexts is None:
            contexts = []
            try:
                exc._pgactions_context = contexts  # type: ignore[attr-defined]
            except AttributeError:  # an exception type without a __dict__: nothing to attach to
                raise exc from None
        contexts.append((label, where))
        if isinstance(exc, ActionError):
            _apply_context(exc, [(label, where)])
            contexts.pop()
        raise


def _apply_context(error: ActionError, contexts: list[tuple[str | None, dict[str, Any]]]) -> ActionError:
    for label, where in contexts:
        error.payload.update(where)
        if label:
            error.payload["detail"] = f"{label}: {error.payload.get('detail') or error.payload['message']}"
    return error


def map_exception(exc: BaseException, *, connecting: bool, host: str | None = None,
                  port: int | None = None, connect_timeout: float = 10.0,
                  timed_out: bool = False) -> ActionError:
    """The friendly error for *exc*, with the context :func:`error_context` attached to it."""
    if isinstance(exc, ActionError):
        return exc
    error = _map(exc, connecting=connecting, host=host, port=port, connect_timeout=connect_timeout,
                 timed_out=timed_out)
    return _apply_context(error, getattr(exc, "_pgactions_context", []))


def _map(exc: BaseException, *, connecting: bool, host: str | None, port: int | None,
         connect_timeout: float, timed_out: bool) -> ActionError:
    if isinstance(exc, PoolTimeout):
        return ActionError("TOO_MANY_CONNECTIONS", f"this connection's pool is exhausted: {exc}")
    if timed_out:
        return ActionError("QUERY_TIMEOUT", "the server did not answer within the time limit")
    if isinstance(exc, psycopg.Error):
        return _map_psycopg(exc, connecting=connecting, host=host, port=port, connect_timeout=connect_timeout)
    if isinstance(exc, UnicodeEncodeError):
        # A lone surrogate (from JSON "\\ud800") cannot be sent as UTF-8.
        return ActionError("INVALID_VALUE", f"a value holds text that is not valid Unicode ({exc.reason} at "
                                            f"position {exc.start}); send real characters instead")
    if isinstance(exc, RecursionError):
        return ActionError("INVALID_INPUT", "the input is nested too deeply")
    log.error("unexpected failure", exc_info=exc)
    return ActionError("DATABASE_ERROR", f"unexpected {type(exc).__name__}: {exc}")


def _map_psycopg(exc: psycopg.Error, *, connecting: bool, host: str | None, port: int | None,
                 connect_timeout: float) -> ActionError:
    sqlstate = exc.sqlstate
    if sqlstate:
        return _from_server(exc, sqlstate)
    message = str(exc)
    if connecting and isinstance(exc, psycopg.OperationalError):
        return diagnose_connect_failure(message, host, port, connect_timeout)
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return ActionError("CONNECTION_LOST", message.strip() or type(exc).__name__)
    # Client-side adaptation problems: a value psycopg cannot send or a result it cannot read.
    return ActionError("INVALID_VALUE", message.strip() or type(exc).__name__)


def _from_server(exc: psycopg.Error, sqlstate: str) -> ActionError:
    diag = exc.diag
    primary = diag.message_primary or str(exc).strip()
    code = code_for_sqlstate(sqlstate)
    parts = [primary]
    if diag.message_detail:
        parts.append(diag.message_detail)
    if diag.message_hint:
        parts.append("Hint: " + diag.message_hint)
    position = int(diag.statement_position) if diag.statement_position else None
    extra: dict[str, Any] = {}
    for key, value in (("table", diag.table_name), ("column", diag.column_name),
                       ("constraint", diag.constraint_name), ("schema", diag.schema_name)):
        if value:
            extra[key] = value
    if sqlstate == "42P02":
        match = re.search(r"\$(\d+)", primary)
        number = match.group(1) if match else "?"
        parts = ["$0 is not a placeholder: they are numbered from $1" if number == "0" else
                 f"the query uses ${number}, but no value was given for it"]
    return ActionError(code, "; ".join(parts), sqlstate=sqlstate, position=position, extra=extra or None)


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """Replace every occurrence of a secret in strings nested in *value* by ``***``.

    Secrets shorter than 4 characters are left alone: replacing them would garble every message
    (a password "pw" inside "password"), and libpq never echoes a password anyway.
    """
    secrets = tuple(s for s in secrets if s and len(s) >= 4)
    if not secrets:
        return value
    if isinstance(value, str):
        # Until none is left: a replacement can make the secret anew ("pwpw***" → "pw***").
        while any(secret in value for secret in secrets):
            for secret in secrets:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value
