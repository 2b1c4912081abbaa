"""``pgactions serve``: the settings, logging, then uvicorn.

With ``--workers N`` uvicorn starts N processes; each builds its own app (one Runtime and its
pools per process) from the settings passed in ``PGACTIONS_SERVE_CONFIG``.  SIGTERM/SIGINT stop
accepting, let in-flight actions finish (each within its timeout), then close every pool.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any

from pgactions.service.config import ConfigError, ServiceConfig, load_config

__all__ = ["app_factory", "keep_tcp_nodelay", "serve_command"]

_CONFIG_VARIABLE = "PGACTIONS_SERVE_CONFIG"


def serve_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
        _check_hosts(config)
    except ConfigError as exc:
        print(f"pgactions: {exc}", file=sys.stderr, flush=True)
        return 2
    _setup_logging(bool(getattr(args, "verbose", False)))
    if getattr(args, "demo", False):
        return _serve_demo(config)
    return _serve(config)


def _serve(config: ServiceConfig, banner: str = "") -> int:
    import uvicorn

    if config.workers > 1:
        keep_tcp_nodelay()

    try:
        _check_state(config)
    except Exception as exc:  # the store cannot be opened: say why in one line, no traceback
        print(f"pgactions: cannot open the service's state: {exc}", file=sys.stderr, flush=True)
        return 1
    os.environ[_CONFIG_VARIABLE] = json.dumps(dataclasses.asdict(config))
    scheme_host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"pgactions serve: http://{scheme_host}:{config.port} — auth "
          f"{'on (Authorization: Bearer <key>)' if config.auth_enabled else 'OFF (--no-auth)'}, "
          f"{config.workers} worker(s); API: /docs, /openapi.json", file=sys.stderr, flush=True)
    if banner:
        print(banner, flush=True)
    uvicorn.run("pgactions.service.serve_cli:app_factory", factory=True, host=config.host, port=config.port,
                workers=config.workers if config.workers > 1 else None, log_level="warning", access_log=False,
                server_header=False, timeout_graceful_shutdown=int(config.timeout) + 5, lifespan="on")
    return 0


def _serve_demo(config: ServiceConfig) -> int:
    """``serve --demo``: a throwaway PostgreSQL with the guide's sample tables, saved as the
    connection ``demo`` in a throwaway state directory; auth off, this machine only.  Ctrl-C stops
    the service and the server and deletes both."""
    import shutil
    import tempfile

    from pgactions.devtools.demo import SAMPLE_SCHEMA
    from pgactions.devtools.local_server import LocalServer, ServerNotAvailable
    from pgactions.service.state import open_store

    if config.host not in ("127.0.0.1", "localhost", "::1"):
        print("pgactions: --demo runs without auth, so it binds to this machine only (no --host)", file=sys.stderr)
        return 2
    print("Starting a throwaway PostgreSQL server …", file=sys.stderr, flush=True)
    try:
        server = LocalServer(ssl=False, max_connections=40).start()
    except ServerNotAvailable as exc:
        print(f"pgactions serve --demo: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"PostgreSQL ready (its data in {server.root}, deleted on exit)", file=sys.stderr, flush=True)
    state = tempfile.mkdtemp(prefix="pgactions-demo-state-")
    # uvicorn ends by raising the signal that stopped it again; as an exception here, so the
    # server and the state below are cleaned up (SIGINT already is one: KeyboardInterrupt).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        server.psql("CREATE DATABASE demo")
        server.psql(SAMPLE_SCHEMA, database="demo")
        store = open_store(state, None)
        try:
            store.put_connection("demo", {"url": server.url(database="demo"), "sslMode": "disable"})
        finally:
            store.close()
        demo = dataclasses.replace(config, state_dir=state, state_url=None, auth_enabled=False, workers=1)
        url = f"http://{'[::1]' if config.host == '::1' else config.host}:{config.port}/"
        return _serve(demo, banner=f"Playground: {url} — the connection 'demo' holds the guide's sample tables "
                                   "(users, orders, sessions, logs). Ctrl-C stops everything.")
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def app_factory() -> Any:
    """Built in each worker process from the settings the command passed."""
    from pgactions.service.app import create_app

    data = json.loads(os.environ[_CONFIG_VARIABLE])
    data["cors_origins"] = tuple(data["cors_origins"])
    data["deny_hosts"] = tuple(data["deny_hosts"])
    if data["allow_hosts"] is not None:
        data["allow_hosts"] = tuple(data["allow_hosts"])
    data["toolsets"] = {k: tuple(v) for k, v in data["toolsets"].items()}
    _setup_logging(False)
    return create_app(ServiceConfig(**data))


def keep_tcp_nodelay() -> None:
    """With --workers N, uvicorn binds the listening socket itself with protocol 0; the accepted
    sockets inherit it and asyncio turns Nagle's algorithm off only for IPPROTO_TCP sockets, so a
    small response (headers, then body) waits ~40 ms for the client's delayed ACK
    (Kludex/uvicorn#3149).  Re-wrapped here with IPPROTO_TCP (measured in bench/service.py)."""
    import socket

    import uvicorn.config

    original = uvicorn.config.Config.bind_socket

    def bind_socket(self: Any) -> socket.socket:
        sock = original(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
            fixed = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
            fixed.set_inheritable(True)
            return fixed
        return sock

    uvicorn.config.Config.bind_socket = bind_socket  # type: ignore[method-assign]


def _check_hosts(config: ServiceConfig) -> None:
    from pgactions.service.untrusted import HostPolicy

    try:
        HostPolicy(config.allow_hosts, config.deny_hosts)
    except ValueError as exc:
        raise ConfigError(f"allow/deny hosts: {exc}") from None


def _check_state(config: ServiceConfig) -> None:
    """Open the store once before the workers start: a missing key or database is said now, and a
    first start creates the state directory and its key file."""
    from pgactions.service.state import open_store

    store = open_store(config.state_dir, config.state_url)
    try:
        if config.auth_enabled and not store.list_keys():
            print("pgactions serve: no API keys yet — create one: pgactions keys create --name NAME"
                  + (f" --state-dir {config.state_dir}" if config.state_dir else ""), file=sys.stderr, flush=True)
    finally:
        store.close()


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == "pgactions.access":
            return record.getMessage()
        line = {"time": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__  # the type only: a message may hold a secret
        return json.dumps(line)


def _setup_logging(verbose: bool) -> None:
    """JSON lines on stderr: the access log (one line per request, written by a thread of its own
    so a slow stderr never holds a request: metrics.AccessLog) and warnings."""
    import atexit

    from pgactions.service.metrics import start_access_log

    root = logging.getLogger("pgactions")
    if any(isinstance(h.formatter, _JsonLines) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False
    access = start_access_log(sys.stderr.buffer)
    atexit.register(access.close)
