"""``pgactions keys create|list|revoke|secret|rotate``.

stdout: JSON (``create`` prints the key, once; ``list`` never prints a key or its hash), except
``secret``, which prints the bare key so that ``export PGACTIONS_SECRET_KEY=$(pgactions keys secret)``
works.  Failures: one ``pgactions: …`` line on stderr and exit 1; a bad ``--context`` exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from pgactions.service.apikeys import create_key
from pgactions.service.crypto import SecretKeyError, new_secret_key, reencrypt_all
from pgactions.service.state import open_store
from pgactions.service.store import KeyRecord

__all__ = ["keys_command"]


def keys_command(args: argparse.Namespace) -> int:
    command = args.keys_command
    if command == "secret":
        print(new_secret_key(), flush=True)
        return 0
    pinned = _context(getattr(args, "context", None)) if command == "create" else None
    try:
        store = open_store(getattr(args, "state_dir", None), getattr(args, "state_url", None))
    except (SecretKeyError, ValueError, OSError) as exc:
        return _fail(str(exc))
    except Exception as exc:  # psycopg's: the state database cannot be reached
        return _fail(f"cannot open the state store ({type(exc).__name__}: {_first_line(exc)})")
    try:
        if command == "create":
            record, key = create_key(store, args.name, actions=args.actions, connections=args.connections,
                                     read_only=args.read_only, expires_days=args.expires, pinned=pinned,
                                     allow_sql=args.allow_sql)
            _print({"name": record.name, "key": key})
        elif command == "list":
            now = time.time()
            _print([_describe(record, now) for record in store.list_keys()])
        elif command == "revoke":
            if not store.revoke_key(args.name):
                return _fail(f"there is no API key named {args.name!r}")
            _print({"name": args.name, "revoked": True})
        elif command == "rotate":
            _print({"reencrypted": reencrypt_all(store)})
        else:
            return _fail(f"unknown keys command {command!r}")
    except (SecretKeyError, ValueError, OSError) as exc:
        return _fail(str(exc))
    finally:
        store.close()
    return 0


def _context(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    from pgactions.cli import UsageError  # exit 2 with the usage, like every other bad argument

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--context is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise UsageError("--context must be a JSON object, e.g. '{\"tenant\": \"acme\"}'")
    return value


def _describe(record: KeyRecord, now: float) -> dict[str, Any]:
    return {"name": record.name,
            "actions": None if record.actions is None else list(record.actions),
            "connections": None if record.connections is None else list(record.connections),
            "readOnly": record.read_only, "context": record.pinned, "allowSql": record.allow_sql,
            "created": _iso(record.created), "expires": None if record.expires is None else _iso(record.expires),
            "expired": record.expires is not None and now >= record.expires, "revoked": record.revoked}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def _fail(text: str) -> int:
    print(f"pgactions: {_first_line(text)}", file=sys.stderr, flush=True)
    return 1


def _first_line(value: object) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else type(value).__name__
