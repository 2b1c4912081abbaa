"""Why a connection attempt failed.

psycopg raises a bare ``OperationalError`` (no SQLSTATE) for every failure while connecting, so
this module is the one small place that tells them apart: first the server's own answers as libpq
words them (which prove the host was reached), then our own probe of DNS and TCP for the failures
that never reached a server.
"""

from __future__ import annotations

import re
import socket

from pgactions.spec.errors import ActionError

__all__ = ["diagnose_connect_failure", "libpq_reason"]

# libpq / server wording → code.  Checked in order; the first match wins.
_SERVER_ANSWERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), code)
    for pattern, code in (
        (r"(no pg_hba\.conf entry|pg_hba\.conf rejects connection).*no encryption", "SSL_REQUIRED"),
        (r"SSL connection is required|SSL off", "SSL_REQUIRED"),
        (r"requires a valid client certificate|certificate authentication failed", "AUTHENTICATION_FAILED"),
        (r"password authentication failed|authentication failed|"
         r"no password supplied|password is required|role .* does not exist|"
         r"no pg_hba\.conf entry|pg_hba\.conf rejects connection|not permitted to log in", "AUTHENTICATION_FAILED"),
        (r"database .* does not exist", "DATABASE_NOT_FOUND"),
        (r"too many (clients|connections)|remaining connection slots are reserved", "TOO_MANY_CONNECTIONS"),
        (r"certificate|SSL error|server does not support SSL|SSL SYSCALL|tlsv1 alert|"
         r"sslmode value .* invalid when SSL support|root certificate file|does not match host name", "SSL_FAILED"),
        (r"the database system is (starting up|shutting down|in recovery mode)", "CONNECTION_REFUSED"),
        (r"could not translate host name|Name or service not known|nodename nor servname", "HOST_NOT_FOUND"),
        (r"timeout expired", "CONNECTION_TIMEOUT"),
        (r"Connection refused", "CONNECTION_REFUSED"),
        (r"server closed the connection unexpectedly|terminating connection", "CONNECTION_LOST"),
    )
)


_LIBPQ_PREFIX = re.compile(
    r"^(?:-\s*host:.*?':\s*)?(?:connection failed:\s*)?"
    r"(?:connection to server (?:at|on) .*? failed:\s*)?(?:(?:FATAL|ERROR):\s+)?")


def libpq_reason(message: str) -> str:
    """The useful part of a libpq connection error: the server's or the socket's own words.

    libpq writes 'connection failed: connection to server at "h" (1.2.3.4), port 5432 failed:
    FATAL:  reason', once per address tried; the reasons are kept, each once.
    """
    reasons: list[str] = []
    for line in message.strip().splitlines():
        text = _LIBPQ_PREFIX.sub("", line.strip())
        if text and not text.startswith(("Is the server running", "Multiple connection attempts")) \
                and text not in reasons:
            reasons.append(text)
    return "; ".join(reasons) or message.strip()


def diagnose_connect_failure(message: str, host: str | None, port: int | None,
                             connect_timeout: float) -> ActionError:
    reason = libpq_reason(message)
    for pattern, code in _SERVER_ANSWERS[:8]:
        if pattern.search(message):
            return ActionError(code, reason)
    probed = _probe_network(host, port, connect_timeout)
    if probed is not None:
        return ActionError(probed, reason)
    for pattern, code in _SERVER_ANSWERS[8:]:
        if pattern.search(message):
            return ActionError(code, reason)
    return ActionError("CONNECTION_REFUSED" if "connect" in message.lower() else "DATABASE_ERROR", reason)


def _probe_network(host: str | None, port: int | None, timeout: float) -> str | None:
    """Reach the host ourselves: HOST_NOT_FOUND, CONNECTION_REFUSED, CONNECTION_TIMEOUT or None."""
    if not host or host.startswith("/"):
        return None  # a Unix socket: nothing to resolve
    first_host = host.split(",")[0]
    try:
        infos = socket.getaddrinfo(first_host, port or 5432, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return "HOST_NOT_FOUND"
    except UnicodeError:
        return "HOST_NOT_FOUND"
    outcome = "CONNECTION_REFUSED"
    for family, socktype, proto, _name, address in infos:
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(max(0.5, min(timeout, 10.0)))
        try:
            sock.connect(address)
            return None  # the port answers: the failure is further up
        except ConnectionRefusedError:
            outcome = "CONNECTION_REFUSED"
        except TimeoutError:
            outcome = "CONNECTION_TIMEOUT"
        except OSError:
            outcome = "CONNECTION_REFUSED"
        finally:
            sock.close()
    return outcome
