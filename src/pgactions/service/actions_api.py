"""The action endpoints: list, describe, run, batch, and test a connection.

``POST /v1/actions/{id}:run`` answers exactly what ``pgactions run`` prints for the same call
(the same bytes), or exactly its error object with the HTTP status of ``status.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgactions.connection.check import test_connection
from pgactions.runtime import ActionResult
from pgactions.service.core import ActionRequest, Service
from pgactions.service.http import error_response, json_response, object_body, read_json
from pgactions.service.principal import Principal
from pgactions.service.status import http_status
from pgactions.spec.errors import ActionError, make_error
from pgactions.spec.manifests import Manifest, get_manifest, load_manifests

__all__ = ["action_routes", "run_request"]

RUN_FIELDS = frozenset({"connection", "connectionId", "inputs", "context", "flow", "step", "options"})
BATCH_FIELDS = frozenset({"connection", "connectionId", "items", "mode", "context", "flow", "step"})
OPTION_FIELDS = frozenset({"timeout", "maxResultBytes", "numericAsNumber", "dryRun"})
_ROW_COUNT = re.compile(rb'"rowCount":(\d+)')


def action_routes(service: Service) -> list[Route]:
    async def list_actions(request: Request) -> Response:
        await service.who(request)
        return json_response([{"id": m.id, "title": m.title, "category": m.category,
                               "description": m.description, "readOnly": m.read_only}
                              for m in load_manifests().values()])

    async def describe(request: Request) -> Response:
        await service.who(request)
        return json_response(get_manifest(request.path_params["action"]).describe())

    async def run(request: Request) -> Response:
        answer = await run_request(service, request)
        return json_response(answer) if isinstance(answer, bytes) else answer

    async def batch(request: Request) -> Response:
        return await _batch(service, request)

    async def test(request: Request) -> Response:
        return await _test(service, request)

    return [
        Route("/v1/actions", list_actions, methods=["GET"]),
        Route("/v1/actions/{action}:run", run, methods=["POST"]),
        Route("/v1/actions/{action}:batch", batch, methods=["POST"]),
        Route("/v1/actions/{action}", describe, methods=["GET"]),
        Route("/v1/connections:test", test, methods=["POST"]),
    ]


def _call(request: Request, action_id: str) -> ActionRequest:
    call = ActionRequest(action_id)
    request.scope["state"]["call"] = call  # the access log and the metrics read it (Boundary)
    return call


def _context(principal: Principal, given: Any) -> dict[str, Any]:
    """The flow context; ``auth`` holds the principal's pinned values (a caller cannot set it)."""
    if given is not None and not isinstance(given, dict):
        raise ActionError("INVALID_INPUT", "context must be an object (trigger, steps …)", extra={"field": "context"})
    context = dict(given or {})
    context["auth"] = dict(principal.pinned)
    return context


def _canonical(value: Any) -> bytes:
    """The body in one spelling (keys sorted): orjson, or the standard library for integers past
    64 bits, which orjson refuses."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str).encode()


def _pinned_item(principal: Principal, item: Any) -> Any:
    """An item's own context is laid over the batch's: its ``auth`` is the principal's again."""
    if isinstance(item, dict) and isinstance(item.get("context"), dict) and "auth" in item["context"]:
        return {**item, "context": {**item["context"], "auth": dict(principal.pinned)}}
    return item


def _options(manifest: Manifest, inputs: dict[str, Any], given: Any) -> dict[str, Any]:
    """The CLI's flags as ``options``: timeout and dryRun become the action's own inputs."""
    options = object_body(given if given is not None else {}, OPTION_FIELDS)
    properties = manifest.input.get("properties", {})
    for name in ("timeout", "dryRun"):
        if name in options:
            if name not in properties:
                raise ActionError("INVALID_INPUT", f"{manifest.id} has no {name} option", extra={"field": f"options.{name}"})
            inputs[name] = options[name]
    timeout = options.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout <= 86400):
        raise ActionError("INVALID_INPUT", "options.timeout must be a number of seconds above 0",
                          extra={"field": "options.timeout"})
    limit = options.get("maxResultBytes")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ActionError("INVALID_INPUT", "options.maxResultBytes must be a positive whole number of bytes",
                          extra={"field": "options.maxResultBytes"})
    if "numericAsNumber" in options and not isinstance(options["numericAsNumber"], bool):
        raise ActionError("INVALID_INPUT", "options.numericAsNumber must be true or false",
                          extra={"field": "options.numericAsNumber"})
    return options


async def _allowed(service: Service, request: Request) -> tuple[Manifest, ActionRequest, Principal]:
    """The action the path names, the call's record, and a caller allowed to run it."""
    manifest = get_manifest(request.path_params["action"])
    call = _call(request, manifest.id)
    principal = call.principal = await service.who(request)
    service.check_action(principal, manifest)
    return manifest, call, principal


async def run_request(service: Service, request: Request) -> Response | bytes:
    """``POST /v1/actions/{id}:run`` (also called directly by the app's Boundary, see app.py):
    the action's JSON (bytes, status 200), or a response (an idempotent replay)."""
    manifest, call, principal = await _allowed(service, request)
    raw = await read_json(request, service.config.body_bytes, service.config.body_seconds)
    body = object_body(raw, RUN_FIELDS)
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise ActionError("INVALID_INPUT", "inputs must be an object", extra={"field": "inputs"})
    inputs = dict(inputs)
    options = _options(manifest, inputs, body.get("options"))
    context = _context(principal, body.get("context"))
    key = request.headers.get("idempotency-key")
    idempotent = key is not None and not manifest.read_only

    resolved = None if idempotent else service.cached_connection(principal, body)

    def work(cancel: threading.Event, counted: bool = False) -> bytes:
        profile, call.connection_id = resolved or service.resolve_connection(principal, body)
        result = service.run_action(principal, manifest, profile, inputs, context, options, cancel,
                                    flow=body.get("flow"), step=_step(body, request), counted=counted)
        return _rows_counted(call, result)

    if not idempotent:
        return await service.run_work(request, resolved[0] if resolved else None, work)  # type: ignore[no-any-return]
    assert key is not None
    return await _once(service, request, principal, key, raw, lambda cancel: json_response(work(cancel)))


def _step(body: dict[str, Any], request: Request) -> str | None:
    """The step tag in application_name: the caller's step and, when the caller traces requests
    (it sent X-Request-Id, a flow or a step), the request id, so a DBA can find the request in
    pg_stat_activity.  Untraced calls keep a constant application_name: a new one per request
    costs a round trip to the server before every action (bench/README.md, the service section)."""
    state = request.scope["state"]
    step, request_id = body.get("step"), state["request_id"]
    if not (state["request_id_given"] or step is not None or body.get("flow") is not None):
        return None
    return f"{step} req={request_id}" if step is not None else f"req={request_id}"


def _rows_counted(call: ActionRequest, result: ActionResult) -> bytes:
    """The output, its rowCount noted for the access log and the metrics."""
    found = _ROW_COUNT.search(result.json, max(0, len(result.json) - 4096))
    call.rows = int(found.group(1)) if found else None
    return result.json


def _ok(call: ActionRequest, result: ActionResult) -> Response:
    return json_response(_rows_counted(call, result))


async def _once(service: Service, request: Request, principal: Principal, header: str, raw: Any,
                work: Any) -> Response:
    """Idempotency-Key: the first request runs and its answer is kept 24 h; a retry with the same
    key and body gets that answer without running again; another body → IDEMPOTENCY_KEY_REUSED."""
    key = service.idempotency_key(principal, header)
    body_hash = hashlib.sha256(request.url.path.encode() + b"\0" + _canonical(raw)).hexdigest()

    def claim(_cancel: threading.Event) -> Any:
        return service.store.claim_idempotency(key, body_hash, time.time())

    existing = await service.in_thread(request, claim)
    if existing is not None:
        if existing.body_hash != body_hash:
            raise ActionError("IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for another request",
                              extra={"field": "Idempotency-Key"})
        if existing.status is None:
            raise ActionError("REQUEST_IN_PROGRESS", "the first request with this Idempotency-Key is still running",
                              extra={"retryAfter": 1})
        return Response(existing.response, status_code=existing.status,
                        headers={**existing.headers, "Idempotent-Replayed": "true"}, media_type="application/json")
    try:
        response: Response = await service.in_thread(request, work)
    except ActionError as exc:
        if exc.retryable:  # nothing changed and trying again may work: let a retry run it
            await service.in_thread(request, lambda _c: service.store.release_idempotency(key))
            raise
        response = error_response(exc.payload)
    except BaseException:
        await service.in_thread(request, lambda _c: service.store.release_idempotency(key))
        raise

    answer, status = bytes(response.body), response.status_code
    if len(answer) > service.config.idempotent_bytes:  # not kept: a retry learns it ran, not what it said
        status, answer = http_status("REPLAY_UNAVAILABLE"), orjson.dumps({"error": make_error(
            "REPLAY_UNAVAILABLE", f"its answer had {len(answer):,} bytes (the most kept is "
                                  f"{service.config.idempotent_bytes:,}); the action ran once (status "
                                  f"{response.status_code}) and does not run again",
            extra={"field": "Idempotency-Key", "status": response.status_code})})

    def finish(_cancel: threading.Event) -> None:
        service.store.finish_idempotency(key, status, answer, {})

    await service.in_thread(request, finish)
    return response


async def _batch(service: Service, request: Request) -> Response:
    manifest, call, principal = await _allowed(service, request)
    raw = await read_json(request, service.config.body_bytes, service.config.body_seconds)
    body = object_body(raw, BATCH_FIELDS)
    items, mode = body.get("items"), body.get("mode", "independent")
    if not isinstance(items, list):
        raise ActionError("INVALID_INPUT", "items must be a list of {inputs, context?}", extra={"field": "items"})
    if not isinstance(mode, str):
        raise ActionError("INVALID_INPUT", "mode must be independent, transaction or single", extra={"field": "mode"})
    context = _context(principal, body.get("context"))
    items = [_pinned_item(principal, item) for item in items]

    def work(cancel: threading.Event) -> Response:
        profile, call.connection_id = service.resolve_connection(principal, body)
        result = service.run_batch(principal, manifest, profile, items, mode, context, cancel,
                                   flow=body.get("flow"), step=_step(body, request))
        return _ok(call, result)

    key = request.headers.get("idempotency-key")
    if key is not None and not manifest.read_only:  # a retried batch of writes runs once, like :run
        return await _once(service, request, principal, key, raw, work)
    return await service.in_thread(request, work)  # type: ignore[no-any-return]


async def _test(service: Service, request: Request) -> Response:
    call = _call(request, "test_connection")
    principal = call.principal = await service.who(request)
    body = object_body(await read_json(request, service.config.body_bytes, service.config.body_seconds), frozenset({"connection", "connectionId"}))

    def work(_cancel: threading.Event) -> Response:
        try:
            profile, call.connection_id = service.resolve_connection(principal, body)
        except ActionError as exc:
            if exc.code in ("FORBIDDEN", "UNKNOWN_CONNECTION"):
                raise
            report: dict[str, Any] = {"ok": False, "failedStep": "profile", "steps": [], "error": exc.payload}
        else:
            report = test_connection(profile)
        call.code = "OK" if report["ok"] else report["error"]["code"]
        return json_response(report)

    return await service.in_thread(request, work)  # type: ignore[no-any-return]
