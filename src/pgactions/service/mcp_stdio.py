"""``pgactions mcp``: the actions as MCP tools over stdio, for an MCP client that starts the
command itself (Claude Desktop, VS Code, …).

``--connection URL|FILE`` is the operator's own connection, loaded as ``pgactions run`` loads it
(a profile file, the PG* variables filling gaps).  ``--connection-id ID`` takes a connection stored
in the service's state (``--state-dir`` / ``--state-url``) and treats it as the service does: vetted
against the host policy of ``--config`` (allowHosts / denyHosts), re-read and re-vetted every few
seconds.  ``--actions``, ``--toolset`` (a list named in ``--config``) and ``--read-only`` choose the
tools.  stdout carries the protocol only; a problem at start is one ``pgactions: …`` line on stderr
(exit 2 for usage, 1 otherwise).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

import anyio

from pgactions.connection.profiles import ConnectionProfile
from pgactions.runtime import ActionResult, Runtime
from pgactions.service.mcp_tools import ExposureError, build_server, exposed_manifests, run_in_thread
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest

__all__ = ["mcp_command"]

EXIT_FAILED, EXIT_USAGE = 1, 2


def mcp_command(args: argparse.Namespace) -> int:
    from pgactions.service.config import ConfigError, ServiceConfig, load_config

    try:
        config = load_config(args) if args.connection_id is not None or args.config else ServiceConfig()
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.toolset is not None and not args.config:
        return _fail("--toolset needs --config FILE (the toolsets are named there)", EXIT_USAGE)
    try:
        manifests = exposed_manifests(args.actions, args.toolset, config.toolsets, args.read_only)
    except ExposureError as exc:
        return _fail(f"mcp: {exc}", EXIT_USAGE)
    if not manifests:
        return _fail("mcp: no action is left to offer (--read-only keeps only the read-only ones)", EXIT_USAGE)
    source: _Fixed | _StoredConnection
    if args.connection_id is not None:
        try:
            source = _StoredConnection(config, args.connection_id)
        except _StartError as exc:
            return _fail(str(exc), exc.status)
        label = args.connection_id
    else:
        from pgactions.connection.profiles import load_profile

        try:
            profile = load_profile(args.connection)
        except ActionError as exc:
            return _fail(exc.one_line(), EXIT_FAILED)
        source = _Fixed(profile)
        label = profile.database or "default"
    try:
        with Runtime() as runtime:
            server = build_server(_Local(runtime, source, manifests, label))
            anyio.run(_serve, server)
    finally:
        source.close()
    return 0


async def _serve(server: Any) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _fail(message: str, status: int) -> int:
    print(f"pgactions: {message}", file=sys.stderr, flush=True)
    return status


class _StartError(Exception):
    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class _Fixed:
    """The operator's connection, as given on the command line."""

    def __init__(self, profile: ConnectionProfile) -> None:
        self._profile = profile

    def profile(self) -> ConnectionProfile:
        return self._profile

    def close(self) -> None:
        pass


class _StoredConnection:
    """A connection from the service's state store, vetted like a caller's (files, options and
    addresses checked; DNS answers pinned); re-read and re-vetted after a few seconds, so an
    update or a deletion of the stored connection takes effect."""

    def __init__(self, config: Any, connection_id: str) -> None:
        from pgactions.service.state import open_store
        from pgactions.service.untrusted import HostPolicy

        self.connection_id = connection_id
        try:
            self.policy = HostPolicy(list(config.allow_hosts) if config.allow_hosts is not None else None,
                                     list(config.deny_hosts))
        except ValueError as exc:
            raise _StartError(str(exc), EXIT_USAGE) from None
        try:
            self.store = open_store(config.state_dir, config.state_url)
        except (ValueError, OSError) as exc:
            raise _StartError(f"cannot open the service's state: {exc}") from None
        except Exception as exc:  # psycopg's: the state database cannot be reached
            raise _StartError(f"cannot open the service's state ({type(exc).__name__})") from None
        self._lock = threading.Lock()
        self._vetted: tuple[float, ConnectionProfile] | None = None
        try:
            self.profile()  # refuse at start what would fail every call
        except ActionError as exc:
            self.store.close()
            raise _StartError(exc.one_line()) from None

    def profile(self) -> ConnectionProfile:
        from pgactions.service.core import VETTED_SECONDS
        from pgactions.service.untrusted import vet_profile

        with self._lock:
            now = time.monotonic()
            if self._vetted is not None and now - self._vetted[0] < VETTED_SECONDS:
                return self._vetted[1]
            try:
                spec = self.store.get_connection(self.connection_id)
            except ValueError:
                spec = None
            if spec is None:
                raise ActionError("UNKNOWN_CONNECTION", f"no stored connection {self.connection_id!r}",
                                  extra={"connectionId": self.connection_id})
            profile = vet_profile(spec, self.policy)
            self._vetted = (now, profile)
            return profile

    def close(self) -> None:
        self.store.close()


class _Local:
    """The stdio backend: the same tools for the one client, run on this process's runtime."""

    def __init__(self, runtime: Runtime, source: _Fixed | _StoredConnection, manifests: list[Manifest],
                 label: str) -> None:
        self.runtime, self.source, self._manifests, self._label = runtime, source, manifests, label

    def manifests(self, ctx: Any) -> list[Manifest]:
        return self._manifests

    def label(self, ctx: Any) -> str:
        return self._label

    async def run(self, ctx: Any, manifest: Manifest, inputs: dict[str, Any]) -> ActionResult:
        def work(cancel: threading.Event) -> ActionResult:
            return self.runtime.run(manifest.id, self.source.profile(), inputs, {}, flow="mcp", step=manifest.id,
                                    cancel=cancel)

        return await run_in_thread(work)  # type: ignore[no-any-return]
