"""Action manifests: one data file per action in ``actions/``, checked against one meta-schema.

The wheel carries ``actions/``, ``schemas/`` and ``connections/`` under ``pgactions/_data``; a
source checkout reads them from the repository root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pgactions.spec.errors import ActionError

__all__ = ["Manifest", "ManifestError", "TriggerManifest", "data_dir", "get_trigger", "load_manifests",
           "load_triggers", "schema_registry"]

SCHEMA_BASE = "https://pgactions.dev/schemas/"


class ManifestError(RuntimeError):
    """A manifest file is malformed: a packaging or authoring bug, never a user's input error."""


def data_dir(name: str) -> Path:
    packaged = Path(__file__).parent / "_data" / name
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[3] / name
    if source.is_dir():
        return source
    raise ManifestError(f"the {name}/ folder is missing from this installation")


def _read_data_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


@lru_cache(maxsize=1)
def schema_registry() -> Registry:
    """Every schema in schemas/ (and connections/), addressable by its $id."""
    resources = []
    for folder in ("schemas",):
        for path in sorted(data_dir(folder).glob("*.json")):
            contents = _read_data_file(path)
            resource = Resource.from_contents(contents, default_specification=DRAFT202012)
            resources.append((contents.get("$id", SCHEMA_BASE + path.name), resource))
    return Registry().with_resources(resources)


def load_schema(name: str) -> dict[str, Any]:
    return schema_registry().contents(SCHEMA_BASE + name)


@dataclass
class Manifest:
    id: str
    title: str
    description: str
    category: str
    execution: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    examples: list[dict[str, Any]]
    template_variables: list[str]
    source: Path
    _validator: Any = field(default=None, repr=False)
    _bundled: dict[str, Any] | None = field(default=None, repr=False)
    _defaults: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def read_only(self) -> bool:
        return bool(self.execution["readOnly"])

    @property
    def handler(self) -> str:
        return str(self.execution["handler"])

    @property
    def default_timeout(self) -> float:
        return float(self.execution.get("defaultTimeout", 60))

    def input_validator(self) -> Any:
        """A compiled validator (jsonschema-rs) of the bundled schema: this runs on every action
        call, where the pure-Python validator alone cost more than the query (~25 µs vs 0.3 µs)."""
        if self._validator is None:
            self._validator = jsonschema_rs.validator_for(self.bundled_input_schema())
        return self._validator

    def bundled_input_schema(self) -> dict[str, Any]:
        """The input schema with shared fragments inlined, for form builders (computed once)."""
        if self._bundled is None:
            self._bundled = _inline_refs(self.input, f"{SCHEMA_BASE}actions/")
        return self._bundled

    def input_defaults(self) -> dict[str, Any]:
        """Top-level input defaults (timeout excluded: the host's limits decide it)."""
        if self._defaults is None:
            self._defaults = {name: prop["default"] for name, prop in self.bundled_input_schema()["properties"].items()
                              if "default" in prop and name != "timeout"}
        return self._defaults

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "description": self.description,
            "category": self.category, "readOnly": self.read_only,
            "defaultTimeout": self.default_timeout, "templateVariables": self.template_variables,
            "input": self.bundled_input_schema(),
            "output": _inline_refs(self.output, f"{SCHEMA_BASE}actions/"),
            "examples": self.examples,
        }


def _inline_refs(node: Any, base: str) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            from urllib.parse import urljoin

            target = urljoin(base, node["$ref"])
            resolved = schema_registry().resolver().lookup(target).contents
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline_refs(resolved, base), **rest}
        return {k: _inline_refs(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, base) for v in node]
    return node


@dataclass
class TriggerManifest:
    """A trigger (``kind: trigger``): what starts a flow, not a step of one.  Listed apart from the
    actions, never run by ``run`` / ``:run`` and never an MCP tool; ``pgactions watch`` and
    :mod:`pgactions.triggers` read it (docs/triggers.md)."""

    id: str
    title: str
    description: str
    category: str
    source: str  # polling, notify or cdc: the module of pgactions.triggers that produces its events
    input: dict[str, Any]
    event: dict[str, Any]
    examples: list[dict[str, Any]]
    path: Path
    _bundled: dict[str, Any] | None = field(default=None, repr=False)
    _validator: Any = field(default=None, repr=False)

    def bundled_input_schema(self) -> dict[str, Any]:
        if self._bundled is None:
            self._bundled = _inline_refs(self.input, f"{SCHEMA_BASE}actions/")
        return self._bundled

    def input_validator(self) -> Any:
        if self._validator is None:
            self._validator = jsonschema_rs.validator_for(self.bundled_input_schema())
        return self._validator

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": "trigger", "title": self.title, "description": self.description,
                "category": self.category, "source": self.source, "input": self.bundled_input_schema(),
                "event": _inline_refs(self.event, f"{SCHEMA_BASE}actions/"), "examples": self.examples}


@lru_cache(maxsize=1)
def _load_all() -> tuple[dict[str, Manifest], dict[str, TriggerManifest]]:
    metas = {"action": jsonschema.Draft202012Validator(load_schema("action.schema.json")),
             "trigger": jsonschema.Draft202012Validator(load_schema("trigger.schema.json"))}
    manifests: dict[str, Manifest] = {}
    triggers: dict[str, TriggerManifest] = {}
    for path in sorted(data_dir("actions").iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        raw = _read_data_file(path)
        kind = raw.get("kind", "action") if isinstance(raw, dict) else "action"
        meta = metas.get(kind, metas["action"])
        problems = sorted(meta.iter_errors(raw), key=lambda e: list(e.absolute_path))
        if problems:
            listing = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                                for e in problems)
            raise ManifestError(f"{path.name} does not satisfy the {kind} meta-schema: {listing}")
        if raw["id"] in manifests or raw["id"] in triggers:
            raise ManifestError(f"{path.name}: id {raw['id']!r} is defined twice")
        if path.stem != raw["id"]:
            raise ManifestError(f"{path.name}: the file must be named after its id ({raw['id']})")
        if kind == "trigger":
            triggers[raw["id"]] = TriggerManifest(
                id=raw["id"], title=raw["title"], description=raw["description"], category=raw["category"],
                source=raw["source"], input=raw["input"], event=raw["event"], examples=raw["examples"], path=path)
            continue
        manifests[raw["id"]] = Manifest(
            id=raw["id"], title=raw["title"], description=raw["description"],
            category=raw["category"], execution=raw["execution"], input=raw["input"],
            output=raw["output"], examples=raw["examples"],
            template_variables=raw.get("templateVariables", ["trigger", "steps", "now"]), source=path,
        )
    return manifests, triggers


def load_manifests() -> dict[str, Manifest]:
    """The actions (``kind: action``, the default), by id."""
    return _load_all()[0]


def load_triggers() -> dict[str, TriggerManifest]:
    """The triggers (``kind: trigger``), by id."""
    return _load_all()[1]


# Tests point data_dir elsewhere and clear the cache through the name they know.
load_manifests.cache_clear = _load_all.cache_clear  # type: ignore[attr-defined]


def get_trigger(trigger_id: str) -> TriggerManifest:
    triggers = load_triggers()
    try:
        return triggers[trigger_id]
    except KeyError:
        hint = " (it is an action: run it with pgactions run)" if trigger_id in load_manifests() else ""
        raise ActionError("UNKNOWN_ACTION", f"{trigger_id!r} is not a trigger{hint}; known triggers: "
                                            f"{', '.join(sorted(triggers))}",
                          extra={"knownTriggers": sorted(triggers)}) from None


def get_manifest(action_id: str) -> Manifest:
    manifests = load_manifests()
    try:
        return manifests[action_id]
    except KeyError:
        known = ", ".join(sorted(manifests))
        hint = " (it is a trigger: watch it with pgactions watch)" if action_id in load_triggers() else ""
        raise ActionError("UNKNOWN_ACTION", f"{action_id!r} is not an action{hint}; known actions: {known}",
                          extra={"knownActions": sorted(manifests)}) from None
