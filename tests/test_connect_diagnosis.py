"""libpq's connection messages (no SQLSTATE in psycopg) → codes, in the one place that reads them.

The real failures are provoked in test_errors.py; these are the exact words libpq and the server
use for the cases a test server cannot easily produce (older servers, other wordings).
"""

from __future__ import annotations

import pytest

from pgactions.connection.diagnosis import diagnose_connect_failure, libpq_reason

PREFIX = 'connection failed: connection to server at "db.example.com" (10.0.0.5), port 5432 failed: '


@pytest.mark.parametrize("message, code", [
    ('FATAL:  password authentication failed for user "app"', "AUTHENTICATION_FAILED"),
    ('FATAL:  role "ghost" does not exist', "AUTHENTICATION_FAILED"),
    ('FATAL:  role "app" is not permitted to log in', "AUTHENTICATION_FAILED"),
    ("fe_sendauth: no password supplied", "AUTHENTICATION_FAILED"),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app", database "app", SSL encryption',
     "AUTHENTICATION_FAILED"),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app", database "app", no encryption',
     "SSL_REQUIRED"),
    ('FATAL:  pg_hba.conf rejects connection for host "10.0.0.9", user "app", database "app", no encryption',
     "SSL_REQUIRED"),
    ('FATAL:  database "nope" does not exist', "DATABASE_NOT_FOUND"),
    ("FATAL:  sorry, too many clients already", "TOO_MANY_CONNECTIONS"),
    ("FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
     "TOO_MANY_CONNECTIONS"),
    ('FATAL:  too many connections for role "app"', "TOO_MANY_CONNECTIONS"),
    ("server does not support SSL, but SSL was required", "SSL_FAILED"),
    ("SSL error: certificate verify failed", "SSL_FAILED"),
    ('server certificate for "db.internal" does not match host name "db.example.com"', "SSL_FAILED"),
    ('root certificate file "/root/.postgresql/root.crt" does not exist', "SSL_FAILED"),
    ("FATAL:  the database system is starting up", "CONNECTION_REFUSED"),
])
def test_server_answers(message, code) -> None:
    # The host is not probed for these: the message proves the server answered.
    error = diagnose_connect_failure(PREFIX + message, "db.example.com", 5432, 1)
    assert error.code == code
    assert error.payload["detail"] == message.replace("FATAL:  ", "")


def test_reason_of_a_multi_host_message() -> None:
    message = ('connection failed: connection to server at "127.0.0.1", port 5433 failed: Connection refused\n'
               '\tIs the server running on that host and accepting TCP/IP connections?\n'
               'Multiple connection attempts failed. All failures were:\n'
               '- host: \'127.0.0.1\', port: \'5433\', hostaddr: \'127.0.0.1\': connection failed: connection to '
               'server at "127.0.0.1", port 5433 failed: Connection refused')
    reason = libpq_reason(message)
    assert reason.startswith("Connection refused")
    assert "connection failed" not in reason


@pytest.mark.parametrize("message", [
    "expected authentication request from server, but received H",  # a web server, sslmode disable
    "received invalid response to SSL negotiation: H",  # the same with sslmode prefer/require
    "received invalid response to GSSAPI negotiation: J",
    "received invalid authentication request",
    "received invalid error message",
    "authentication method 1765422316 not supported",  # a random 'R' message: PostgreSQL's are 0-12
    # sslmode prefer: libpq tried SSL first (the peer's first byte happened to be S), then without.
    "SSL error: unexpected eof while reading\n" + PREFIX + "expected authentication request from server, but received S",
])
def test_not_postgresql_answers(message) -> None:
    # libpq's words prove the peer is not PostgreSQL: no probe (db.example.com is never contacted).
    error = diagnose_connect_failure(PREFIX + message, "db.example.com", 5432, 1)
    assert error.code == "NOT_POSTGRESQL"
    assert error.payload["retryable"] is False
    assert "connection failed" not in error.payload["detail"]
