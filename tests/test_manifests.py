"""Guards: manifests, schemas, the error catalogue and its docs, the public API."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

import pgactions
from pgactions import ERROR_CATALOG, load_manifests
from pgactions.spec.manifests import data_dir, load_schema

ROOT = Path(__file__).resolve().parents[1]


def test_six_actions_load_and_satisfy_the_meta_schema() -> None:
    manifests = load_manifests()
    assert set(manifests) >= {"query_rows", "insert_row", "update_rows", "delete_rows", "execute_query", "upsert_row"}
    meta = jsonschema.Draft202012Validator(load_schema("action.schema.json"))
    for path in data_dir("actions").glob("*.yaml"):
        import yaml

        data = yaml.safe_load(path.read_text())
        if data.get("kind") != "trigger":
            meta.validate(data)


@pytest.mark.parametrize("action_id", sorted(load_manifests()))
def test_examples_satisfy_their_input_schema(action_id) -> None:
    manifest = load_manifests()[action_id]
    for example in manifest.examples:
        errors = list(manifest.input_validator().iter_errors(example["input"]))
        assert not errors, (example["title"], [e.message for e in errors])
        for prop in manifest.bundled_input_schema()["properties"].values():
            assert prop.get("title"), f"{action_id}: every input field needs a title for forms"


def test_error_schema_lists_exactly_the_catalogue() -> None:
    schema = load_schema("error.schema.json")
    assert set(schema["properties"]["code"]["enum"]) == set(ERROR_CATALOG)
    validator = jsonschema.Draft202012Validator(schema)
    for code in ERROR_CATALOG:
        validator.validate(pgactions.ActionError(code, "detail").payload)


def test_every_error_code_is_documented() -> None:
    text = (ROOT / "docs" / "errors.md").read_text()
    for code, spec in ERROR_CATALOG.items():
        assert f"`{code}`" in text, code
        assert spec.cause in text, code


def test_docs_are_generated_from_the_catalogue() -> None:
    from pgactions.devtools.docgen import errors_markdown

    assert (ROOT / "docs" / "errors.md").read_text() == errors_markdown()


def test_public_api_is_exported() -> None:
    for name in pgactions.__all__:
        assert hasattr(pgactions, name), name


def test_result_envelope_schema() -> None:
    schema = load_schema("result.schema.json")
    validator = jsonschema.Draft202012Validator(schema, registry=pgactions.spec.manifests.schema_registry())
    validator.validate({"rows": [], "rowCount": 0})
    validator.validate({"error": pgactions.ActionError("SYNTAX_ERROR").payload})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"error": {"code": "NOPE"}})
