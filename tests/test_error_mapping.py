"""Every exception the code can meet at the database boundary maps to a catalogued code.

The mapping is one function (pgactions.db.errormap.map_exception), fed by the SQLSTATEs each
catalogue entry declares; these tests walk every class psycopg knows, the client-side failures
and the SQLAlchemy ones, so a new class can never surface as a traceback or an unlisted code.
"""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
import sqlalchemy.exc

from pgactions import ERROR_CATALOG, ActionError
from pgactions.db.errormap import code_for_sqlstate, error_context, map_exception
from pgactions.db.pool import PoolTimeout

# Every SQLSTATE psycopg has a class for (its table is keyed by code and by name: the codes).
SQLSTATES = sorted(s for s in psycopg.errors._sqlcodes if len(s) == 5 and s[:2].isalnum() and not s.isalpha())


@pytest.mark.parametrize("sqlstate", SQLSTATES)
def test_every_server_error_class_maps_to_a_catalogued_code(sqlstate: str) -> None:
    error_class = psycopg.errors.lookup(sqlstate)
    error = map_exception(error_class("the server's words"), connecting=False)
    assert error.code in ERROR_CATALOG
    assert error.payload["sqlstate"] == sqlstate


def test_declared_sqlstates_are_real_and_map_to_their_code() -> None:
    for code, spec in ERROR_CATALOG.items():
        for sqlstate in spec.sqlstates:
            assert sqlstate in SQLSTATES, f"{code}: {sqlstate} is not a SQLSTATE"
            assert code_for_sqlstate(sqlstate) == code
        for prefix in spec.sqlstate_classes:
            members = [s for s in SQLSTATES if s.startswith(prefix)]
            assert members, f"{code}: no SQLSTATE class {prefix}"
            assert all(code_for_sqlstate(s) in ERROR_CATALOG for s in members)


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.InterfaceError("the connection is closed"),
    psycopg.DataError("cannot dump value"),
    psycopg.ProgrammingError("the query has 2 placeholders but 1 parameters were passed"),
    psycopg.NotSupportedError("not supported"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    PoolTimeout("all 5 connections stayed busy for 30s"),
    UnicodeEncodeError("utf-8", "a\ud800", 1, 2, "surrogates not allowed"),
    RecursionError("maximum recursion depth exceeded"),
    sqlalchemy.exc.CompileError("cannot compile"),
    sqlalchemy.exc.ArgumentError("bad argument"),
    TypeError("an unexpected failure"),
], ids=lambda exc: type(exc).__name__)
def test_client_side_failures_map_to_catalogued_codes(exc: BaseException) -> None:
    error = map_exception(exc, connecting=False)
    assert isinstance(error, ActionError) and error.code in ERROR_CATALOG
    assert error.code not in ("INVALID_INPUT",) or isinstance(exc, RecursionError)


def test_connect_failures_are_diagnosed_not_called_input_errors() -> None:
    error = map_exception(psycopg.OperationalError('connection to server at "127.0.0.1", port 1 failed: '
                                                  "Connection refused"), connecting=True, host="127.0.0.1",
                          port=1, connect_timeout=1)
    assert error.code == "CONNECTION_REFUSED"


def test_a_timeout_the_watchdog_saw_is_a_timeout_whatever_the_driver_said() -> None:
    assert map_exception(psycopg.OperationalError("consuming input failed"), connecting=False,
                         timed_out=True).code == "QUERY_TIMEOUT"


def test_context_is_added_once_by_the_boundary() -> None:
    """error_context names where a driver error happened; the boundary adds it to the mapped error."""
    with pytest.raises(psycopg.Error) as raised:
        with error_context("step 'a' (insert_row)", step="a", stepIndex=0):
            with error_context("row 3", rowIndex=3):
                raise psycopg.errors.lookup("23505")("duplicate key")
    error = map_exception(raised.value, connecting=False)
    assert error.code == "UNIQUE_VIOLATION"
    assert (error.payload["step"], error.payload["stepIndex"], error.payload["rowIndex"]) == ("a", 0, 3)
    assert error.payload["detail"].startswith("step 'a' (insert_row): row 3: ")


def test_context_on_an_action_error_is_applied_at_once() -> None:
    with pytest.raises(ActionError) as raised:
        with error_context("item 2", itemIndex=2):
            raise ActionError("INVALID_INPUT", "table is required")
    assert raised.value.payload["itemIndex"] == 2
    assert raised.value.payload["detail"] == "item 2: table is required"
