"""Test connection: each step timed, so a failure says which step failed and what to do."""

from __future__ import annotations

import socket
import time
from typing import Any

import psycopg

from .boundary import map_exception, scrub
from .errors import ActionError
from .profiles import ConnectionProfile, load_profile

__all__ = ["test_connection"]

_FACTS_SQL = """
SELECT current_setting('server_version'), current_user, current_database(),
       pg_is_in_recovery(), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       s.ssl, s.version, s.cipher,
       current_setting('max_connections')::int - (SELECT count(*) FROM pg_stat_activity)
FROM (SELECT 1) one LEFT JOIN pg_stat_ssl s ON s.pid = pg_backend_pid()
"""


def test_connection(connection: str | dict[str, Any] | ConnectionProfile) -> dict[str, Any]:
    """Connect with a fresh (unpooled) connection and report what a careful DBA would check."""
    steps: list[dict[str, Any]] = []
    secrets: tuple[str, ...] = ()
    try:
        profile = load_profile(connection)
        secrets = profile.secrets()
        if profile.host and not profile.host.startswith("/"):
            _step(steps, "dns", lambda: socket.getaddrinfo(profile.host, profile.port, type=socket.SOCK_STREAM),
                  profile)
            _step(steps, "tcp", lambda: socket.create_connection((profile.host, profile.port),
                                                                 timeout=profile.connectTimeout).close(), profile)
        conn = _step(steps, "connect", lambda: psycopg.connect(**profile.connect_kwargs()), profile)
        try:
            facts = _step(steps, "query", lambda: conn.execute(_FACTS_SQL).fetchone(), profile)
        finally:
            conn.close()
    except ActionError as exc:
        return {"ok": False, "failedStep": steps[-1]["name"] if steps else "profile", "steps": steps,
                "error": scrub(exc.payload, secrets)}
    version, user, database, standby, superuser, ssl, ssl_version, cipher, headroom = facts
    warnings = []
    if not ssl:
        warnings.append("SSL is not in use: data and the password travel unencrypted. Use sslMode require or verify-full.")
    elif profile.sslMode not in ("verify-ca", "verify-full"):
        warnings.append("The server's certificate is not verified: use sslMode verify-full with its CA certificate.")
    if superuser:
        warnings.append("This user is a superuser: use a role with only the privileges the flows need.")
    if headroom is not None and headroom < 5:
        warnings.append(f"Only {headroom} connection slot(s) are left under max_connections.")
    return {
        "ok": True, "steps": steps, "serverVersion": version, "user": user, "database": database,
        "standby": bool(standby), "superuser": bool(superuser),
        "ssl": {"inUse": bool(ssl), "protocol": ssl_version, "cipher": cipher},
        "connectionsAvailable": headroom, "warnings": warnings,
    }


def _step(steps: list[dict[str, Any]], name: str, fn: Any, profile: ConnectionProfile) -> Any:
    started = time.perf_counter()
    entry: dict[str, Any] = {"name": name, "ok": False}
    steps.append(entry)
    try:
        result = fn()
    except socket.gaierror:
        raise ActionError("HOST_NOT_FOUND", f"{profile.host!r} could not be resolved") from None
    except ConnectionRefusedError:
        raise ActionError("CONNECTION_REFUSED", f"{profile.host}:{profile.port} refused the connection") from None
    except TimeoutError:
        raise ActionError("CONNECTION_TIMEOUT", f"{profile.host}:{profile.port} did not answer within "
                                                f"{profile.connectTimeout:g}s") from None
    except OSError as exc:
        raise ActionError("CONNECTION_REFUSED", f"{profile.host}:{profile.port}: {exc.strerror or exc}") from None
    except psycopg.Error as exc:
        raise map_exception(exc, connecting=name == "connect", host=profile.host, port=profile.port,
                            connect_timeout=profile.connectTimeout) from None
    finally:
        entry["ms"] = round((time.perf_counter() - started) * 1000, 2)
    entry["ok"] = True
    return result

test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
