"""The manifest meta-schema types the execution block (registered handlers, known options, which
handler takes which option), a bad manifest fails when manifests load, and each manifest's
defaultTimeout is honoured."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pgactions import ActionError, Limits, Runtime
from pgactions.handlers import HANDLERS
from pgactions.spec import manifests
from pgactions.spec.manifests import ManifestError, get_manifest, load_manifests, load_schema, schema_registry

SQL_HANDLERS = ("sql", "update_rows", "delete_rows")


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema("action.schema.json"), registry=schema_registry())


def _raw(action_id: str) -> dict[str, Any]:
    return yaml.safe_load((manifests.data_dir("actions") / f"{action_id}.yaml").read_text(encoding="utf-8"))


def _problems(data: dict[str, Any]) -> list[str]:
    return ["/".join(map(str, e.absolute_path)) + ": " + e.message for e in _validator().iter_errors(data)]


def test_every_shipped_manifest_satisfies_the_meta_schema() -> None:
    for path in sorted(manifests.data_dir("actions").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if data.get("kind") == "trigger":
            continue  # triggers have their own meta-schema (tests/test_triggers_manifests.py)
        assert _problems(data) == [], path.name


def test_unregistered_handler_is_rejected() -> None:
    data = _raw("query_rows")
    data["execution"]["handler"] = "nope"
    problems = _problems(data)
    assert problems and any(p.startswith("execution/handler") for p in problems), problems


def test_unknown_execution_option_is_rejected() -> None:
    data = _raw("query_rows")
    data["execution"]["retries"] = 3
    problems = _problems(data)
    assert problems and any("retries" in p for p in problems), problems


@pytest.mark.parametrize("option,value", [
    ("output", "rows"), ("statementKind", "read"), ("singleBatch", "sameStatement"),
])
def test_non_sql_handler_with_a_sql_option_is_rejected(option: str, value: Any) -> None:
    data = _raw("insert_row")
    assert data["execution"]["handler"] not in SQL_HANDLERS
    data["execution"][option] = value
    problems = _problems(data)
    assert problems and any(p.startswith("execution") for p in problems), problems


def test_sql_handler_without_output_is_rejected() -> None:
    data = _raw("query_rows")
    del data["execution"]["output"]
    assert _problems(data)


@pytest.mark.parametrize("field,value", [
    ("readOnly", "yes"), ("defaultTimeout", 0), ("defaultTimeout", -1), ("templates", {"query": "raw"}),
    ("output", "table"), ("statementKind", "insert"), ("singleBatch", "eachItem"),
])
def test_mistyped_execution_option_is_rejected(field: str, value: Any) -> None:
    data = _raw("query_rows")
    data["execution"][field] = value
    assert _problems(data)


def test_bulk_single_batch_needs_its_fields() -> None:
    data = _raw("insert_row")
    data["execution"]["singleBatch"] = {"bulkAction": "insert_rows"}
    assert _problems(data)


def test_handler_enum_is_the_registry() -> None:
    enum = load_schema("action.schema.json")["properties"]["execution"]["properties"]["handler"]["enum"]
    assert len(enum) == len(set(enum))
    assert sorted(enum) == sorted(HANDLERS)


def test_every_manifest_handler_is_registered() -> None:
    for manifest in load_manifests().values():
        assert manifest.handler in HANDLERS, manifest.id


@pytest.fixture
def actions_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An actions/ folder of our own (a copy of the real one) that load_manifests() reads."""
    folder = tmp_path / "actions"
    shutil.copytree(manifests.data_dir("actions"), folder)
    real = manifests.data_dir
    monkeypatch.setattr(manifests, "data_dir", lambda name: folder if name == "actions" else real(name))
    load_manifests.cache_clear()
    yield folder
    monkeypatch.undo()
    load_manifests.cache_clear()


def _write(folder: Path, name: str, data: dict[str, Any]) -> None:
    (folder / name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_the_copied_folder_loads(actions_folder: Path) -> None:
    """The control: a copy of the shipped folder loads as it is."""
    assert set(load_manifests()) | set(manifests.load_triggers()) == {p.stem for p in actions_folder.glob("*.yaml")}


@pytest.mark.parametrize("change", ["handler", "option", "sql option on a non-sql handler", "file name"])
def test_bad_manifest_fails_at_load_time(actions_folder: Path, change: str) -> None:
    if change == "handler":
        data = _raw("query_rows")
        data["execution"]["handler"] = "nope"
        _write(actions_folder, "query_rows.yaml", data)
    elif change == "option":
        data = _raw("query_rows")
        data["execution"]["cacheResults"] = True
        _write(actions_folder, "query_rows.yaml", data)
    elif change == "sql option on a non-sql handler":
        data = _raw("insert_row")
        data["execution"]["output"] = "rows"
        _write(actions_folder, "insert_row.yaml", data)
    else:
        data = _raw("query_rows")
        (actions_folder / "query_rows.yaml").unlink()
        _write(actions_folder, "select_rows.yaml", data)
    with pytest.raises(ManifestError):
        load_manifests()


def test_bad_manifest_fails_before_any_action_runs(actions_folder: Path) -> None:
    data = _raw("query_rows")
    data["execution"]["handler"] = "nope"
    _write(actions_folder, "query_rows.yaml", data)
    with pytest.raises(ManifestError):
        get_manifest("insert_row")  # any action: the whole folder is checked when it loads


# -- defaultTimeout ---------------------------------------------------------------------------------

def test_manifest_default_below_the_host_default_applies() -> None:
    assert Limits().timeout_for(None, None, 5.0) == 5.0
    assert Limits(default_timeout=30, max_timeout=60).timeout_for(None, None, 5.0) == 5.0


def test_host_default_below_the_manifest_default_applies() -> None:
    assert Limits(default_timeout=2.0, max_timeout=60).timeout_for(None, None, 60.0) == 2.0


def test_input_and_connection_timeouts_come_first() -> None:
    assert Limits().timeout_for(10.0, None, 5.0) == 10.0
    assert Limits().timeout_for(None, 20.0, 5.0) == 20.0
    with pytest.raises(ActionError):
        Limits().timeout_for(61.0, None, 5.0)


def test_each_manifest_default_timeout_is_honoured() -> None:
    for manifest in load_manifests().values():
        default = manifest.execution.get("defaultTimeout", 60)
        assert manifest.default_timeout == float(default), manifest.id
        assert Limits().timeout_for(None, None, manifest.default_timeout) == min(float(default), 60.0)
        assert Limits(default_timeout=1.0).timeout_for(None, None, manifest.default_timeout) == min(float(default), 1.0)


def test_a_lower_manifest_default_timeout_stops_the_action(db, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = get_manifest("query_rows")
    execution = copy.deepcopy(manifest.execution)
    execution["defaultTimeout"] = 0.5
    monkeypatch.setattr(manifest, "execution", execution)
    with Runtime() as rt:
        with pytest.raises(ActionError) as info:
            rt.run("query_rows", db.profile, {"query": "SELECT pg_sleep(3)"})
        assert info.value.code == "QUERY_TIMEOUT"
        ok = rt.run("query_rows", db.profile, {"query": "SELECT pg_sleep(0.1), 1 AS ok", "timeout": 5}).data
        assert ok["rows"][0]["ok"] == 1


def test_a_lower_manifest_default_timeout_stops_a_batch(db, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = get_manifest("query_rows")
    execution = copy.deepcopy(manifest.execution)
    execution["defaultTimeout"] = 0.5
    monkeypatch.setattr(manifest, "execution", execution)
    with Runtime() as rt:
        with pytest.raises(ActionError) as info:
            rt.run_batch("query_rows", db.profile, [{"inputs": {"query": "SELECT pg_sleep(3)"}}], "transaction")
        assert info.value.code == "QUERY_TIMEOUT"
