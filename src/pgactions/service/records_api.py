"""The records API's routes: ``/v1/db/{connectionId}/…`` in PostgREST's grammar, each request
translated by :mod:`pgactions.service.records` into one of the existing actions (no SQL built
here) and run on a stored connection like any ``:run``.  GET requests run read-only actions only,
so the server refuses writes.  docs/service-records.md has the grammar.
"""

from __future__ import annotations

import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgactions.service import records
from pgactions.service.core import ActionRequest, Service
from pgactions.service.http import json_response, read_json
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import get_manifest

__all__ = ["records_paths", "records_routes"]

BASE = "/v1/db/{connectionId}"


def records_routes(service: Service) -> list[Route]:
    async def table(request: Request) -> Response:
        target, params = request.path_params["target"], request.query_params.multi_items()
        prefer = request.headers.getlist("prefer")
        method = request.method
        if method in ("POST", "PATCH"):
            await service.who(request)  # no body is read for a caller who may not send one
        if method == "GET":
            call = records.table_read(target, params, prefer, accept=request.headers.get("accept"))
        elif method == "POST":
            call = records.table_insert(target, await read_json(request, service.config.body_bytes, service.config.body_seconds), prefer, params)
        elif method == "PATCH":
            call = records.table_update(target, await read_json(request, service.config.body_bytes, service.config.body_seconds), params, prefer)
        else:
            call = records.table_delete(target, params, prefer)
        return await _run(service, request, call)

    async def rpc(request: Request) -> Response:
        await service.who(request)  # no body is read for a caller who may not send one
        body = await read_json(request, service.config.body_bytes, service.config.body_seconds)
        return await _run(service, request, records.rpc(request.path_params["target"], body, "POST"))

    async def tables(request: Request) -> Response:
        return await _run(service, request, records.list_tables(request.query_params.get("schema")))

    async def schemas(request: Request) -> Response:
        system = request.query_params.get("includeSystem", "false").lower() == "true"
        return await _run(service, request, records.list_schemas(system))

    async def functions(request: Request) -> Response:
        query = request.query_params
        return await _run(service, request, records.list_functions(query.get("schema"), query.get("name")))

    async def metadata(request: Request) -> Response:
        return await _run(service, request, records.table_metadata(request.path_params["target"]))

    return [
        Route(f"{BASE}/tables", tables, methods=["GET"]),
        Route(f"{BASE}/schemas", schemas, methods=["GET"]),
        Route(f"{BASE}/functions", functions, methods=["GET"]),
        Route(f"{BASE}/tables/{{target}}/metadata", metadata, methods=["GET"]),
        Route(f"{BASE}/tables/{{target}}", table, methods=["GET", "POST", "PATCH", "DELETE"]),
        Route(f"{BASE}/rpc/{{target}}", rpc, methods=["POST"]),
    ]


async def _run(service: Service, request: Request, call: records.RecordCall) -> Response:
    manifest = get_manifest(call.action_id)
    connection_id = request.path_params["connectionId"]
    state = request.state.call = ActionRequest(call.action_id, connection_id)
    principal = state.principal = await service.who(request)
    service.check_action(principal, manifest)
    if call.read_only and not manifest.read_only:  # never a write from a GET (the server enforces reads)
        raise ActionError("INVALID_INPUT", f"a GET may not run {manifest.id}", extra={"field": "method"})
    context = {"auth": dict(principal.pinned)}

    # Reads may wait for the server on the event loop (Service.run_work); writes run in a thread:
    # a write followed by a count that could not wait on the loop would otherwise run twice.
    resolved = service.cached_stored_profile(principal, connection_id) if call.read_only else None

    def work(cancel: threading.Event, in_limit: bool = False) -> tuple[int, dict[str, str], Any]:
        profile = resolved or service.stored_profile(principal, connection_id)
        try:
            output = service.run_action(principal, manifest, profile, dict(call.inputs), context, {}, cancel,
                                        counted=in_limit).data
            counted = None
            if call.count_call is not None and records.count_needed(call, output):
                counted = _count(service, principal, profile, call.count_call, context, cancel, in_limit)
        except ActionError as exc:
            raise records.column_error_to_invalid(exc, call) from None
        rows = output.get("rowCount")
        state.rows = rows if isinstance(rows, int) else None
        return records.shape_response(call, output, counted)

    status, headers, body = await service.run_work(request, resolved, work)
    if body is None:
        return Response(status_code=status, headers=headers)
    return json_response(body, status, headers)


def _count(service: Service, principal: Any, profile: Any, count_call: records.RecordCall,
           context: dict[str, Any], cancel: threading.Event, in_limit: bool) -> dict[str, Any] | None:
    """``Prefer: count=exact``: the total, or None ("*") when there are too many rows to count."""
    manifest = get_manifest(count_call.action_id)
    try:
        return service.run_action(principal, manifest, profile, dict(count_call.inputs), context, {},  # type: ignore[no-any-return]
                                  cancel, counted=in_limit).data
    except ActionError as exc:
        if exc.code != "RESULT_TOO_LARGE":
            raise
        return None


def records_paths() -> dict[str, Any]:
    """The records API in the OpenAPI document (its grammar lives in query parameters)."""
    error = {"description": "Error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ErrorResponse"}}}}
    errors = {str(code): error for code in (401, 403, 404, 409, 413, 422, 429, 502, 503, 504)}
    connection = {"name": "connectionId", "in": "path", "required": True, "schema": {"type": "string"}}
    target = {"name": "target", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
              "description": "schema.table (or table: the connection's search path)"}
    rows = {"description": "Rows", "content": {"application/json": {"schema": {
        "type": "array", "items": {"type": "object"}}}}}
    any_json = {"description": "OK", "content": {"application/json": {"schema": {}}}}
    body = {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}}}
    prefer = {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"}}
    tags = ["Records"]
    return {
        f"{BASE}/tables/{{target}}": {
            "parameters": [connection, target],
            "get": {"operationId": "records_read", "tags": tags, "parameters": [prefer],
                    "summary": "Read rows: ?select=&order=&limit=&offset=&column=op.value",
                    "responses": {"200": rows, "206": rows, **errors}},
            "post": {"operationId": "records_insert", "tags": tags, "parameters": [prefer], "requestBody": body,
                     "summary": "Insert one object or an array (Prefer: resolution=merge-duplicates upserts)",
                     "responses": {"201": any_json, **errors}},
            "patch": {"operationId": "records_update", "tags": tags, "parameters": [prefer],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                      "summary": "Update the rows the filters select",
                      "responses": {"200": rows, "204": {"description": "Updated"}, **errors}},
            "delete": {"operationId": "records_delete", "tags": tags, "parameters": [prefer],
                       "summary": "Delete the rows the filters select (no filter: ?allowAllRows=true)",
                       "responses": {"200": rows, "204": {"description": "Deleted"}, **errors}},
        },
        f"{BASE}/tables/{{target}}/metadata": {"get": {
            "operationId": "records_metadata", "tags": tags, "parameters": [connection, target],
            "summary": "Columns, keys, indexes of a table", "responses": {"200": any_json, **errors}}},
        f"{BASE}/tables": {"get": {"operationId": "records_tables", "tags": tags, "parameters": [connection],
                                   "summary": "List tables", "responses": {"200": any_json, **errors}}},
        f"{BASE}/schemas": {"get": {"operationId": "records_schemas", "tags": tags, "parameters": [connection],
                                    "summary": "List schemas", "responses": {"200": any_json, **errors}}},
        f"{BASE}/functions": {"get": {"operationId": "records_functions", "tags": tags, "parameters": [connection],
                                      "summary": "List functions", "responses": {"200": any_json, **errors}}},
        f"{BASE}/rpc/{{target}}": {"post": {
            "operationId": "records_rpc", "tags": tags, "parameters": [connection, target],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "summary": "Call a function with named arguments", "responses": {"200": any_json, **errors}}},
    }
