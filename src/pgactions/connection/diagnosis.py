"""Why a connection attempt failed.

psycopg raises a bare ``OperationalError`` (no SQLSTATE) for every failure while connecting, so
this module is the one small place that tells them apart: first the server's own answers as libpq
words them (which prove the host was reached), then our own probe of DNS and TCP for the failures
that never reached a server.

Something other than PostgreSQL on the port (a web server, SSH, another database, a proxy with
nothing behind it) is NOT_POSTGRESQL, not a refusal: libpq's own words say so when the peer sent a
byte PostgreSQL never sends at that point ("expected authentication request from server, but
received H").  Other words are ambiguous ("server closed the connection unexpectedly" is also what
a crashing server says), so for those we ask the peer the first question of the protocol ourselves
(:func:`not_postgresql_reason`): a PostgreSQL server answers an SSLRequest with exactly one byte,
``S`` or ``N`` (or, when it cannot start a backend, an error message).
"""

from __future__ import annotations

import re
import socket
import string
import struct

from pgactions.spec.errors import ActionError

__all__ = ["diagnose_connect_failure", "libpq_reason", "not_postgresql_reason"]

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

# libpq's words for a peer that answered, but not as PostgreSQL does (libpq's own comment: "anything
# else probably means it's not Postgres on the other end at all").  Checked before everything else:
# with sslMode prefer libpq first tries SSL, so "SSL error: …" may precede the telling words.
_NOT_POSTGRESQL = re.compile(
    r"expected authentication request from server, but received|"
    r"received invalid response to (SSL|GSSAPI) negotiation|"
    r"received invalid (authentication request|error message|protocol negotiation message)|"
    r"unexpected message from server during startup|"
    r"authentication method \d{3,} not supported",  # PostgreSQL's methods are numbered 0 to 12
    re.IGNORECASE)

# Words a PostgreSQL server may also cause: the peer is asked itself before they are believed.
_AMBIGUOUS = re.compile(
    r"server closed the connection unexpectedly|server sent an error response during SSL exchange|"
    r"SSL error: (wrong version number|unexpected eof while reading|packet length too long|record layer failure)|"
    r"SSL SYSCALL error: EOF detected",
    re.IGNORECASE)

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest: the first message a client may send


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
    if _NOT_POSTGRESQL.search(message):
        return ActionError("NOT_POSTGRESQL", reason)
    ambiguous = bool(_AMBIGUOUS.search(message))
    if not ambiguous:
        for pattern, code in _SERVER_ANSWERS[:8]:
            if pattern.search(message):
                return ActionError(code, reason)
    unexplained = not any(pattern.search(message) for pattern, _ in _SERVER_ANSWERS)
    probed = _probe_network(host, port, connect_timeout, ask_postgresql=ambiguous or unexplained)
    if probed is not None:
        code, why = probed
        return ActionError(code, f"{reason}; {why}" if why else reason)
    for pattern, code in _SERVER_ANSWERS if ambiguous else _SERVER_ANSWERS[8:]:
        if pattern.search(message):
            return ActionError(code, reason)
    return ActionError("CONNECTION_REFUSED" if "connect" in message.lower() else "DATABASE_ERROR", reason)


def not_postgresql_reason(sock: socket.socket, timeout: float) -> str | None:
    """Ask the peer on a connected *sock* PostgreSQL's first question (an SSLRequest) and judge
    the answer: a reason it is not PostgreSQL, or None when it answered as PostgreSQL does or did
    not answer in time (a silent peer proves nothing).  Sends nothing secret."""
    try:
        sock.settimeout(max(0.5, min(timeout, 5.0)))
        sock.sendall(_SSL_REQUEST)
        answer = sock.recv(256)
        if answer in (b"S", b"N"):
            # PostgreSQL now waits for us; a peer that keeps talking is something else (SSH greets).
            sock.settimeout(0.2)
            try:
                answer += sock.recv(256)
            except TimeoutError:
                return None
    except TimeoutError:
        return None
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return "it closed the connection without answering PostgreSQL's SSL request"
    except OSError:
        return None
    if not answer:
        return "it closed the connection without answering PostgreSQL's SSL request"
    if answer[:1] == b"E" and _looks_like_error_message(answer):
        return None  # a server that could not start a backend says so in PostgreSQL's format
    return f"it answered PostgreSQL's SSL request with {_shown(answer)}"


def _looks_like_error_message(data: bytes) -> bool:
    """'E', a length, then a field such as 'S' + 'FATAL' + a zero byte: PostgreSQL's ErrorResponse."""
    if len(data) < 7:
        return False
    length = struct.unpack("!i", data[1:5])[0]
    return 8 <= length <= 30000 and data[5:6] in (b"S", b"V", b"C", b"M") and b"\0" in data[5:]


def _shown(answer: bytes) -> str:
    """The peer's answer as a user can read it: its first line when it is text, else its size."""
    text = answer.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    if text and all(ch in string.printable for ch in text):
        return repr(text[:60] + ("…" if len(text) > 60 else ""))
    return f"{len(answer)} byte{'s' if len(answer) != 1 else ''} that are not PostgreSQL's protocol"


def _probe_network(host: str | None, port: int | None, timeout: float,
                   ask_postgresql: bool = False) -> tuple[str, str] | None:
    """Reach the host ourselves: (HOST_NOT_FOUND, CONNECTION_REFUSED or CONNECTION_TIMEOUT, ""), or
    with *ask_postgresql* (NOT_POSTGRESQL, why) when the port answers but not as PostgreSQL does;
    None when the port answers (as PostgreSQL does, or is not asked)."""
    if not host or host.startswith("/"):
        return None  # a Unix socket: nothing to resolve
    first_host = host.split(",")[0]
    try:
        infos = socket.getaddrinfo(first_host, port or 5432, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return "HOST_NOT_FOUND", ""
    except UnicodeError:
        return "HOST_NOT_FOUND", ""
    outcome = "CONNECTION_REFUSED"
    for family, socktype, proto, _name, address in infos:
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(max(0.5, min(timeout, 10.0)))
        try:
            sock.connect(address)
            # The port answers: the failure is further up, unless the peer is not PostgreSQL.
            why = not_postgresql_reason(sock, timeout) if ask_postgresql else None
            return ("NOT_POSTGRESQL", why) if why else None
        except ConnectionRefusedError:
            outcome = "CONNECTION_REFUSED"
        except TimeoutError:
            outcome = "CONNECTION_TIMEOUT"
        except OSError:
            outcome = "CONNECTION_REFUSED"
        finally:
            sock.close()
    return outcome, ""
