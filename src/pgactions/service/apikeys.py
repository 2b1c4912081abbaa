"""API keys: made once, shown once, stored only as a hash.

A key is ``pga_`` + 256 random bits (URL-safe base64).  With that much entropy a plain SHA-256 is a
sufficient hash (nobody can guess a preimage; a slow hash would only slow every request down), and
a lookup by hash needs no per-key salt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pgactions.service.principal import Principal
from pgactions.service.state import check_id
from pgactions.service.store import KeyRecord, StateStore

__all__ = ["KEY_PREFIX", "create_key", "hash_key", "principal_for_key", "verify_key"]

KEY_PREFIX = "pga_"
_MAX_KEY_LENGTH = 200  # a longer bearer value is no key of ours: refused before hashing


def hash_key(key_text: str) -> str:
    return hashlib.sha256(key_text.encode("utf-8")).hexdigest()


def create_key(store: StateStore, name: str, actions: Iterable[str] | None = None,
               connections: Iterable[str] | None = None, read_only: bool = False,
               expires_days: float | None = None, pinned: Mapping[str, Any] | None = None,
               allow_sql: bool = False, now: float | None = None) -> tuple[KeyRecord, str]:
    """Make and store a key; returns its record and the key text (to show once — it is not kept).

    ValueError for a bad name, a name in use, a non-positive expiry or non-object pinned values.
    """
    check_id(name, "key name")
    if expires_days is not None and not expires_days > 0:
        raise ValueError("--expires must be a positive number of days")
    if pinned is not None and not isinstance(pinned, Mapping):
        raise ValueError("the pinned context must be a JSON object")
    created = time.time() if now is None else now
    key_text = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(
        name=name, key_hash=hash_key(key_text), created=created,
        expires=None if expires_days is None else created + expires_days * 86400.0,
        actions=None if actions is None else tuple(dict.fromkeys(actions)),
        connections=None if connections is None else tuple(dict.fromkeys(connections)),
        read_only=read_only, pinned=dict(pinned or {}), allow_sql=allow_sql)
    store.put_key(record)
    return record, key_text


def usable(record: KeyRecord, now: float) -> bool:
    return not record.revoked and (record.expires is None or now < record.expires)


def verify_key(store: StateStore, key_text: str, now: float | None = None) -> KeyRecord | None:
    """The key's record, or None when the key is unknown, revoked or expired."""
    if not key_text.startswith(KEY_PREFIX) or len(key_text) > _MAX_KEY_LENGTH:
        return None
    key_hash = hash_key(key_text)
    record = store.find_key(key_hash)
    # A host's own store may match loosely; compare here too, in constant time.
    if record is None or not hmac.compare_digest(record.key_hash, key_hash):
        return None
    return record if usable(record, time.time() if now is None else now) else None


def principal_for_key(record: KeyRecord) -> Principal:
    return Principal(
        name=record.name, kind="key",
        actions=None if record.actions is None else frozenset(record.actions),
        connections=None if record.connections is None else frozenset(record.connections),
        read_only=record.read_only, pinned=dict(record.pinned), allow_sql=record.allow_sql,
        credential=record.key_hash[:32])
