"""The project's promises about itself: the README's commands, and what the wheel carries."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    commands = _quick_start()
    assert len(commands) == 2
    assert "pgactions demo" in commands[0]
    assert "pytest" in commands[1]
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[1] in ci_lines


def test_demo_runs_every_guide_action() -> None:
    result = subprocess.run([sys.executable, "-m", "pgactions", "demo"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for action in ("query_rows", "insert_row", "update_rows", "delete_rows", "execute_query", "upsert_row"):
        assert f"({action})" in result.stdout
    assert '"code": "UNIQUE_VIOLATION"' in result.stdout and "every action ran" in result.stdout


@pytest.mark.skipif(subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode,
                    reason="pip is not available")
def test_wheel_carries_manifests_and_schemas(tmp_path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0 and "No matching distribution" in built.stderr:
        pytest.skip("the build backend could not be fetched")
    assert built.returncode == 0, built.stderr
    wheel, = tmp_path.glob("pgactions-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for action in ("query_rows", "insert_row", "update_rows", "delete_rows", "execute_query", "upsert_row"):
        assert f"pgactions/_data/actions/{action}.yaml" in names
    assert "pgactions/_data/schemas/action.schema.json" in names
    assert "pgactions/_data/connections/postgresql.yaml" in names


def test_lint_and_types_are_clean() -> None:
    """ruff and mypy, configured in pyproject.toml, pass over the code."""
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    types = subprocess.run([sys.executable, "-m", "mypy", "src"], cwd=ROOT, capture_output=True, text=True)
    assert types.returncode == 0, types.stdout
