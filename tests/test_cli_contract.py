"""The CLI's contract as scripts rely on it: where the connection comes from, exit codes 0/1/2/3,
JSON on stdout, one line on stderr, no traceback and no password, ever."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgactions.cli import main as cli_main

from .conftest import APP_PASSWORD

# The PG* variables and our own: removed from every child's environment unless a test sets them.
_CONNECTION_ENV = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT",
                   "PGSSLCERT", "PGSSLKEY", "PGCONNECT_TIMEOUT", "PGAPPNAME", "PGACTIONS_CONNECTION",
                   "PGACTIONS_IGNORE_PG_ENV")


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if k not in _CONNECTION_ENV}
    child.update(env or {})
    return subprocess.run([sys.executable, "-m", "pgactions", *args], capture_output=True, text=True,
                          env=child, timeout=timeout)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """In-process runs see only the connection variables a test sets."""
    for name in _CONNECTION_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _one_stderr_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _pg_env(pg, **override: str) -> dict[str, str]:
    env = {"PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": "app", "PGPASSWORD": APP_PASSWORD,
           "PGDATABASE": "pgactions_test", "PGSSLMODE": "disable"}
    env.update(override)
    return env


WHO = json.dumps({"query": "SELECT current_user AS who, current_database() AS db"})


# -- 1. where the connection comes from -----------------------------------------------------------

def test_connection_from_the_pg_variables(pg) -> None:
    """As psql: no --connection, the libpq variables say where to go."""
    out = cli("run", "query_rows", "-i", WHO, env=_pg_env(pg))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == [{"who": "app", "db": "pgactions_test"}]
    report = cli("test-connection", env=_pg_env(pg))
    assert report.returncode == 0, report.stdout
    assert json.loads(report.stdout)["user"] == "app"
    assert APP_PASSWORD not in out.stdout + out.stderr + report.stdout + report.stderr


def test_connection_from_pgactions_connection(pg, tmp_path) -> None:
    url = pg.url()
    out = cli("run", "query_rows", "-i", WHO, env={"PGACTIONS_CONNECTION": url})
    assert out.returncode == 0, out.stderr
    profile = tmp_path / "profile.yaml"
    profile.write_text(f"url: {url}\nsslMode: disable\n")
    out = cli("run", "query_rows", "-i", WHO, env={"PGACTIONS_CONNECTION": str(profile)})
    assert out.returncode == 0, out.stderr
    assert cli("test-connection", env={"PGACTIONS_CONNECTION": str(profile)}).returncode == 0


def test_connection_order(pg, free_port: int) -> None:
    """--connection, then PGACTIONS_CONNECTION, then the PG* variables (which still fill the fields
    the chosen connection leaves out)."""
    wrong = _pg_env(pg, PGPORT=str(free_port))  # nothing listens there
    assert cli("run", "query_rows", "-i", WHO, env=wrong).returncode == 1
    # PGACTIONS_CONNECTION wins over PGPORT, and takes its password from PGPASSWORD.
    env = {**wrong, "PGACTIONS_CONNECTION": f"postgresql://app@{pg.host}:{pg.port}/pgactions_test"}
    out = cli("run", "query_rows", "-i", WHO, env=env)
    assert out.returncode == 0, out.stderr
    # --connection wins over both.
    env = {**wrong, "PGACTIONS_CONNECTION": f"postgresql://app@{pg.host}:{free_port}/pgactions_test"}
    out = cli("run", "query_rows", "-c", pg.url(), "-i", WHO, env=env)
    assert out.returncode == 0, out.stderr


def test_no_connection_anywhere_is_a_usage_error() -> None:
    for command in (("run", "query_rows", "-i", WHO), ("test-connection",)):
        out = cli(*command)
        assert out.returncode == 2 and out.stdout == ""
        assert "usage:" in out.stderr and "PGACTIONS_CONNECTION" in out.stderr and "PGHOST" in out.stderr
    # PGACTIONS_IGNORE_PG_ENV=1 turns the PG* variables off here too.
    out = cli("run", "query_rows", "-i", WHO, env={"PGHOST": "127.0.0.1", "PGACTIONS_IGNORE_PG_ENV": "1"})
    assert out.returncode == 2 and "PGACTIONS_IGNORE_PG_ENV" in out.stderr


def test_a_bad_pgactions_connection_is_named(clean_env, capsys) -> None:
    secret = "Env-S3cret-pw-4412"
    clean_env.setenv("PGACTIONS_CONNECTION", f"postgresql://app:{secret}@127.0.0.1:99999/db")
    assert cli_main(["run", "query_rows", "-i", WHO]) == 1
    out = capsys.readouterr()
    error = json.loads(out.out)["error"]
    assert error["code"] == "INVALID_CONNECTION"
    assert error["detail"].startswith("PGACTIONS_CONNECTION: url: port")
    assert secret not in out.out + out.err


def test_a_bad_pg_variable_is_named(clean_env, capsys) -> None:
    clean_env.setenv("PGHOST", "127.0.0.1")
    clean_env.setenv("PGPORT", "fifty")
    assert cli_main(["run", "query_rows", "-i", WHO]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "INVALID_CONNECTION" and error["errors"][0]["path"] == "PGPORT"


# -- 2. a malformed connection: the error JSON, never a traceback, never the password ---------------

PASSWORD = "Odd-P@ss:w/rd#?%'\"ü-7731"  # odd characters on purpose
PLAIN = "Plain-S3cret-pw-5518"  # for URLs, where an unencoded odd password would not parse


@dataclass
class Malformed:
    name: str
    # Builds the --connection argument (a URL, or a file written into the folder given).
    connection: Callable[[Path], str]
    secret: str = PLAIN


def _file(name: str, content: bytes | str) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)
    return write


def _folder(name: str) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        (folder / name).mkdir()
        return str(folder / name)
    return make


MALFORMED = [
    Malformed("ipv6-unclosed", lambda _: f"postgresql://app:{PLAIN}@[::1:55432/shop"),
    Malformed("port-not-a-number", lambda _: f"postgresql://app:{PLAIN}@127.0.0.1:54x2/shop"),
    Malformed("port-out-of-range", lambda _: f"postgresql://app:{PLAIN}@127.0.0.1:99999/shop"),
    Malformed("unknown-scheme", lambda _: f"mysql://app:{PLAIN}@db.example.com/shop"),
    Malformed("bad-sslmode", lambda _: f"postgresql://app:{PLAIN}@127.0.0.1/shop?sslmode=sometimes"),
    Malformed("unknown-keyword", lambda _: f"postgresql://app:{PLAIN}@127.0.0.1/shop?colour=red"),
    Malformed("bad-connect-timeout", lambda _: f"postgresql://app:{PLAIN}@127.0.0.1/shop?connect_timeout=soon"),
    Malformed("bad-keepalives-idle", lambda _: f"postgresql://app:{PLAIN}@127.0.0.1/shop?keepalives_idle=soon"),
    Malformed("bad-target-session-attrs",
              lambda _: f"postgresql://app:{PLAIN}@127.0.0.1/shop?target_session_attrs=bogus"),
    Malformed("unencoded-odd-password", lambda _: f"postgresql://app:{PASSWORD}@127.0.0.1:5432/shop", PASSWORD),
    Malformed("missing-profile-file", lambda folder: str(folder / "nowhere.yaml")),
    Malformed("profile-is-a-folder", _folder("conn.yaml")),
    Malformed("profile-not-utf8", _file("conn.yaml", b"host: db\npassword: \xff\xfe" + PLAIN.encode())),
    Malformed("profile-not-yaml", _file("conn.yaml", f"host: [db\npassword: {PLAIN}\n")),
    Malformed("profile-not-json", _file("conn.json", f'{{"host": "db", "password": "{PLAIN}",')),
    Malformed("profile-not-an-object", _file("conn.yaml", f"{PLAIN}\n")),
    Malformed("profile-odd-password-bad-port",
              _file("conn.json", json.dumps({"host": "127.0.0.1", "port": "fifty", "password": PASSWORD})),
              PASSWORD),
    Malformed("profile-odd-password-bad-sslmode",
              _file("conn.yaml", "host: 127.0.0.1\nsslMode: sometimes\npassword: " + json.dumps(PASSWORD) + "\n"),
              PASSWORD),
    Malformed("profile-nul-in-host", _file("conn.json", json.dumps({"host": "db\u0000x", "password": PLAIN}))),
    Malformed("profile-unknown-field", _file("conn.json", json.dumps({"hostname": "db", "password": PLAIN}))),
    Malformed("profile-url-other-scheme", _file("conn.json", json.dumps({"url": f"mysql://u:{PLAIN}@db/x"}))),
    Malformed("profile-url-ipv6-unclosed",
              _file("conn.json", json.dumps({"url": f"postgresql://u:{PLAIN}@[::1/x", "schema": "s"}))),
]


def _check(case: Malformed, command: str, code: int, stdout: str, stderr: str) -> None:
    assert "Traceback" not in stdout + stderr, stderr
    assert case.secret not in stdout + stderr
    assert code == 1, (code, stdout, stderr)
    document = json.loads(stdout)
    error = document["error"]
    if command == "test-connection":
        assert document["ok"] is False and document["failedStep"] == "profile"
    assert error["code"] == "INVALID_CONNECTION", error
    assert error["detail"] and error["errors"] and error["field"] == error["errors"][0]["path"]
    line = _one_stderr_line(stderr)
    assert "INVALID_CONNECTION" in line and error["detail"] in line


@pytest.mark.parametrize("command", ["run", "test-connection"])
@pytest.mark.parametrize("case", MALFORMED, ids=[c.name for c in MALFORMED])
def test_malformed_connection_in_process(case: Malformed, command: str, tmp_path, clean_env, capsys) -> None:
    argv = ["run", "query_rows", "-i", WHO] if command == "run" else ["test-connection"]
    code = cli_main([*argv, "-c", case.connection(tmp_path)])
    out = capsys.readouterr()
    _check(case, command, code, out.out, out.err)


@pytest.mark.parametrize("command", ["run", "test-connection"])
@pytest.mark.parametrize("case", MALFORMED, ids=[c.name for c in MALFORMED])
def test_malformed_connection_as_a_script(case: Malformed, command: str, tmp_path) -> None:
    argv = ["run", "query_rows", "-i", WHO] if command == "run" else ["test-connection"]
    out = cli(*argv, "-c", case.connection(tmp_path))
    _check(case, command, out.returncode, out.stdout, out.stderr)


def test_an_internal_error_is_one_line_without_its_text(monkeypatch, capsys) -> None:
    """A bug still prints no traceback and no exception text (it could quote a connection)."""
    import pgactions.cli

    def boom(_args: Any) -> int:
        raise ValueError(f"postgresql://app:{PLAIN}@db/x")

    monkeypatch.setattr(pgactions.cli, "_dispatch", boom)
    assert cli_main(["list"]) == 70
    out = capsys.readouterr()
    assert out.out == "" and PLAIN not in out.err and "Traceback" not in out.err
    assert _one_stderr_line(out.err).startswith("pgactions: internal error (ValueError)")


_HANDLER_FAILS = """
import sys
import pgactions.handlers

def boom(*args, **kwargs):
    raise TypeError("an unexpected failure inside a handler")

pgactions.handlers.HANDLERS["sql"] = boom
from pgactions.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_unexpected_failure_logs_its_traceback_only_with_verbose(pg) -> None:
    """The runtime logs an unexpected failure with its traceback: the CLI shows that log with
    --verbose only; otherwise the error object and its one line say everything."""
    argv = ["run", "query_rows", "-c", pg.url(), "-i", WHO]
    quiet = subprocess.run([sys.executable, "-c", _HANDLER_FAILS, *argv], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1 and json.loads(quiet.stdout)["error"]["code"] == "DATABASE_ERROR"
    assert _one_stderr_line(quiet.stderr).startswith("pgactions: DATABASE_ERROR: ")
    verbose = subprocess.run([sys.executable, "-c", _HANDLER_FAILS, "-v", *argv], capture_output=True, text=True,
                             timeout=120)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert APP_PASSWORD not in quiet.stdout + quiet.stderr + verbose.stdout + verbose.stderr


# -- 3. exit codes ---------------------------------------------------------------------------------

@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_test_connection_failure_line_carries_the_detail(free_port: int) -> None:
    out = cli("test-connection", "-c", f"postgresql://app:{PLAIN}@127.0.0.1:{free_port}/db?connect_timeout=2")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["failedStep"] == "tcp" and report["error"]["code"] == "CONNECTION_REFUSED"
    line = _one_stderr_line(out.stderr)
    assert line.startswith("pgactions: tcp failed: CONNECTION_REFUSED: ")
    assert report["error"]["detail"] in line and f"127.0.0.1:{free_port}" in line
    assert PLAIN not in out.stdout + out.stderr


def _items(*emails: str) -> str:
    return json.dumps([{"inputs": {"table": "users", "columns": {"name": e, "email": e}}} for e in emails])


def test_independent_batch_with_failures_exits_3(guide_db, tmp_path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(guide_db.profile))
    out = cli("run", "insert_row", "-c", str(profile),
              "--items", _items("a@x.com", "john@example.com", "b@x.com", "mary@example.com"))
    assert out.returncode == 3, out.stderr
    batch = json.loads(out.stdout)
    assert batch["ok"] is False and batch["mode"] == "independent"
    line = _one_stderr_line(out.stderr)
    assert re.fullmatch(r"pgactions: 2 of 4 items failed \(first: item 1 UNIQUE_VIOLATION: .+\)", line), line
    ok = cli("run", "insert_row", "-c", str(profile), "--items", _items("c@x.com"), "--batch-mode", "independent")
    assert ok.returncode == 0 and ok.stderr == ""


@pytest.mark.parametrize("mode", ["transaction", "single"])
def test_transaction_and_single_batches_fail_as_a_whole(mode: str, guide_db, tmp_path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(guide_db.profile))
    out = cli("run", "insert_row", "-c", str(profile), "--items", _items("d@x.com", "john@example.com"),
              "--batch-mode", mode)
    assert out.returncode == 1, out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "UNIQUE_VIOLATION"
    assert _one_stderr_line(out.stderr).startswith("pgactions: UNIQUE_VIOLATION: ")
    assert guide_db.sql("SELECT count(*) FROM users WHERE email = 'd@x.com'") == [(0,)]


# -- 4. options that would be ignored are usage errors ----------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("--input", "{}", "--items", "[]"), "not both"),
    (("--input", '{"query": "SELECT 1"}', "--items", "[]"), "not both"),
    (("--input", '{"query": "SELECT 1"}', "--batch-mode", "transaction"), "--batch-mode"),
    (("--input", '{"query": "SELECT 1"}', "--max-result-bytes", "0"), "--max-result-bytes"),
    (("--input", '{"query": "SELECT 1"}', "--max-result-bytes", "-5"), "--max-result-bytes"),
    (("--input", '{"query": "SELECT 1"}', "--max-result-bytes", "lots"), "--max-result-bytes"),
])
def test_ignored_options_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    out = cli("run", "query_rows", "-c", f"postgresql://app:{PLAIN}@127.0.0.1:1/db", *args)
    assert out.returncode == 2 and out.stdout == ""
    assert "usage: pgactions run" in out.stderr and message in out.stderr and "Traceback" not in out.stderr


def test_version() -> None:
    from importlib.metadata import version

    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"pgactions {version('pgactions')}"


# -- 5. JSON arguments -----------------------------------------------------------------------------

def test_input_file_that_is_not_utf8_is_a_usage_error(tmp_path) -> None:
    bad = tmp_path / "in.json"
    bad.write_bytes(b'{"query": "SELECT \xff"}')
    for option in ("--input", "--context", "--items"):
        out = cli("run", "query_rows", "-c", "postgresql://x@127.0.0.1:1/db", option, f"@{bad}")
        assert out.returncode == 2 and out.stdout == "", out.stderr
        assert f"{option}: {bad} is not UTF-8" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("text", ["[1e400]", "[NaN]", '["\\ud800"]', "[12345678901234567890123, NaN]",
                                  "[12345678901234567890123,", "[99999999999999999999999e999]"])
def test_json_the_parsers_refuse_is_a_usage_error(text: str) -> None:
    out = cli("run", "query_rows", "-c", "postgresql://x@127.0.0.1:1/db", "--input", text)
    assert out.returncode == 2 and "not valid JSON" in out.stderr and "Traceback" not in out.stderr


BIG = 12345678901234567890123
BIGGER = 98765432109876543210987654321


def test_integers_beyond_64_bits_stay_exact(db, tmp_path) -> None:
    db.sql("CREATE TABLE big (id int PRIMARY KEY, n numeric(30,0))")
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(db.profile))
    conn = str(profile)
    out = cli("run", "insert_row", "-c", conn, "--input",
              f'{{"table": "big", "columns": {{"id": 1, "n": {BIG}}}}}')
    assert out.returncode == 0, out.stderr
    out = cli("run", "insert_row", "-c", conn, "--input", '{"table": "big", "columns": {"id": 2, "n": "{{trigger.n}}"}}',
              "--context", f'{{"trigger": {{"n": {BIGGER}}}}}')
    assert out.returncode == 0, out.stderr
    items = tmp_path / "items.json"
    items.write_text(f'[{{"inputs": {{"table": "big", "columns": {{"id": 3, "n": -{BIG}}}}}}}]')
    out = cli("run", "insert_row", "-c", conn, "--items", f"@{items}", "--batch-mode", "transaction")
    assert out.returncode == 0, out.stderr
    read = cli("run", "query_rows", "-c", conn, "--input", json.dumps({"query": "SELECT id, n FROM big ORDER BY id"}))
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["rows"] == [{"id": 1, "n": str(BIG)}, {"id": 2, "n": str(BIGGER)},
                                               {"id": 3, "n": f"-{BIG}"}]
    exact = cli("run", "query_rows", "-c", conn, "--numeric-as-number",
                "--input", json.dumps({"query": "SELECT n FROM big WHERE id = 1"}))
    assert exact.returncode == 0 and re.search(rf'"n":\s*{BIG}\b', exact.stdout)  # every digit, as a number
    assert db.sql("SELECT n::text FROM big ORDER BY id") == [(str(BIG),), (str(BIGGER),), (f"-{BIG}",)]


def test_a_big_integer_as_a_query_parameter(db) -> None:
    out = cli("run", "query_rows", "-c", db.server.url(), "--input",
              f'{{"query": "SELECT $1::numeric::text AS n", "parameters": [{BIG}]}}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == [{"n": str(BIG)}]


# -- 6. demo --keep, then --stop ----------------------------------------------------------------------

def test_demo_keep_then_stop(tmp_path) -> None:
    from pgactions.devtools.local_server import ServerNotAvailable, find_bindir, stop_kept_server

    try:
        find_bindir()
    except ServerNotAvailable as exc:
        pytest.skip(str(exc))
    kept = cli("demo", "--keep", timeout=300)
    assert kept.returncode == 0, kept.stdout[-2000:] + kept.stderr[-2000:]
    match = re.search(r"Stop it \(and delete its data\) with: (pgactions demo --stop (\S+))$", kept.stdout, re.M)
    assert match, kept.stdout[-1000:]
    folder = Path(match.group(2))
    url = re.search(r"keeps running at (postgresql://\S+) ", kept.stdout).group(1)  # type: ignore[union-attr]
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (3,)
        stopped = cli(*match.group(1).split()[1:])
        assert stopped.returncode == 0, stopped.stderr
        assert "Stopped the server" in stopped.stdout
        assert not folder.exists()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
    finally:
        if folder.exists():
            stop_kept_server(folder)
    again = cli("demo", "--stop", str(folder))
    assert again.returncode == 2 and "pgactions-server.json" in again.stderr
    assert cli("demo", "--stop", str(tmp_path)).returncode == 2  # not a server's folder: left alone
    assert tmp_path.exists()
    both = cli("demo", "--keep", "--stop", str(tmp_path))
    assert both.returncode == 2 and "not allowed with" in both.stderr


# -- the suite's own skip summary (tests/conftest.py) ---------------------------------------------

def test_skip_summary_groups_reasons() -> None:
    from types import SimpleNamespace

    from .conftest import skip_summary

    pgbouncer = ("tests/conftest.py", 200, "Skipped: PgBouncer is not installed (apt-get install -y pgbouncer)")
    ssl = ("tests/conftest.py", 160, "Skipped: this PostgreSQL build has no SSL support")
    reports = [SimpleNamespace(longrepr=r) for r in (pgbouncer, ssl, pgbouncer, pgbouncer)]
    assert skip_summary(reports) == ("skipped 4: 3 × PgBouncer is not installed (apt-get install -y pgbouncer); "
                                     "1 × this PostgreSQL build has no SSL support")
    assert skip_summary([]) is None
