"""Test connection: every layer checked in order, timed, so a failure says which step failed.

Steps: ``dns`` → ``tcp`` → ``tls`` → ``authentication`` → ``database`` → ``query`` → ``privileges``.
DNS, TCP and TLS are checked by us (libpq does not say which of them failed, nor show the
certificate); authentication and the database are libpq's own connection, with a fresh,
unpooled connection.  The server answers both in one reply (it checks the database right after
the password), so the two steps share that time and the error's code tells which one failed.

A port that answers but not as PostgreSQL does fails with NOT_POSTGRESQL at the first step that
speaks the protocol: ``tls`` (our SSLRequest got an answer no PostgreSQL server gives) or, with
sslMode disable or allow, ``authentication`` (libpq's words, read in
:mod:`pgactions.connection.diagnosis`).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgactions.connection.diagnosis import not_postgresql_reason
from pgactions.connection.profiles import ConnectionProfile, load_profile
from pgactions.connection.tls_probe import probe_tls
from pgactions.db.errormap import map_exception, scrub
from pgactions.spec.errors import ActionError

__all__ = ["test_connection"]

STEPS = ("dns", "tcp", "tls", "authentication", "database", "query", "privileges")

_FACTS_SQL = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_user, current_database(), pg_is_in_recovery(),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       s.ssl, s.version, s.cipher,
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
       (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),
       (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user)::int,
       coalesce(%s, current_schema(), 'public')
FROM (SELECT 1) one LEFT JOIN pg_stat_ssl s ON s.pid = pg_backend_pid()
"""

_PRIVILEGES_SQL = """
SELECT has_schema_privilege(n.oid, 'USAGE'), has_schema_privilege(n.oid, 'CREATE'),
       coalesce(json_object_agg(c.relname, array_remove(ARRAY[
           CASE WHEN has_table_privilege(c.oid, 'SELECT') THEN 'SELECT' END,
           CASE WHEN has_table_privilege(c.oid, 'INSERT') THEN 'INSERT' END,
           CASE WHEN has_table_privilege(c.oid, 'UPDATE') THEN 'UPDATE' END,
           CASE WHEN has_table_privilege(c.oid, 'DELETE') THEN 'DELETE' END], NULL) ORDER BY c.relname)
         FILTER (WHERE c.oid IS NOT NULL), '{}')
FROM pg_namespace n
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
WHERE n.nspname = %s
GROUP BY n.oid
"""

# End of community support of each major version (PostgreSQL's versioning policy).
_END_OF_LIFE = {11: dt.date(2023, 11, 9), 12: dt.date(2024, 11, 21), 13: dt.date(2025, 11, 13),
                14: dt.date(2026, 11, 12), 15: dt.date(2027, 11, 11), 16: dt.date(2028, 11, 9),
                17: dt.date(2029, 11, 8), 18: dt.date(2030, 11, 14)}
_POOLER_PORTS = (6432, 6543)  # PgBouncer's default; Supabase's transaction pooler
CERTIFICATE_WARNING_DAYS = 30


class _Steps:
    """The report's steps, each timed; a failure marks the step and skips the rest."""

    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], Any], profile: ConnectionProfile) -> Any:
        entry: dict[str, Any] = {"name": name, "ok": False}
        self.done.append(entry)
        started = time.perf_counter()
        try:
            return_value = fn()
        except Exception as exc:
            raise _as_action_error(exc, name, profile) from None
        finally:
            entry["ms"] = round((time.perf_counter() - started) * 1000, 2)
        entry["ok"] = True
        return return_value

    def skip(self, name: str, why: str) -> None:
        self.done.append({"name": name, "ok": True, "skipped": True, "detail": why})

    def report(self, failed: str | None = None) -> list[dict[str, Any]]:
        named = {s["name"] for s in self.done}
        return self.done + [{"name": n, "ok": False, "skipped": True, "detail": f"not run: {failed} failed"}
                            for n in STEPS if n not in named and failed]


def _as_action_error(exc: Exception, step: str, profile: ConnectionProfile) -> ActionError:
    if isinstance(exc, ActionError):
        return exc
    where = f"{profile.host}:{profile.port}"
    if isinstance(exc, (socket.gaierror, UnicodeError)):
        return ActionError("HOST_NOT_FOUND", f"{profile.host!r} could not be resolved")
    if isinstance(exc, ConnectionRefusedError):
        return ActionError("CONNECTION_REFUSED", f"{where} refused the connection")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return ActionError("CONNECTION_TIMEOUT", f"{where} did not answer within {profile.connectTimeout:g}s")
    if isinstance(exc, OSError) and not isinstance(exc, psycopg.Error):
        return ActionError("CONNECTION_REFUSED", f"{where}: {exc.strerror or exc}")
    return map_exception(exc, connecting=step == "authentication", host=profile.host, port=profile.port,
                         connect_timeout=profile.connectTimeout)


def test_connection(connection: str | dict[str, Any] | ConnectionProfile) -> dict[str, Any]:
    """Check a connection layer by layer and report what a careful DBA would check."""
    steps = _Steps()
    secrets: tuple[str, ...] = ()
    try:
        profile = load_profile(connection)
    except ActionError as exc:
        return {"ok": False, "failedStep": "profile", "steps": [], "error": exc.payload}
    secrets = profile.secrets()
    try:
        tls = _network_steps(steps, profile)
        conn = steps.run("authentication", lambda: psycopg.connect(**profile.connect_kwargs()), profile)
        steps.done.append({"name": "database", "ok": True, "ms": 0.0,
                           "detail": "checked by the server together with authentication"})
        with conn:
            facts = steps.run("query", lambda: conn.execute(_FACTS_SQL, [profile.schema]).fetchone(), profile)
            privileges = steps.run("privileges", lambda: _privileges(conn, facts[-1]), profile)
    except ActionError as exc:
        failed = _failed_step(steps, exc)
        return {"ok": False, "failedStep": failed, "steps": scrub(steps.report(failed), secrets),
                "error": scrub(exc.payload, secrets)}
    return scrub(_report(profile, steps.report(), tls, facts, privileges), secrets)


def _failed_step(steps: _Steps, exc: ActionError) -> str:
    """The step a failure belongs to; a missing database is reported by the connect call."""
    last = steps.done[-1]
    if exc.code == "DATABASE_NOT_FOUND" and last["name"] == "authentication":
        last["ok"] = True
        last["detail"] = "the credentials were accepted"
        steps.done.append({"name": "database", "ok": False, "ms": 0.0})
    return str(steps.done[-1]["name"])


def _network_steps(steps: _Steps, profile: ConnectionProfile) -> dict[str, Any] | None:
    """DNS, TCP and TLS (ours); returns the TLS facts, None when TLS was not attempted."""
    host = profile.host.split(",")[0]
    if host.startswith("/"):
        for name in ("dns", "tcp", "tls"):
            steps.skip(name, "a Unix socket")
        return None
    hostaddr = dict(profile.extraOptions).get("hostaddr")
    if hostaddr:
        steps.skip("dns", f"hostaddr {hostaddr} given")
        address: Any = (hostaddr.split(",")[0], profile.port)
    else:
        infos = steps.run("dns", lambda: socket.getaddrinfo(host, profile.port, type=socket.SOCK_STREAM), profile)
        steps.done[-1]["detail"] = ", ".join(sorted({str(i[4][0]) for i in infos}))
        address = infos[0][4][:2]

    def connect() -> socket.socket:
        return socket.create_connection(address, timeout=profile.connectTimeout)

    sock = steps.run("tcp", connect, profile)
    steps.done[-1]["detail"] = f"{address[0]}:{address[1]}"
    try:
        if profile.sslMode in ("disable", "allow"):
            # allow: libpq tries without SSL first, so our TLS look would describe another session.
            steps.skip("tls", f"sslMode is {profile.sslMode}")
            return None
        tls: dict[str, Any] = steps.run("tls", lambda: _probe_tls(sock, profile, connect), profile)
        if not tls["offered"]:
            steps.done[-1]["detail"] = "the server does not offer SSL"
        else:
            cert = tls.get("certificate") or {}
            steps.done[-1]["detail"] = f"{tls['protocol']}, {tls['cipher']}, certificate {cert.get('subject')}"
        return tls
    finally:
        sock.close()


def _probe_tls(sock: socket.socket, profile: ConnectionProfile, connect: Callable[[], socket.socket]) -> dict[str, Any]:
    """Our TLS look; when it finds no TLS, or the handshake breaks, first make sure the peer is
    PostgreSQL at all: a web server's answer is not "the server does not offer SSL"."""
    try:
        tls: dict[str, Any] = probe_tls(sock, profile, connect)
    except ActionError as exc:
        if exc.code == "SSL_FAILED" and "certificate" not in exc.payload:
            _fail_unless_postgresql(profile, connect)
        raise
    except ConnectionError:  # closed or reset while asking for TLS (a silent peer times out: not asked again)
        _fail_unless_postgresql(profile, connect)
        raise
    if not tls["offered"]:
        _fail_unless_postgresql(profile, connect)
    return tls


def _fail_unless_postgresql(profile: ConnectionProfile, connect: Callable[[], socket.socket]) -> None:
    """Ask the peer PostgreSQL's first question on a fresh connection; NOT_POSTGRESQL if it answers
    otherwise.  A peer that cannot be reached again or stays silent leaves the caller's verdict."""
    try:
        sock = connect()
    except OSError:
        return
    with sock:
        why = not_postgresql_reason(sock, profile.connectTimeout)
    if why:
        raise ActionError("NOT_POSTGRESQL", f"{profile.host}:{profile.port}: {why}")


def _privileges(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    row = conn.execute(_PRIVILEGES_SQL, [schema]).fetchone()
    if row is None:
        return {"schema": schema, "exists": False}
    usage, create, by_table = row
    counts = {p.lower(): sum(p in granted for granted in by_table.values())
              for p in ("SELECT", "INSERT", "UPDATE", "DELETE")}
    return {"schema": schema, "exists": True, "usage": usage, "create": create,
            "tables": len(by_table), **counts, "byTable": by_table}


def _report(profile: ConnectionProfile, steps: list[dict[str, Any]], tls: dict[str, Any] | None,
            facts: tuple[Any, ...], privileges: dict[str, Any]) -> dict[str, Any]:
    (version, version_num, user, database, standby, superuser, ssl_in_use, ssl_version, cipher,
     max_connections, reserved, client_backends, role_limit, role_sessions, _schema) = facts
    available = max_connections - client_backends - (0 if superuser else reserved)
    if role_limit is not None and role_limit >= 0:
        available = min(available, role_limit - role_sessions)
    certificate = (tls or {}).get("certificate")
    report = {
        "ok": True, "steps": steps, "serverVersion": version, "user": user, "database": database,
        "standby": bool(standby), "superuser": bool(superuser),
        "ssl": {"inUse": bool(ssl_in_use), "protocol": ssl_version, "cipher": cipher,
                "verified": bool(ssl_in_use) and profile.sslMode in ("verify-ca", "verify-full"),
                "certificate": certificate},
        "connections": {"max": max_connections, "inUse": client_backends,
                        "roleLimit": role_limit if role_limit is not None and role_limit >= 0 else None},
        "connectionsAvailable": available,
        "privileges": privileges,
    }
    report["warnings"] = _warnings(profile, report, version_num)
    return report


def _warnings(profile: ConnectionProfile, report: dict[str, Any], version_num: int) -> list[str]:
    warnings = []
    ssl_facts = report["ssl"]
    certificate = ssl_facts["certificate"]
    if not ssl_facts["inUse"]:
        warnings.append("SSL is not in use: data and the password travel unencrypted. Use sslMode "
                        "require, or better verify-full with the server's CA certificate.")
    elif not ssl_facts["verified"]:
        warnings.append("The server's certificate is not verified, so an impostor could answer: use sslMode "
                        "verify-full with the CA certificate in sslRootCert.")
    if certificate:
        days = certificate["daysLeft"]
        if certificate["selfSigned"] and not ssl_facts["verified"]:
            warnings.append("The server's certificate is self-signed: to verify it, give the certificate "
                            "itself as sslRootCert and use verify-full.")
        if days < 0:
            warnings.append(f"The server's certificate expired on {certificate['notAfter'][:10]}.")
        elif days <= CERTIFICATE_WARNING_DAYS:
            warnings.append(f"The server's certificate expires in {days} day{'s' if days != 1 else ''} "
                            f"({certificate['notAfter'][:10]}): verify-ca/verify-full connections will fail "
                            "after that unless it is renewed.")
    if report["superuser"]:
        warnings.append("This user is a superuser: use a role with only the privileges the flows need.")
    if report["standby"]:
        warnings.append("This server is a read-only standby: Insert, Update, Delete and Execute Query "
                        "will fail. Connect to the primary for writes.")
    available = report["connectionsAvailable"]
    if available is not None and available < 5:
        warnings.append(f"Only {max(available, 0)} connection slot(s) are left for this user: actions may "
                        "fail with TOO_MANY_CONNECTIONS. Lower maxConnections elsewhere, or use a pooler.")
    privileges = report["privileges"]
    if not privileges.get("exists"):
        warnings.append(f"The schema {privileges['schema']!r} does not exist.")
    elif not privileges["usage"]:
        warnings.append(f"This user has no USAGE privilege on schema {privileges['schema']!r}: "
                        "its tables cannot be used.")
    elif privileges["tables"] and not privileges["select"]:
        warnings.append(f"This user may not read any table of schema {privileges['schema']!r}.")
    if profile.port in _POOLER_PORTS and not profile.pgbouncer:
        warnings.append(f"Port {profile.port} is usually a connection pooler (PgBouncer, Supabase): "
                        "turn on the pgbouncer setting if it pools by transaction.")
    major = version_num // 10000
    end = _END_OF_LIFE.get(major)
    if (end and end < dt.date.today()) or major < min(_END_OF_LIFE):
        warnings.append(f"PostgreSQL {major} no longer receives security fixes: plan an upgrade.")
    return warnings


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
