"""Validate an action's inputs against its manifest: every problem with its path, in one error."""

from __future__ import annotations

import copy
from typing import Any

from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest

__all__ = ["validate_inputs"]


def validate_inputs(manifest: Manifest, inputs: Any, path: str | None = None, *,
                    templates: bool = True) -> dict[str, Any]:
    """Return the inputs with top-level defaults filled, or raise INVALID_INPUT listing every error.

    *path* says where the inputs sit in a larger input (``steps/2/inputs``): error paths start there.
    *templates*: a ``{{ template }}`` string is let through where the schema wants another type (a
    number, a boolean, a list …): it is checked again once rendered (``templates=False``), when
    the runtime knows the value it makes.
    """
    if path is None:
        return _validate(manifest, inputs, templates)
    try:
        return _validate(manifest, inputs, templates)
    except ActionError as exc:
        for error in exc.payload.get("errors", []):
            error["path"] = f"{path}/{error['path']}" if error["path"] != "(input)" else path
        raise


def _validate(manifest: Manifest, inputs: Any, templates: bool = True) -> dict[str, Any]:
    if not isinstance(inputs, dict):
        raise ActionError("INVALID_INPUT", f"the input of {manifest.id} must be an object",
                          extra={"errors": [{"path": "(input)", "message": "must be an object"}]})
    validator = manifest._validator or manifest.input_validator()
    try:
        valid = validator.is_valid(inputs)
        problems = [] if valid else sorted(validator.iter_errors(inputs), key=lambda e: [str(p) for p in e.instance_path])
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") the validator cannot even report on
        raise ActionError("INVALID_INPUT", "the input holds text that is not valid Unicode (a lone surrogate)",
                          extra={"errors": [{"path": "(input)", "message": "not valid Unicode"}]}) from None
    if not valid and templates:
        problems = [e for e in problems if not _template_in_place(e)]
        valid = not problems
    if not valid:
        errors = [{"path": "/".join(map(str, e.instance_path)) or "(input)", "message": _message(e)}
                  for e in problems]
        for error in errors:  # the commonest mistake, said plainly
            if error["path"] == "query" and inputs.get("query") == "":
                error["message"] = "the query is empty"
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        raise ActionError("INVALID_INPUT", summary, extra={"errors": errors})
    filled = dict(inputs)
    for name, default in manifest.input_defaults().items():
        if name not in filled:
            # A fresh copy each call (a handler may not share it); [] and {} without deepcopy.
            filled[name] = [] if default == [] and type(default) is list else copy.deepcopy(default)
    return filled


def _template_in_place(error: Any) -> bool:
    """A template string where the schema wants a value of another kind: decided after rendering."""
    instance = error.instance
    if list(error.instance_path)[:1] == ["timeout"]:
        return False  # the host's limit is settled before anything is rendered
    return isinstance(instance, str) and "{{" in instance and "}}" in instance


def _message(error: Any) -> str:
    return (error.message.replace("is a required property", "is required")
            .replace("Additional properties are not allowed", "unknown field(s)"))
