"""Something that is not PostgreSQL on the port is NOT_POSTGRESQL, not "connection refused".

Small real servers on loopback stand in for what users point a connection at by mistake: a web
server (HTTP 426), a service that answers with bytes of no protocol we know, one that closes the
connection at once (a proxy or tunnel with nothing behind it), and SSH (which speaks first).
Each is checked from Python, with test-connection and through the CLI, with SSL disabled and
preferred; none may show a traceback, the password, or the message of INVALID_INPUT.
"""

from __future__ import annotations

import random
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import orjson
import pytest

from pgactions import ERROR_CATALOG, ActionError, Runtime, test_connection
from pgactions.cli import main as cli_main
from pgactions.connection.check import STEPS
from pgactions.connection.diagnosis import diagnose_connect_failure, not_postgresql_reason

PASSWORD = "Not-A-Pg-Secret-4417"
SELECT_ONE = {"query": "SELECT 1"}
INVALID_INPUT_MESSAGE = ERROR_CATALOG["INVALID_INPUT"].message


def _random_bytes() -> bytes:
    """200 random bytes, seeded.  The first byte is not one a PostgreSQL server may send first
    (S, N, E; R and v after the startup packet), so the bytes are no protocol we know."""
    data = bytearray(random.Random(20240611).randbytes(200))
    while data[0] in b"SNERv":
        data[0] = (data[0] + 1) % 256
    return bytes(data)


def _answer_http(request: socket.socket) -> None:
    request.recv(4096)
    request.sendall(b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n")


def _answer_random(request: socket.socket) -> None:
    request.recv(4096)
    request.sendall(_random_bytes())


def _close_at_once(request: socket.socket) -> None:
    pass


def _greet_like_ssh(request: socket.socket) -> None:
    """Speaks first, and its first byte is the S a PostgreSQL server sends to accept SSL."""
    request.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    request.settimeout(2)
    request.recv(4096)


def _answer_like_postgresql(request: socket.socket) -> None:
    """Answers the SSLRequest as a PostgreSQL server without SSL does (N), then hangs up."""
    request.recv(4096)
    request.sendall(b"N")
    request.settimeout(2)
    try:
        request.recv(4096)
    except OSError:
        pass


SERVICES: dict[str, Callable[[socket.socket], None]] = {
    "http 426": _answer_http, "random bytes": _answer_random, "closes at once": _close_at_once,
    "ssh banner": _greet_like_ssh,
}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _serve:
    """A one-behaviour loopback server as a context manager (for tests that need no parameters)."""

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    behaviour(self.request)
                except OSError:
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)

    def __enter__(self) -> int:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return int(self.server.server_address[1])

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[int]:
    with _serve(SERVICES[request.param]) as port:
        yield port


def _profile(port: int, ssl_mode: str) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port, "database": "app", "username": "app", "password": PASSWORD,
            "sslMode": ssl_mode, "connectTimeout": 2}


def _clean(text: str) -> None:
    assert PASSWORD not in text
    assert "Traceback" not in text
    assert INVALID_INPUT_MESSAGE not in text


@pytest.mark.parametrize("ssl_mode", ["disable", "prefer"])
@pytest.mark.parametrize("service", list(SERVICES), indirect=True)
def test_not_postgresql(service: int, ssl_mode: str, tmp_path, capsys) -> None:
    profile = _profile(service, ssl_mode)

    # 1. An action from Python.
    with Runtime() as runtime, pytest.raises(ActionError) as info:
        runtime.run("query_rows", profile, SELECT_ONE)
    error = info.value.payload
    assert error["code"] == "NOT_POSTGRESQL", error
    spec = ERROR_CATALOG["NOT_POSTGRESQL"]
    assert error["message"] == spec.message and error["fix"] == list(spec.fix)
    assert error["retryable"] is False and error["detail"]
    _clean(str(error) + repr(info.value))

    # 2. Test connection: the first step that speaks PostgreSQL's protocol fails.
    report = test_connection(profile)
    expected_step = "authentication" if ssl_mode == "disable" else "tls"
    assert report["ok"] is False and report["error"]["code"] == "NOT_POSTGRESQL", report
    assert report["failedStep"] == expected_step, report
    names = [step["name"] for step in report["steps"]]
    assert names == list(STEPS)
    assert all(step["ok"] for step in report["steps"][:names.index(expected_step)])  # dns, tcp passed
    assert all(step["skipped"] for step in report["steps"][names.index(expected_step) + 1:])
    _clean(orjson.dumps(report).decode())

    # 3. The CLI.
    profile_file = tmp_path / "connection.json"
    profile_file.write_bytes(orjson.dumps(profile))
    capsys.readouterr()
    assert cli_main(["run", "query_rows", "-c", str(profile_file), "-i", orjson.dumps(SELECT_ONE).decode()]) == 1
    run_out = capsys.readouterr()
    assert orjson.loads(run_out.out)["error"]["code"] == "NOT_POSTGRESQL"
    assert cli_main(["test-connection", "-c", str(profile_file)]) == 1
    test_out = capsys.readouterr()
    assert orjson.loads(test_out.out)["failedStep"] == expected_step
    assert f"{expected_step} failed: NOT_POSTGRESQL" in test_out.err
    _clean(run_out.out + run_out.err + test_out.out + test_out.err)


def test_the_web_servers_answer_is_shown() -> None:
    with _serve(_answer_http) as port:
        report = test_connection(_profile(port, "prefer"))
    assert "HTTP/1.1 426 Upgrade Required" in report["error"]["detail"]


# -- no false alarms: PostgreSQL itself, and a peer that answers as PostgreSQL does ------------

def test_a_real_postgresql_server_is_postgresql(pg) -> None:
    with socket.create_connection((pg.host, pg.port), timeout=5) as sock:
        assert not_postgresql_reason(sock, 5) is None


def test_a_closed_connection_from_a_postgresql_speaker_stays_connection_lost() -> None:
    message = ('connection failed: connection to server at "127.0.0.1", port {port} failed: server closed the '
               'connection unexpectedly\n\tThis probably means the server terminated abnormally\n'
               '\tbefore or while processing the request.')
    with _serve(_answer_like_postgresql) as port:
        assert diagnose_connect_failure(message.format(port=port), "127.0.0.1", port, 2).code == "CONNECTION_LOST"
    with _serve(_close_at_once) as port:
        error = diagnose_connect_failure(message.format(port=port), "127.0.0.1", port, 2)
        assert error.code == "NOT_POSTGRESQL"
        assert "closed the connection without answering" in error.payload["detail"]
