"""Opening the service's state store, and what both stores share: the id rules and how records
are written as JSON.  ``serve`` and ``keys`` both open their store with :func:`open_store`."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgactions.service.crypto import Keyring
from pgactions.service.store import IdempotencyRecord, KeyRecord, StateStore

__all__ = ["IDEMPOTENCY_TTL", "check_id", "default_state_dir", "idempotency_from_json", "idempotency_to_json",
           "key_from_json", "key_to_json", "open_store", "valid_id"]

IDEMPOTENCY_TTL = 24 * 3600.0  # seconds an idempotency record is kept

# Connection ids and key names: also file names in the file store, so no separators, no leading
# dot, nothing a path could be tricked with.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, what: str = "connection id") -> str:
    if not valid_id(value):
        raise ValueError(f"{what} {value!r:.80} is not valid: use 1 to 64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    assert isinstance(value, str)
    return value


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$XDG_STATE_HOME/pgactions, else ~/.local/state/pgactions."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "").strip()
    # The XDG spec: a relative path in the variable is invalid and is ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "pgactions"


def open_store(state_dir: str | None, state_url: str | None, *,
               environ: Mapping[str, str] | None = None) -> StateStore:
    """The store ``--state-dir`` / ``--state-url`` name (the default state directory without either).

    With *state_url* the secret key must come from PGACTIONS_SECRET_KEY (every host sharing the store
    needs the same key); with a state directory it may also come from the directory's key file,
    created on first use.  Raises :class:`pgactions.service.crypto.SecretKeyError` (a ValueError)
    for a missing or bad key, ValueError for a URL that is not postgresql://, OSError when the
    directory cannot be made, psycopg.Error when the database cannot be reached.
    """
    if state_url is not None:
        if not state_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("--state-url must be a postgresql:// URL")
        from pgactions.service.pgstore import PostgresStore

        return PostgresStore(state_url, Keyring.from_environment(None, require_env=True, environ=environ))
    from pgactions.service.filestore import FileStore

    directory = Path(state_dir).expanduser() if state_dir else default_state_dir(environ)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return FileStore(directory, Keyring.from_environment(directory, require_env=False, environ=environ))


# -- records as JSON (the file store's files, and the PostgreSQL store's jsonb) --------------------

def key_to_json(record: KeyRecord) -> dict[str, Any]:
    return {"name": record.name, "keyHash": record.key_hash, "created": record.created, "expires": record.expires,
            "revoked": record.revoked, "actions": _list(record.actions), "connections": _list(record.connections),
            "readOnly": record.read_only, "pinned": record.pinned, "allowSql": record.allow_sql}


def key_from_json(data: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(name=data["name"], key_hash=data["keyHash"], created=float(data["created"]),
                     expires=None if data.get("expires") is None else float(data["expires"]),
                     revoked=bool(data.get("revoked")), actions=_tuple(data.get("actions")),
                     connections=_tuple(data.get("connections")), read_only=bool(data.get("readOnly")),
                     pinned=dict(data.get("pinned") or {}), allow_sql=bool(data.get("allowSql")))


def idempotency_to_json(record: IdempotencyRecord) -> dict[str, Any]:
    return {"key": record.key, "bodyHash": record.body_hash, "created": record.created, "status": record.status,
            "response": base64.b64encode(record.response).decode("ascii"), "headers": record.headers}


def idempotency_from_json(data: Mapping[str, Any]) -> IdempotencyRecord:
    return IdempotencyRecord(key=data["key"], body_hash=data["bodyHash"], created=float(data["created"]),
                             status=data.get("status"), response=base64.b64decode(data.get("response") or ""),
                             headers=dict(data.get("headers") or {}))


def _list(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _tuple(values: Any) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
