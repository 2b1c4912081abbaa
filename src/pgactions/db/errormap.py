"""The one boundary where driver and pool exceptions become friendly :class:`ActionError` s."""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg

from pgactions.connection.diagnosis import diagnose_connect_failure
from pgactions.db.pool import PoolTimeout
from pgactions.spec.errors import SQLSTATE_CLASSES, SQLSTATE_CODES, ActionError

__all__ = ["code_for_sqlstate", "map_exception", "scrub"]

log = logging.getLogger("pgactions")


def code_for_sqlstate(sqlstate: str) -> str:
    """Exact SQLSTATE first, then its two-letter class, else DATABASE_ERROR."""
    return SQLSTATE_CODES.get(sqlstate) or SQLSTATE_CLASSES.get(sqlstate[:2], "DATABASE_ERROR")


def map_exception(exc: BaseException, *, connecting: bool, host: str | None = None,
                  port: int | None = None, connect_timeout: float = 10.0,
                  timed_out: bool = False, given_parameters: int | None = None) -> ActionError:
    if isinstance(exc, ActionError):
        return exc
    if isinstance(exc, PoolTimeout):
        return ActionError("TOO_MANY_CONNECTIONS", f"this connection's pool is exhausted: {exc}")
    if timed_out:
        return ActionError("QUERY_TIMEOUT", "the server did not answer within the time limit")
    if isinstance(exc, psycopg.Error):
        return _map_psycopg(exc, connecting=connecting, host=host, port=port,
                            connect_timeout=connect_timeout, given_parameters=given_parameters)
    log.error("unexpected failure", exc_info=exc)
    return ActionError("DATABASE_ERROR", f"unexpected {type(exc).__name__}: {exc}")


def _map_psycopg(exc: psycopg.Error, *, connecting: bool, host: str | None, port: int | None,
                 connect_timeout: float, given_parameters: int | None) -> ActionError:
    sqlstate = exc.sqlstate
    if sqlstate:
        return _from_server(exc, sqlstate, given_parameters)
    message = str(exc)
    if connecting and isinstance(exc, psycopg.OperationalError):
        return diagnose_connect_failure(message, host, port, connect_timeout)
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return ActionError("CONNECTION_LOST", message.strip() or type(exc).__name__)
    # Client-side adaptation problems: a value psycopg cannot send or a result it cannot read.
    return ActionError("INVALID_VALUE", message.strip() or type(exc).__name__)


def _from_server(exc: psycopg.Error, sqlstate: str, given_parameters: int | None) -> ActionError:
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
        parts = [f"the query uses ${match.group(1) if match else '?'} but only "
                 f"{given_parameters or 0} parameter(s) were given"]
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
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value
