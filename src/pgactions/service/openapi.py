"""The OpenAPI 3.1 document, generated from the manifests (never written by hand), and the
``/docs`` page made from it.

One schema component per action input and output (``<id>.input`` / ``<id>.output``), the error
object, and the connection profile with its secrets marked ``writeOnly``.  Each action has its
own ``:run`` and ``:batch`` paths, so a generated client gets one typed method per action.
"""

from __future__ import annotations

import copy
import html
from functools import lru_cache
from typing import Any

import orjson

from pgactions.service.status import HTTP_STATUS
from pgactions.spec.manifests import load_manifests, load_schema

__all__ = ["docs_page", "openapi_bytes", "openapi_document"]

SECRET_FIELDS = ("password", "sslKey", "sslPassword")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """A manifest schema as a component: its own $schema/$id dropped (the document's dialect)."""
    schema = copy.deepcopy(schema)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema


def _connection_schema() -> dict[str, Any]:
    schema = _clean(load_schema("connection.schema.json"))
    for name in (*SECRET_FIELDS, "url"):
        if name in schema.get("properties", {}):
            schema["properties"][name]["writeOnly"] = True  # accepted, never returned
    return schema


def _error_responses(*codes: int) -> dict[str, Any]:
    described = {400: "The database refused the statement", 401: "No valid credentials", 403: "Not allowed",
                 404: "Something named does not exist", 408: "The request body did not arrive in time",
                 409: "A conflict with the data's rules or state",
                 413: "Too large", 422: "The request is not valid", 429: "Too many requests on this connection",
                 499: "Cancelled", 500: "A bug in pgactions", 502: "The database could not be reached",
                 503: "Try again later", 504: "The action's timeout passed"}
    return {str(code): {"description": described.get(code, "Error"),
                        "content": {"application/json": {"schema": _ref("ErrorResponse")}}}
            for code in codes}


ALL_ERRORS = tuple(sorted(set(HTTP_STATUS.values())))


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _connection_fields() -> dict[str, Any]:
    return {
        "connection": {"oneOf": [{"type": "string", "pattern": "^postgres(ql)?://", "writeOnly": True},
                                 _ref("ConnectionProfile")],
                       "description": "A postgresql:// URL or a profile object (checked: no files, no "
                                      "environment, allowed hosts only)."},
        "connectionId": {"type": "string", "minLength": 1, "description": "A stored connection's id."},
    }


def _run_request(action_id: str) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False,
        "properties": {
            **_connection_fields(),
            "inputs": _ref(f"{action_id}.input"),
            "context": {"type": "object", "description": "Flow data templates see: trigger, steps …"},
            "flow": {"type": "string", "description": "Flow name, shown in pg_stat_activity."},
            "step": {"type": "string", "description": "Step name, shown in pg_stat_activity."},
            "options": _ref("RunOptions"),
        },
    }


def _batch_request(action_id: str) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["items"],
        "properties": {
            **_connection_fields(),
            "items": {"type": "array", "items": {
                "type": "object", "required": ["inputs"], "additionalProperties": False,
                "properties": {"inputs": _ref(f"{action_id}.input"), "context": {"type": "object"}}}},
            "mode": {"enum": ["independent", "transaction", "single"], "default": "independent"},
            "context": {"type": "object"},
            "flow": {"type": "string"}, "step": {"type": "string"},
        },
    }


def _batch_response(action_id: str) -> dict[str, Any]:
    return {"type": "object", "required": ["mode", "ok", "items"], "properties": {
        "mode": {"type": "string"}, "ok": {"type": "boolean"},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "output": _ref(f"{action_id}.output"),
            "error": _ref("Error")}}}}}


def _action_paths(components: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for manifest in load_manifests().values():
        described = manifest.describe()
        components[f"{manifest.id}.input"] = _clean(described["input"])
        components[f"{manifest.id}.output"] = _clean(described["output"])
        tag = "Actions: " + manifest.category
        paths[f"/v1/actions/{manifest.id}:run"] = {"post": {
            "operationId": f"run_{manifest.id}", "tags": [tag], "summary": f"Run {manifest.title}",
            "description": manifest.description
            + ("" if manifest.read_only else " Send an Idempotency-Key header to make a retry safe."),
            "requestBody": _json_body(_ref(f"{manifest.id}.run")),
            "responses": {"200": _ok(_ref(f"{manifest.id}.output")), **_error_responses(*ALL_ERRORS)}}}
        paths[f"/v1/actions/{manifest.id}:batch"] = {"post": {
            "operationId": f"batch_{manifest.id}", "tags": [tag], "summary": f"Run {manifest.title} once per item",
            "requestBody": _json_body(_ref(f"{manifest.id}.batch")),
            "responses": {"200": _ok(_batch_response(manifest.id)), **_error_responses(*ALL_ERRORS)}}}
        components[f"{manifest.id}.run"] = _run_request(manifest.id)
        components[f"{manifest.id}.batch"] = _batch_request(manifest.id)
    return paths


def _service_paths() -> dict[str, Any]:
    connection_id = {"name": "id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}}
    stored = {"type": "object", "required": ["id", "connection"],
              "properties": {"id": {"type": "string"}, "connection": _ref("ConnectionProfile")}}
    return {
        "/v1/actions": {"get": {"operationId": "list_actions", "tags": ["Actions"], "summary": "List the actions",
                                "responses": {"200": _ok({"type": "array", "items": {"type": "object", "properties": {
                                    "id": {"type": "string"}, "title": {"type": "string"},
                                    "category": {"type": "string"}, "description": {"type": "string"},
                                    "readOnly": {"type": "boolean"}}}}), **_error_responses(401, 403)}}},
        "/v1/connections:test": {"post": {
            "operationId": "test_connection", "tags": ["Connections"], "summary": "Test a connection step by step",
            "requestBody": _json_body({"type": "object", "additionalProperties": False,
                                       "properties": _connection_fields()}),
            "responses": {"200": _ok({"type": "object", "required": ["ok"], "properties": {
                "ok": {"type": "boolean"}, "failedStep": {"type": "string"}, "steps": {"type": "array"},
                "error": _ref("Error")}}, "The report (a failed test is a report too)"),
                **_error_responses(401, 403, 404, 413, 422, 429)}}},
        "/v1/connections": {"get": {"operationId": "list_connections", "tags": ["Connections"],
                                    "summary": "List the stored connections",
                                    "responses": {"200": _ok({"type": "array", "items": {
                                        "type": "object", "properties": {"id": {"type": "string"}}}}),
                                        **_error_responses(401, 403)}}},
        "/v1/connections/{id}": {
            "parameters": [connection_id],
            "put": {"operationId": "put_connection", "tags": ["Connections"], "summary": "Save a connection",
                    "description": "Secrets are write-only: responses mask them; sending the mask back keeps "
                                   "the stored value.",
                    "requestBody": _json_body({"oneOf": [_ref("ConnectionProfile"),
                                                         {"type": "string", "pattern": "^postgres(ql)?://"}]}),
                    "responses": {"200": _ok(stored, "Replaced"), "201": _ok(stored, "Created"),
                                  **_error_responses(401, 403, 413, 422, 502, 503)}},
            "get": {"operationId": "get_connection", "tags": ["Connections"], "summary": "Read a connection (masked)",
                    "responses": {"200": _ok(stored), **_error_responses(401, 403, 404, 422)}},
            "delete": {"operationId": "delete_connection", "tags": ["Connections"], "summary": "Delete a connection",
                       "responses": {"204": {"description": "Deleted"}, **_error_responses(401, 403, 404, 422)}},
        },
        "/healthz": {"get": {"operationId": "healthz", "tags": ["Service"], "summary": "The process answers",
                             "security": [], "responses": {"200": _ok({"type": "object"})}}},
        "/readyz": {"get": {"operationId": "readyz", "tags": ["Service"], "summary": "The state store is readable",
                            "security": [], "responses": {"200": _ok({"type": "object"}),
                                                          "503": _ok({"type": "object"}, "Not ready")}}},
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    from pgactions import __version__

    components: dict[str, Any] = {
        "Error": _clean(load_schema("error.schema.json")),
        "ErrorResponse": {"type": "object", "required": ["error"], "properties": {"error": _ref("Error")}},
        "ConnectionProfile": _connection_schema(),
        "RunOptions": {"type": "object", "additionalProperties": False, "properties": {
            "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds (the action's timeout input)."},
            "maxResultBytes": {"type": "integer", "minimum": 1, "description": "A lower output cap for this call."},
            "numericAsNumber": {"type": "boolean", "description": "numeric values as JSON numbers, not strings."},
            "dryRun": {"type": "boolean", "description": "Run and roll back (writes)."}}},
    }
    paths = {**_action_paths(components), **_service_paths()}
    try:
        from pgactions.service.records_api import records_paths

        paths.update(records_paths())
    except ImportError:
        pass
    try:
        from pgactions.service.subscriptions_api import subscriptions_paths

        paths.update(subscriptions_paths())
    except ImportError:
        pass
    return {
        "openapi": "3.1.0",
        "info": {"title": "pgactions", "version": __version__,
                 "description": "PostgreSQL actions over HTTP: every action of the pack, stored connections, "
                                "and a records API in PostgREST's grammar. Errors are {\"error\": {...}} with a "
                                "stable code; docs/service.md has the status table."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "An API key (pgactions keys create) or a JWT."}}},
    }


@lru_cache(maxsize=1)
def openapi_bytes() -> bytes:
    return orjson.dumps(openapi_document())


@lru_cache(maxsize=1)
def docs_page() -> str:
    """A self-contained page (no scripts from elsewhere): every endpoint and each action's inputs."""
    document = openapi_document()
    parts = ["<!doctype html><html lang=en><meta charset=utf-8><title>pgactions API</title>",
             "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
             "code{background:#f3f3f3;padding:0 .25em}table{border-collapse:collapse;width:100%}"
             "td,th{border-bottom:1px solid #ddd;padding:.3em;text-align:left;vertical-align:top}"
             "h2{margin-top:2em}.m{font-weight:600;color:#0a5}</style>",
             "<h1>pgactions API</h1><p>The machine-readable document is <a href=/openapi.json>/openapi.json</a> "
             "(OpenAPI 3.1). Send <code>Authorization: Bearer &lt;key&gt;</code>.</p>"]
    by_tag: dict[str, list[str]] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            tag = operation.get("tags", ["Other"])[0]
            by_tag.setdefault(tag, []).append(
                f"<tr><td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation.get('summary', ''))}{_inputs_table(document, operation)}</td></tr>")
    for tag in sorted(by_tag):
        parts.append(f"<h2>{html.escape(tag)}</h2><table>{''.join(by_tag[tag])}</table>")
    parts.append("</html>")
    return "".join(parts)


def _inputs_table(document: dict[str, Any], operation: dict[str, Any]) -> str:
    op = operation.get("operationId", "")
    if not op.startswith("run_"):
        return ""
    schema = document["components"]["schemas"].get(op[4:] + ".input", {})
    rows = "".join(f"<li><code>{html.escape(name)}</code> — {html.escape(str(prop.get('description', '')))}</li>"
                   for name, prop in schema.get("properties", {}).items())
    return f"<details><summary>inputs</summary><ul>{rows}</ul></details>"
