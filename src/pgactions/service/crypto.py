"""The service's secret key: encrypting stored secrets at rest, and rotating the key.

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).  Every
encrypted value names the key that made it (``v1:<key id>:<token>``, the key id being the first 8
hex digits of the key's SHA-256), so a keyring holding the current key and an older one reads both,
and a value made with the older key can be found and re-encrypted.

Where the key comes from (:meth:`Keyring.from_environment`): ``PGACTIONS_SECRET_KEY`` (plus
``PGACTIONS_SECRET_KEY_PREVIOUS`` while rotating), else a key file ``secret.key`` that the first
start creates (mode 0600) in the state directory — so a fresh start needs no set-up.  A key is
never printed, logged or put in an error message.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["KEY_FILE", "KEY_VARIABLE", "PREVIOUS_VARIABLE", "SECRET_FIELDS", "SECRET_OPTIONS", "Keyring",
           "SecretKeyError", "key_id", "new_secret_key", "open_profile", "profile_needs_reencrypt", "reencrypt_all",
           "seal_profile"]

KEY_VARIABLE = "PGACTIONS_SECRET_KEY"
PREVIOUS_VARIABLE = "PGACTIONS_SECRET_KEY_PREVIOUS"
KEY_FILE = "secret.key"
_PREFIX = "v1"


class SecretKeyError(ValueError):
    """The secret key is missing, malformed, unsafe, or not the one a stored secret was made with."""


def new_secret_key() -> str:
    """A new key for PGACTIONS_SECRET_KEY: 44 URL-safe base64 characters."""
    return Fernet.generate_key().decode("ascii")


def key_id(key: str | bytes) -> str:
    """A key's public name: the first 8 hex digits of its SHA-256 (says which key, reveals nothing)."""
    raw = key.encode("ascii") if isinstance(key, str) else key
    return hashlib.sha256(raw.strip()).hexdigest()[:8]


def _fernet(key: str | bytes, source: str) -> Fernet:
    raw = key.strip().encode("ascii", "replace") if isinstance(key, str) else key.strip()
    try:
        return Fernet(raw)
    except (ValueError, TypeError):
        # Never the value itself: it is (meant to be) a secret.
        raise SecretKeyError(f"{source} is not a valid secret key (it must be 44 URL-safe base64 characters, "
                             "as printed by: pgactions keys secret)") from None


class Keyring:
    """The current key (encrypts) and older keys (still decrypt, while secrets are re-encrypted)."""

    def __init__(self, current: str | bytes, previous: Sequence[str | bytes] = (), *,
                 current_source: str = KEY_VARIABLE, previous_source: str = PREVIOUS_VARIABLE) -> None:
        self._current = _fernet(current, current_source)
        self.current_id = key_id(current)
        self._by_id: dict[str, Fernet] = {self.current_id: self._current}
        for old in previous:
            self._by_id.setdefault(key_id(old), _fernet(old, previous_source))

    def __repr__(self) -> str:  # key ids only: a repr may end up in a log
        return f"Keyring(current={self.current_id!r}, ids={sorted(self._by_id)!r})"

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def encrypt(self, text: str) -> str:
        token = self._current.encrypt(text.encode("utf-8")).decode("ascii")
        return f"{_PREFIX}:{self.current_id}:{token}"

    def decrypt(self, value: str) -> str:
        version, kid, token = _split(value)
        fernet = self._by_id.get(kid)
        if fernet is None:
            raise SecretKeyError(
                f"a stored secret was encrypted with key id {kid}, which is neither {KEY_VARIABLE} (key id "
                f"{self.current_id}) nor {PREVIOUS_VARIABLE}; start with the key that wrote it")
        try:
            return fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(f"a stored secret with key id {kid} does not decrypt: it was altered") from None

    def needs_reencrypt(self, value: str) -> bool:
        """Whether *value* was made with an older key (re-encrypt it with the current one)."""
        return _split(value)[1] != self.current_id

    # -- where the key comes from ---------------------------------------------------------------

    @classmethod
    def from_environment(cls, state_dir: Path | None, require_env: bool,
                         environ: Mapping[str, str] | None = None) -> Keyring:
        """PGACTIONS_SECRET_KEY (+ _PREVIOUS), else ``state_dir/secret.key`` (created on first use).

        *require_env*: the state is shared by several hosts (``--state-url``), so a key file of one
        host would not do — every host must be given the same key.
        """
        env = os.environ if environ is None else environ
        previous = [k for k in env.get(PREVIOUS_VARIABLE, "").split(",") if k.strip()]
        current = env.get(KEY_VARIABLE, "").strip()
        if current:
            return cls(current, previous)
        if require_env or state_dir is None:
            raise SecretKeyError(f"{KEY_VARIABLE} is required with --state-url (every host sharing the store "
                                 "needs the same key); make one with: pgactions keys secret")
        return cls(_key_file(state_dir), previous, current_source=str(state_dir / KEY_FILE))


def _split(value: str) -> tuple[str, str, str]:
    parts = value.split(":", 2) if isinstance(value, str) else []
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise SecretKeyError("a stored secret is not in the v1:<key id>:<token> form")
    return parts[0], parts[1], parts[2]


def _key_file(state_dir: Path) -> str:
    """Read the state directory's key file, creating it (0600) on first use."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(f"{path} may be read by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                             f"make it private with: chmod 600 {path}")
    return path.read_text("ascii").strip()


def _create_key_file(path: Path) -> None:
    # Written whole to a private temporary file, then linked into place: link() fails if another
    # process made the file first, and nobody can ever read a half-written key.
    temp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(new_secret_key() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process won: its key is the key
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        temp.unlink(missing_ok=True)


# -- a connection profile's secrets ---------------------------------------------------------------

# The profile fields that hold secrets (the url is sealed whole: it can carry a password), and the
# libpq options that do when given through extraOptions.  Kept equal to connection/profiles.py's.
SECRET_FIELDS = frozenset({"password", "sslKey", "sslPassword", "url"})
SECRET_OPTIONS = frozenset({"oauth_client_secret", "scram_client_key", "scram_server_key"})
_SEALED = "$secret"  # {"$secret": "v1:…"} in a stored profile: an encrypted value (JSON of the original)


def seal_profile(keyring: Keyring, profile: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of *profile* to store: each secret encrypted on its own, everything else in clear
    (so listing and masking never need the key)."""
    sealed: dict[str, Any] = {}
    for name, value in profile.items():
        if value is None:
            sealed[name] = value
        elif name in SECRET_FIELDS:
            sealed[name] = _seal(keyring, value)
        elif name == "extraOptions" and isinstance(value, Mapping):
            sealed[name] = {k: (_seal(keyring, v) if k in SECRET_OPTIONS and v is not None else v)
                            for k, v in value.items()}
        elif name == "extraOptions":
            sealed[name] = _seal(keyring, value)  # an unexpected shape: sealed whole, never left in clear
        else:
            sealed[name] = value
    return sealed


def open_profile(keyring: Keyring, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The stored profile with its secrets decrypted (only where seal_profile puts secrets)."""
    opened: dict[str, Any] = {}
    for name, value in stored.items():
        if name == "extraOptions" and isinstance(value, Mapping) and not _is_sealed(value):
            opened[name] = {k: (_open(keyring, v) if k in SECRET_OPTIONS else v) for k, v in value.items()}
        elif name in SECRET_FIELDS or name == "extraOptions":
            opened[name] = _open(keyring, value)
        else:
            opened[name] = value
    return opened


def profile_needs_reencrypt(keyring: Keyring, stored: Mapping[str, Any]) -> bool:
    return any(keyring.needs_reencrypt(token) for token in _sealed_values(stored))


def reencrypt_all(store: Any) -> int:
    """Re-encrypt every stored connection and subscription with the current key (after a
    rotation); returns how many records were rewritten.  *store*: a StateStore (reading decrypts
    with any key of the ring, writing encrypts with the current one)."""
    count = 0
    needs = getattr(store, "connection_needs_reencrypt", None)  # a host's own store may not have it
    for connection_id in store.list_connections():
        if needs is None or needs(connection_id):
            profile = store.get_connection(connection_id)
            if profile is not None:
                store.put_connection(connection_id, profile)
                count += 1
    for listed in getattr(store, "list_subscriptions", lambda: [])():
        # Read again right before writing: a running subscription moves its checkpoint meanwhile.
        record = store.get_subscription(listed.id)
        if record is not None:
            store.put_subscription(record)
            count += 1
    return count


def _seal(keyring: Keyring, value: Any) -> dict[str, str]:
    return {_SEALED: keyring.encrypt(json.dumps(value))}


def _is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {_SEALED} and isinstance(value[_SEALED], str)


def _open(keyring: Keyring, value: Any) -> Any:
    return json.loads(keyring.decrypt(value[_SEALED])) if _is_sealed(value) else value


def _sealed_values(stored: Mapping[str, Any]) -> list[str]:
    found = [v[_SEALED] for k, v in stored.items() if (k in SECRET_FIELDS or k == "extraOptions") and _is_sealed(v)]
    options = stored.get("extraOptions")
    if isinstance(options, Mapping) and not _is_sealed(options):
        found.extend(v[_SEALED] for k, v in options.items() if k in SECRET_OPTIONS and _is_sealed(v))
    return found
