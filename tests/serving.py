"""A real ``pgactions serve`` for tests: a subprocess on a free loopback port, driven by httpx."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A running service: ``client`` sends requests (with ``key`` as the bearer when set)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, state_dir: Path, log: Path) -> None:
        self.process, self.port, self.state_dir, self.log_path = process, port, state_dir, log
        self.base_url = f"http://127.0.0.1:{port}"
        self.key: str | None = None
        self.client = httpx.Client(base_url=self.base_url, timeout=60)

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        bearer = key if key is not None else self.key
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        return headers

    def post(self, path: str, body: Any, key: str | None = None, **headers: str) -> httpx.Response:
        return self.client.post(path, json=body, headers=self.headers(key, **headers))

    def get(self, path: str, key: str | None = None, **headers: str) -> httpx.Response:
        return self.client.get(path, headers=self.headers(key, **headers))

    def keys(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``pgactions keys …`` on this service's state directory."""
        command = [sys.executable, "-m", "pgactions", "keys", *args]
        if args and args[0] != "secret":
            command += ["--state-dir", str(self.state_dir)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

    def create_key(self, name: str, *options: str) -> str:
        done = self.keys("create", "--name", name, *options)
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["key"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def settled_log(self) -> str:
        """The log once every request so far has its access line (a batch is written every
        tenth of a second)."""
        time.sleep(0.35)
        return self.log()

    def log_with(self, *texts: str, timeout: float = 10) -> str:
        """The log once it holds any of *texts*: access lines are written in batches, a tenth of a
        second apart (pgactions.service.metrics.AccessLog)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if any(text in log for text in texts) or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a process manager stops it: uvicorn lets in-flight requests finish, then
        exits by that signal (returncode -15)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()
        return int(self.process.returncode)


@contextmanager
def serve(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    port = free_port()
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    log = state_dir.parent / f"serve-{port}.log"
    environment = dict(os.environ if env is None else env)
    environment.pop("PGACTIONS_SECRET_KEY", None) if env is None else None
    with open(log, "wb") as out:
        where = [] if "--state-url" in args else ["--state-dir", str(state_dir)]
        process = subprocess.Popen([sys.executable, "-m", "pgactions", "serve", "--port", str(port), *where, *args],
                                   stdout=out, stderr=subprocess.STDOUT, env=environment)
    served = Served(process, port, state_dir, log)
    try:
        _wait_ready(served)
        yield served
    finally:
        served.stop()


def _wait_ready(served: Served, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(f"pgactions serve exited with {served.process.returncode}: {served.log()}")
        try:
            if served.client.get("/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"pgactions serve did not answer within {timeout}s: {served.log()}")
