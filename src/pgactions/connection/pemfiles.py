"""Certificates and keys given as text: libpq only reads files, so PEM text becomes a private file.

A low-code form pastes the CA certificate or the client key as text; a script usually names a
file.  Both are accepted: a value holding ``-----BEGIN`` is PEM text, anything else a path.  PEM
text is written once per distinct content to a folder only this OS user can read (0700, files
0600 as libpq demands for keys) and removed when the process exits.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

__all__ = ["is_pem_text", "materialize"]

_lock = threading.Lock()
_folder: Path | None = None


def is_pem_text(value: str) -> bool:
    return "-----BEGIN" in value


def materialize(value: str) -> str:
    """A file path for *value*: the path itself, or a private file holding the PEM text."""
    if not is_pem_text(value):
        return os.path.expanduser(value)
    text = value.strip().replace("\r\n", "\n") + "\n"
    name = hashlib.sha256(text.encode()).hexdigest()[:32] + ".pem"
    path = _private_folder() / name
    if not path.exists():
        partial = path.with_suffix(f".{threading.get_ident()}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii", errors="replace") as fh:
            fh.write(text)
        os.replace(partial, path)
    return str(path)


def _private_folder() -> Path:
    global _folder
    with _lock:
        if _folder is None:
            _folder = Path(tempfile.mkdtemp(prefix="pgactions-pem-"))  # created 0700
            atexit.register(shutil.rmtree, _folder, True)
        return _folder
