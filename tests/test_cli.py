"""The CLI as a script sees it: JSON on stdout, one line on stderr, exit codes 0 / 1 / 2
(more of the contract, and exit code 3, in test_cli_contract.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import APP_PASSWORD


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # Without PG* or PGACTIONS_CONNECTION variables: a missing --connection stays a usage error.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PGACTIONS_"))}
    return subprocess.run([sys.executable, "-m", "pgactions", *args], capture_output=True, text=True,
                          input=stdin, timeout=120, env=env)


def test_list_and_describe() -> None:
    listed = cli("list")
    assert listed.returncode == 0
    ids = {a["id"] for a in json.loads(listed.stdout)}
    assert ids == {"query_rows", "insert_row", "update_rows", "delete_rows", "execute_query", "upsert_row",
                   "insert_rows", "upsert_rows", "run_transaction", "list_schemas", "list_tables",
                   "get_table_metadata", "find_rows", "get_row", "list_functions", "get_function",
                   "create_function", "delete_function", "call_function"}
    described = json.loads(cli("describe", "upsert_row").stdout)
    conflict = described["input"]["properties"]["conflictColumns"]
    assert conflict["title"] == "Conflict columns"
    assert described["input"]["properties"]["timeout"]["default"] == 60  # shared fragment inlined


def test_run_success(guide_db) -> None:
    url = guide_db.server.url()
    result = cli("run", "query_rows", "--connection", url, "--input",
                 json.dumps({"query": f'SELECT name FROM "{guide_db.schema}".users WHERE email = $1',
                             "parameters": ["{{trigger.email}}"]}),
                 "--context", '{"trigger": {"email": "john@example.com"}}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"rows": [{"name": "John Doe"}], "rowCount": 1}


def test_run_with_files(guide_db, tmp_path) -> None:
    profile = tmp_path / "conn.yaml"
    profile.write_text(f"url: {guide_db.server.url()}\nschema: {guide_db.schema}\nsslMode: disable\n")
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"table": "users", "columns": {"name": "Cli", "email": "cli@example.com"}}))
    result = cli("run", "insert_row", "--connection", str(profile), "--input", f"@{inputs}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["insertedId"] == 3


def test_run_failure_prints_error_json_and_one_line(guide_db) -> None:
    result = cli("run", "query_rows", "--connection", guide_db.server.url(password="wrong-pass-xyz"),
                 "--input", '{"query": "SELECT 1"}')
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "AUTHENTICATION_FAILED"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgactions: AUTHENTICATION_FAILED")
    assert "wrong-pass-xyz" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [
    ("run", "query_rows"),  # no --connection
    ("run", "query_rows", "--connection", "postgresql://x@127.0.0.1/db", "--input", "{not json"),
    ("run", "query_rows", "--connection", "postgresql://x@127.0.0.1/db", "--input", "@/no/such/file.json"),
    ("frobnicate",),
])
def test_usage_errors_exit_2(args) -> None:
    result = cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: pgactions") and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("pgactions:")


def test_invalid_input_is_exit_1_with_paths(db) -> None:
    result = cli("run", "insert_row", "--connection", db.server.url(), "--input", '{"table": 5}')
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "INVALID_INPUT"
    assert {e["path"] for e in error["errors"]} >= {"table", "(input)"}


def test_test_connection(pg) -> None:
    ok = cli("test-connection", "--connection", pg.url())
    assert ok.returncode == 0, ok.stdout
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["user"] == "app" and report["database"] == "pgactions_test"
    assert [s["name"] for s in report["steps"]] == ["dns", "tcp", "tls", "authentication", "database",
                                                    "query", "privileges"]
    assert APP_PASSWORD not in ok.stdout
    bad = cli("test-connection", "--connection", pg.url(password="nope-nope"))
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["failedStep"] == "authentication"
    assert report["error"]["code"] == "AUTHENTICATION_FAILED"
    line, = bad.stderr.strip().splitlines()
    assert line.startswith("pgactions: authentication failed: AUTHENTICATION_FAILED: ")
    assert report["error"]["detail"] in line and "nope-nope" not in bad.stdout + bad.stderr


def test_run_tags_the_session_with_flow_and_step(db) -> None:
    out = cli("run", "query_rows", "--connection", db.server.url(), "--flow", "nightly", "--step", "load",
              "--input", json.dumps({"query": "SELECT current_setting('application_name') AS app"}))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == [{"app": "pgactions flow=nightly step=load"}]
