"""The default state store: one JSON file per record in the state directory.

::

    STATE_DIR/               0700
      secret.key             0600, unless PGACTIONS_SECRET_KEY is set (crypto.py)
      connections/<id>.json  a profile, each secret encrypted on its own
      keys/<name>.json       an API key's hash and scope
      idempotency/<sha256(key)>.json
      subscriptions/<id>.json  a trigger subscription, its secret and URL encrypted
      subscriptions/.<id>.lease  flock()ed by the process running the subscription

Every write is atomic and durable: the new text goes to a temporary file in the same directory,
is fsynced, replaces the old file with ``os.replace`` and the directory is fsynced — so a process
killed at any moment (``kill -9``) leaves each record whole, old or new.  Temporary files start
with a dot and are never read; stale ones are removed when a store opens.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pgactions.service.crypto import Keyring, open_profile, profile_needs_reencrypt, seal_profile
from pgactions.service.state import (
    IDEMPOTENCY_TTL,
    check_id,
    idempotency_from_json,
    idempotency_to_json,
    key_from_json,
    key_to_json,
    valid_id,
)
from pgactions.service.store import (
    IdempotencyRecord,
    KeyRecord,
    SubscriptionRecord,
    subscription_changes_json,
    subscription_from_json,
    subscription_to_json,
)

__all__ = ["FileStore"]

_STALE_TEMP = 3600.0  # a temporary file older than this was left by a killed writer
_SWEEP_EVERY = 3600.0  # how often expired idempotency records are swept


class FileStore:
    """A :class:`~pgactions.service.store.StateStore` in a directory (one host; many processes of it)."""

    def __init__(self, state_dir: Path, keyring: Keyring) -> None:
        self.root = Path(state_dir)
        self.keyring = keyring
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dirs = {name: self.root / name for name in ("connections", "keys", "idempotency",
                                                                  "subscriptions")}
        for directory in self._dirs.values():
            directory.mkdir(exist_ok=True, mode=0o700)
            _remove_stale_temps(directory)
        self._last_sweep = 0.0

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    # -- connections ------------------------------------------------------------------------------

    def put_connection(self, connection_id: str, profile: dict[str, Any]) -> None:
        path = self._dirs["connections"] / f"{check_id(connection_id)}.json"
        document = {"id": connection_id, "profile": seal_profile(self.keyring, profile), "updated": time.time()}
        _write_atomic(path, _dump(document))

    def get_connection(self, connection_id: str) -> dict[str, Any] | None:
        stored = self._stored_profile(connection_id)
        return None if stored is None else open_profile(self.keyring, stored)

    def connection_needs_reencrypt(self, connection_id: str) -> bool:
        stored = self._stored_profile(connection_id)
        return stored is not None and profile_needs_reencrypt(self.keyring, stored)

    def list_connections(self) -> list[str]:
        return sorted(name for name in _names(self._dirs["connections"]))

    def delete_connection(self, connection_id: str) -> bool:
        if not valid_id(connection_id):
            return False  # no such file can exist
        return _remove(self._dirs["connections"] / f"{connection_id}.json")

    def _stored_profile(self, connection_id: str) -> dict[str, Any] | None:
        if not valid_id(connection_id):
            return None  # an id no connection can have: simply not found
        document = _read(self._dirs["connections"] / f"{connection_id}.json")
        return None if document is None else dict(document["profile"])

    # -- API keys ---------------------------------------------------------------------------------

    def put_key(self, record: KeyRecord) -> None:
        path = self._dirs["keys"] / f"{check_id(record.name, 'key name')}.json"
        data = _dump(key_to_json(record))
        if _create_exclusive(path, data):
            return
        existing = _read(path)
        if existing is not None and not existing.get("revoked"):
            raise ValueError(f"an API key named {record.name!r} exists; revoke it first or choose another name")
        _write_atomic(path, data)  # the name of a revoked key may be given to a new one

    def find_key(self, key_hash: str) -> KeyRecord | None:
        found = None
        for record in self.list_keys():
            # Compare every record, in constant time: how long this takes says nothing about the hash.
            if hmac.compare_digest(record.key_hash.encode(), key_hash.encode()):
                found = record
        return found

    def list_keys(self) -> list[KeyRecord]:
        records = []
        for name in sorted(_names(self._dirs["keys"])):
            document = _read(self._dirs["keys"] / f"{name}.json")
            if document is not None:
                records.append(key_from_json(document))
        return records

    def revoke_key(self, name: str) -> bool:
        if not valid_id(name):
            return False
        path = self._dirs["keys"] / f"{name}.json"
        with _locked(self._dirs["keys"]):  # two revokes, or a revoke and a re-create, do not interleave
            document = _read(path)
            if document is None:
                return False
            _write_atomic(path, _dump(key_to_json(replace(key_from_json(document), revoked=True))))
        return True

    # -- idempotency ------------------------------------------------------------------------------

    def claim_idempotency(self, key: str, body_hash: str, now: float) -> IdempotencyRecord | None:
        self._sweep(now)
        path = self._idempotency_path(key)
        data = _dump(idempotency_to_json(IdempotencyRecord(key=key, body_hash=body_hash, created=now)))
        for _ in range(3):
            if _create_exclusive(path, data):  # atomic across processes: exactly one caller creates it
                return None
            existing = _read(path)
            if existing is not None and now - float(existing["created"]) < IDEMPOTENCY_TTL:
                return idempotency_from_json(existing)
            # Expired (or removed meanwhile): remove it under the lock, re-checking there, so that two
            # callers cannot each remove the other's fresh claim.
            with _locked(self._dirs["idempotency"]):
                existing = _read(path)
                if existing is not None and now - float(existing["created"]) >= IDEMPOTENCY_TTL:
                    _remove(path)
        existing = _read(path)
        if existing is None:
            raise OSError(f"could not claim an idempotency record in {self._dirs['idempotency']}")
        return idempotency_from_json(existing)

    def finish_idempotency(self, key: str, status: int, response: bytes, headers: dict[str, str]) -> None:
        path = self._idempotency_path(key)
        existing = _read(path)
        if existing is None:
            return  # released or expired meanwhile: nothing to finish
        record = replace(idempotency_from_json(existing), status=status, response=response, headers=dict(headers))
        _write_atomic(path, _dump(idempotency_to_json(record)))

    def release_idempotency(self, key: str) -> None:
        _remove(self._idempotency_path(key))

    def _idempotency_path(self, key: str) -> Path:
        # Hashed: the key is the caller's text (any characters, any length).
        return self._dirs["idempotency"] / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.json"

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY:
            return
        self._last_sweep = now
        directory = self._dirs["idempotency"]
        with _locked(directory):
            for name in _names(directory):
                document = _read(directory / f"{name}.json")
                if document is not None and now - float(document["created"]) >= IDEMPOTENCY_TTL:
                    _remove(directory / f"{name}.json")

    # -- trigger subscriptions ----------------------------------------------------------------------

    def put_subscription(self, record: SubscriptionRecord) -> None:
        path = self._dirs["subscriptions"] / f"{check_id(record.id, 'subscription id')}.json"
        with _locked(self._dirs["subscriptions"]):
            _write_atomic(path, _dump(subscription_to_json(record, self.keyring)))

    def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        if not valid_id(subscription_id):
            return None
        document = _read(self._dirs["subscriptions"] / f"{subscription_id}.json")
        return None if document is None else subscription_from_json(document, self.keyring)

    def list_subscriptions(self) -> list[SubscriptionRecord]:
        found = []
        for name in sorted(_names(self._dirs["subscriptions"])):
            record = self.get_subscription(name)
            if record is not None:
                found.append(record)
        return found

    def delete_subscription(self, subscription_id: str) -> bool:
        if not valid_id(subscription_id):
            return False
        directory = self._dirs["subscriptions"]
        with _locked(directory):  # never between an update's read and its write
            gone = _remove(directory / f"{subscription_id}.json")
        # The lease file stays while its holder may still have it open: ids are never reused, and
        # the holder stops when it finds the record gone.  Removed by the holder on release.
        return gone

    def update_subscription(self, subscription_id: str, **changes: Any) -> bool:
        values = subscription_changes_json(changes)
        if not valid_id(subscription_id):
            return False
        directory = self._dirs["subscriptions"]
        path = directory / f"{subscription_id}.json"
        with _locked(directory):
            document = _read(path)
            if document is None:
                return False  # deleted meanwhile: not re-created
            document.update(values)
            _write_atomic(path, _dump(document))
        return True

    def lease_subscription(self, subscription_id: str) -> _FileLease | None:
        path = self._dirs["subscriptions"] / f".{check_id(subscription_id, 'subscription id')}.lease"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # another process (or another worker of this one) runs it
        except BaseException:
            os.close(fd)
            raise
        return _FileLease(fd, path, self._dirs["subscriptions"] / f"{subscription_id}.json")

    # -- health -----------------------------------------------------------------------------------

    def readable(self) -> bool:
        return all(os.access(d, os.R_OK | os.W_OK | os.X_OK) for d in self._dirs.values())

    def close(self) -> None:
        pass  # nothing held open


class _FileLease:
    """An exclusive flock() on the subscription's lease file, held while the descriptor is open:
    released by :meth:`release` or by the kernel when the process dies (kill -9 included)."""

    def __init__(self, fd: int, path: Path, record: Path) -> None:
        self._fd: int | None = fd
        self._path, self._record = path, record

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        if not self._record.exists():  # the subscription is gone: so is its lease file (nobody can want it)
            with contextlib.suppress(OSError):
                self._path.unlink()
        os.close(self._fd)
        self._fd = None


# -- files -----------------------------------------------------------------------------------------

def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode("utf-8") + b"\n"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    document = json.loads(data)  # a torn file cannot exist (atomic writes); a broken one is an error
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a state record")
    return document


def _names(directory: Path) -> Iterator[str]:
    """Record names in *directory* (temporary files start with a dot and are skipped)."""
    for entry in os.scandir(directory):
        if entry.name.endswith(".json") and not entry.name.startswith("."):
            yield entry.name[:-5]


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _write_temp(path: Path, data: bytes) -> Path:
    temp = _temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return temp


def _write_atomic(path: Path, data: bytes) -> None:
    temp = _write_temp(path, data)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create *path* with *data* unless it exists; True if this call created it.  The file appears
    whole (written aside, then hard-linked: link() fails if the name is taken)."""
    temp = _write_temp(path, data)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock between the processes sharing *directory* (flock on its .lock file)."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_stale_temps(directory: Path) -> None:
    now = time.time()
    for entry in os.scandir(directory):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > _STALE_TEMP:
                    os.unlink(entry.path)
