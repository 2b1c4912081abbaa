"""Every connection failure, provoked for real and seen from every entry point.

Each scenario is checked four ways: an action run from Python, test-connection (which must name
the failing step), and both through the CLI.  None of them, nor the log, may show a password or
a private key.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from pgactions import ERROR_CATALOG, ActionError, Runtime, test_connection
from pgactions.cli import main as cli_main
from pgactions.connection.check import STEPS
from pgactions.devtools.local_server import free_port

from .conftest import APP_PASSWORD, LIMITED_PASSWORD

WRONG_PASSWORD = "Wrong-Pa55word-7731"
SELECT_ONE = {"query": "SELECT 1 AS one"}


@dataclass
class Scenario:
    name: str
    code: str
    step: str
    # Builds the connection (and holds whatever the failure needs while the block runs).
    connection: Callable[[Any], contextlib.AbstractContextManager[dict[str, Any]]]
    needs: tuple[str, ...] = ()


@contextlib.contextmanager
def _given(profile: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield profile


@contextlib.contextmanager
def _silent_listener(ssl_mode: str) -> Iterator[dict[str, Any]]:
    """Accepts TCP (the kernel does, into the backlog) but never says a word."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        yield {"host": "127.0.0.1", "port": silent.getsockname()[1], "connectTimeout": 2,
               "username": "app", "password": WRONG_PASSWORD, "sslMode": ssl_mode}
    finally:
        silent.close()


@contextlib.contextmanager
def _exhausted(env: Any) -> Iterator[dict[str, Any]]:
    """The SSL-only server with every ordinary connection slot taken."""
    server = env.ssl_only
    url = server.url("app", APP_PASSWORD, "pgactions_test", sslmode="require")
    held = []
    try:
        while len(held) < 20:
            try:
                held.append(psycopg.connect(url))
            except psycopg.OperationalError:
                break
        assert 3 <= len(held) < 20, "the server should run out of slots"
        yield {"url": url}
    finally:
        for conn in held:
            conn.close()


@contextlib.contextmanager
def _role_limit(env: Any) -> Iterator[dict[str, Any]]:
    url = env.pg.url("limited")
    with psycopg.connect(url):  # the role's only slot (CONNECTION LIMIT 1)
        yield {"url": url, "sslMode": "disable"}


SCENARIOS = [
    Scenario("closed port", "CONNECTION_REFUSED", "tcp",
             lambda env: _given({"url": f"postgresql://app:{WRONG_PASSWORD}@127.0.0.1:{free_port()}/db"})),
    Scenario("unresolvable host", "HOST_NOT_FOUND", "dns",
             lambda env: _given({"url": f"postgresql://app:{WRONG_PASSWORD}@no-such-host.invalid:5432/db"})),
    Scenario("silent listener, SSL preferred", "CONNECTION_TIMEOUT", "tls", lambda env: _silent_listener("prefer")),
    Scenario("silent listener, SSL disabled", "CONNECTION_TIMEOUT", "authentication",
             lambda env: _silent_listener("disable")),
    Scenario("wrong password", "AUTHENTICATION_FAILED", "authentication",
             lambda env: _given({"url": env.pg.url(password=WRONG_PASSWORD)})),
    Scenario("missing database", "DATABASE_NOT_FOUND", "database",
             lambda env: _given({"url": env.pg.url(database="no_such_db")})),
    Scenario("SSL-only server, SSL disabled", "SSL_REQUIRED", "authentication",
             lambda env: _given({"url": env.ssl_only.url("app", APP_PASSWORD, "pgactions_test"),
                                 "sslMode": "disable"}), needs=("ssl_only",)),
    Scenario("verify-full, certificate for another host name", "SSL_FAILED", "tls",
             lambda env: _given({"url": env.pg.url(), "host": "db.wrong-name.test", "sslMode": "verify-full",
                                 "sslRootCert": env.pg.ca_file, "extraOptions": {"hostaddr": "127.0.0.1"}}),
             needs=("ssl",)),
    Scenario("verify-full, unknown CA", "SSL_FAILED", "tls",
             lambda env: _given({"url": env.pg.url(), "host": "localhost", "sslMode": "verify-full",
                                 "sslRootCert": env.other_ca}), needs=("ssl",)),
    Scenario("verify-ca, self-signed certificate not given", "SSL_FAILED", "tls",
             lambda env: _given({"url": env.ssl_only.url("app", APP_PASSWORD, "pgactions_test"),
                                 "sslMode": "verify-ca", "sslRootCert": env.pg.ca_file}), needs=("ssl_only",)),
    Scenario("client certificate required, none given", "AUTHENTICATION_FAILED", "authentication",
             lambda env: _given({"url": env.pg.url("certuser", WRONG_PASSWORD), "sslMode": "require"}),
             needs=("ssl",)),
    Scenario("max_connections exhausted", "TOO_MANY_CONNECTIONS", "authentication", _exhausted, needs=("ssl_only",)),
    Scenario("role connection limit reached", "TOO_MANY_CONNECTIONS", "authentication", _role_limit),
]


@dataclass
class Env:
    pg: Any
    request: pytest.FixtureRequest
    tmp_path: Path

    @property
    def ssl_only(self) -> Any:
        return self.request.getfixturevalue("ssl_only_server")

    @property
    def other_ca(self) -> str:
        path = self.tmp_path / "other-ca.crt"
        if not path.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                            "/CN=Some other CA", "-keyout", str(self.tmp_path / "other.key"), "-out", str(path)],
                           check=True, capture_output=True)
        return str(path)


def _secrets_absent(text: str) -> None:
    assert WRONG_PASSWORD not in text and APP_PASSWORD not in text and LIMITED_PASSWORD not in text


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_connection_failure(scenario: Scenario, pg, request, tmp_path, capsys, caplog) -> None:
    if "ssl" in scenario.needs:
        request.getfixturevalue("ssl_server")
    caplog.set_level(logging.DEBUG, logger="pgactions")
    env = Env(pg, request, tmp_path)
    with scenario.connection(env) as profile:
        # 1. An action from Python.
        started = time.monotonic()
        with Runtime() as runtime, pytest.raises(ActionError) as info:
            runtime.run("query_rows", profile, SELECT_ONE)
        if scenario.code == "CONNECTION_TIMEOUT":  # given up after connectTimeout, not much later
            assert time.monotonic() - started < profile["connectTimeout"] + 1.5
        error = info.value.payload
        assert error["code"] == scenario.code, error
        spec = ERROR_CATALOG[scenario.code]
        assert error["cause"] == spec.cause and error["fix"] == list(spec.fix) and error["detail"]
        _secrets_absent(str(error) + repr(info.value))

        # 2. Test connection names the step that failed and skips the rest.
        report = test_connection(profile)
        assert report["ok"] is False and report["error"]["code"] == scenario.code, report
        assert report["failedStep"] == scenario.step, report
        names = [s["name"] for s in report["steps"]]
        assert names == list(STEPS)
        failed = report["steps"][names.index(scenario.step)]
        assert failed["ok"] is False and not failed.get("skipped")
        assert all(s["skipped"] for s in report["steps"][names.index(scenario.step) + 1:])
        _secrets_absent(orjson.dumps(report).decode())

        # 3. The CLI, with the profile in a file (as a script would keep it).
        profile_file = tmp_path / "connection.json"
        profile_file.write_bytes(orjson.dumps(profile))
        capsys.readouterr()
        assert cli_main(["run", "query_rows", "-c", str(profile_file), "-i", orjson.dumps(SELECT_ONE).decode()]) == 1
        run_out = capsys.readouterr()
        assert orjson.loads(run_out.out)["error"]["code"] == scenario.code
        assert cli_main(["test-connection", "-c", str(profile_file)]) == 1
        test_out = capsys.readouterr()
        assert orjson.loads(test_out.out)["failedStep"] == scenario.step
        assert f"{scenario.step} failed: {scenario.code}" in test_out.err
        _secrets_absent(run_out.out + run_out.err + test_out.out + test_out.err + caplog.text)
