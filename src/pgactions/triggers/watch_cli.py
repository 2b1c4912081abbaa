"""``pgactions watch TRIGGER`` and ``pgactions cdc drop-slot``.

``watch`` prints one JSON event per line on stdout.  After each batch is written and flushed, the
checkpoint file (``--checkpoint FILE``) is replaced atomically, and only then is the batch
acknowledged to the source (CDC: the slot's confirmed LSN) — so a ``kill -9`` anywhere loses
nothing: a restart from the stored checkpoint delivers again what was not yet stored, and skips
what was.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from pgactions.spec.errors import ActionError

__all__ = ["cdc_command", "read_checkpoint", "watch_command", "write_checkpoint"]


def read_checkpoint(path: str) -> dict[str, Any] | None:
    """The stored checkpoint; None when the file does not exist yet or is empty (a first run)."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ActionError("INVALID_INPUT", f"--checkpoint: cannot read {path}: {exc.strerror}",
                          extra={"field": "checkpoint"}) from None
    if not text.strip():
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ActionError("INVALID_INPUT", f"--checkpoint: {path} is not a JSON checkpoint",
                          extra={"field": "checkpoint"}) from None
    if value is not None and not isinstance(value, dict):
        raise ActionError("INVALID_INPUT", f"--checkpoint: {path} does not hold a checkpoint object",
                          extra={"field": "checkpoint"})
    return value


def write_checkpoint(path: str, checkpoint: dict[str, Any] | None) -> None:
    """Replace *path* atomically: a temporary file beside it, fsynced, renamed over it, the folder
    fsynced — a reader (or a restart after kill -9) sees the old checkpoint or the new, whole."""
    target = Path(path).resolve()
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(orjson.dumps(checkpoint) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _stop_on_sigterm() -> None:
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def _say_retries() -> None:
    """A long-running watch says on stderr when it waits out a failure (the server restarting …)."""
    import logging

    logger = logging.getLogger("pgactions.triggers")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pgactions: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def watch_command(args: argparse.Namespace, profile: Any, inputs: dict[str, Any]) -> int:
    from pgactions.runtime import Runtime
    from pgactions.spec.manifests import get_trigger
    from pgactions.triggers import watch

    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint else None
    _stop_on_sigterm()
    _say_retries()
    out = sys.stdout.buffer
    # --once: a polling trigger polls once (no wait); a stream (CDC, notifications) listens a
    # moment for what is committed now.
    polling = get_trigger(args.trigger).source == "polling"
    wait = (0.0 if polling else 1.0) if args.once else 5.0
    with Runtime() as runtime, watch(runtime, args.trigger, profile, inputs, checkpoint, once=args.once,
                                     timeout=wait) as feed:
        for batch in feed.batches():
            if batch.events:
                out.write(b"".join(orjson.dumps(event) + b"\n" for event in batch.events))
                out.flush()
            if args.checkpoint:
                write_checkpoint(args.checkpoint, batch.checkpoint)
            # the next turn of the loop acknowledges this batch: it is printed and stored
    return 0


def cdc_command(args: argparse.Namespace, profile: Any) -> int:
    from pgactions.triggers.cdc import drop_slot

    dropped = drop_slot(profile, args.slot)
    out = {"slot": args.slot, "dropped": bool(dropped)}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0
