"""Triggers and trigger subscriptions over HTTP.

``GET /v1/triggers`` and ``GET /v1/triggers/{id}`` list and describe the triggers (apart from the
actions: a trigger is not runnable with ``:run``).  ``POST /v1/subscriptions`` with
``{trigger, connectionId, inputs, url, secret?}`` subscribes a webhook to a trigger's events on a
stored connection; ``GET /v1/subscriptions(/{id})`` shows them (the secret masked) with their
delivery state; ``DELETE /v1/subscriptions/{id}`` ends one.  The deliveries themselves:
:mod:`pgactions.service.subscriptions`; docs/service-subscriptions.md.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgactions.service.core import ActionRequest, Service
from pgactions.service.http import json_response, object_body, read_json
from pgactions.service.principal import Principal
from pgactions.service.store import SubscriptionRecord
from pgactions.service.subscriptions import Subscriptions, check_url, new_secret, new_subscription_id
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import get_trigger, load_triggers

__all__ = ["MASK", "shown", "subscriptions_paths", "subscriptions_routes"]

MASK = "********"
_FIELDS = frozenset({"trigger", "connectionId", "inputs", "url", "secret"})
MIN_SECRET, MAX_SECRET = 16, 256


def shown(record: SubscriptionRecord, full_url: bool = True) -> dict[str, Any]:
    """A subscription as answered: never its secret; its URL (it may carry a token in its path or
    query) whole only to a caller who may manage subscriptions."""
    return {"id": record.id, "trigger": record.trigger, "connectionId": record.connection_id,
            "inputs": record.inputs, "url": record.url if full_url else _url_origin(record.url), "secret": MASK, "created": _iso(record.created),
            "status": record.status, "lastDelivery": _iso(record.last_delivery), "lastError": record.last_error,
            "delivered": record.delivered, "checkpoint": record.checkpoint}


def _url_origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/{MASK}" if parts.path not in ("", "/") or parts.query else url


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def subscriptions_routes(service: Service) -> list[Route]:
    """The routes; the manager that runs the subscriptions is ``service.subscriptions`` (the app's
    lifespan starts and stops it)."""
    manager = Subscriptions(service)
    service.subscriptions = manager  # type: ignore[attr-defined]

    async def triggers(request: Request) -> Response:
        request.state.call = call = ActionRequest("list_triggers")
        call.principal = await service.who(request)
        return json_response([{"id": t.id, "kind": "trigger", "title": t.title, "category": t.category,
                               "source": t.source, "description": t.description}
                              for t in sorted(load_triggers().values(), key=lambda t: t.id)])

    async def trigger(request: Request) -> Response:
        request.state.call = call = ActionRequest("describe_trigger")
        call.principal = await service.who(request)
        return json_response(get_trigger(request.path_params["id"]).describe())

    async def create(request: Request) -> Response:
        request.state.call = call = ActionRequest("create_subscription")
        principal = call.principal = await service.who(request)
        _may_manage(principal)
        body = object_body(await read_json(request, service.config.body_bytes, service.config.body_seconds), _FIELDS)
        for name in ("trigger", "connectionId", "url"):
            if name not in body:
                raise ActionError("INVALID_INPUT", f"{name} is required", extra={"field": name})
        if not isinstance(body["trigger"], str) or not body["trigger"]:
            raise ActionError("INVALID_INPUT", "trigger must be a trigger's id (GET /v1/triggers)",
                              extra={"field": "trigger"})
        connection_id = body["connectionId"]
        if not isinstance(connection_id, str) or not connection_id:
            raise ActionError("INVALID_INPUT", "connectionId must be a stored connection's id",
                              extra={"field": "connectionId"})
        call.connection_id = connection_id
        manifest = get_trigger(body["trigger"])  # UNKNOWN_ACTION (404) naming the triggers
        from pgactions.triggers import validate_trigger_inputs

        inputs = validate_trigger_inputs(manifest, body.get("inputs", {}))
        given = body.get("secret")
        if given is not None and (not isinstance(given, str) or not MIN_SECRET <= len(given) <= MAX_SECRET
                                  or not given.isprintable()):
            raise ActionError("INVALID_INPUT", f"secret must be {MIN_SECRET} to {MAX_SECRET} printable characters "
                                               "(leave it out and one is made for you)", extra={"field": "secret"})
        secret = given if given is not None else new_secret()

        def work(_cancel: threading.Event) -> Response:
            check_url(body["url"], service.policy)
            profile = service.stored_profile(principal, connection_id)
            checkpoint = _start(service, manifest.id, manifest.source, profile, inputs)
            record = SubscriptionRecord(id=new_subscription_id(), trigger=manifest.id, connection_id=connection_id,
                                        inputs=inputs, url=body["url"], secret=secret, created=time.time(),
                                        owner=principal.name, checkpoint=checkpoint)
            service.store.put_subscription(record)
            manager.wake()
            answer = shown(record)
            if given is None:
                answer["secret"] = secret  # made here: shown this once, never again
            return json_response(answer, status=201, headers={"Location": f"/v1/subscriptions/{record.id}"})

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    async def listing(request: Request) -> Response:
        request.state.call = call = ActionRequest("list_subscriptions")
        principal = call.principal = await service.who(request)

        def work(_cancel: threading.Event) -> Response:
            full = _manages(principal)
            return json_response([shown(r, full) for r in service.store.list_subscriptions()
                                  if principal.may_use(r.connection_id)])

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    async def read(request: Request) -> Response:
        request.state.call = call = ActionRequest("get_subscription")
        principal = call.principal = await service.who(request)
        subscription_id = request.path_params["id"]

        def work(_cancel: threading.Event) -> Response:
            record = _found(service, subscription_id)
            if not principal.may_use(record.connection_id):
                raise ActionError("FORBIDDEN", f"this key may not use the connection {record.connection_id!r}",
                                  extra={"connectionId": record.connection_id})
            return json_response(shown(record, _manages(principal)))

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    async def delete(request: Request) -> Response:
        request.state.call = call = ActionRequest("delete_subscription")
        principal = call.principal = await service.who(request)
        _may_manage(principal)
        subscription_id = request.path_params["id"]

        def work(_cancel: threading.Event) -> Response:
            gone = service.store.delete_subscription(subscription_id)
            manager.forget(subscription_id)  # this process stops at once; others at their next look
            if not gone:
                _found(service, subscription_id)
            return Response(status_code=204)

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    return [
        Route("/v1/triggers", triggers, methods=["GET"]),
        Route("/v1/triggers/{id}", trigger, methods=["GET"]),
        Route("/v1/subscriptions", listing, methods=["GET"]),
        Route("/v1/subscriptions", create, methods=["POST"]),
        Route("/v1/subscriptions/{id}", read, methods=["GET"]),
        Route("/v1/subscriptions/{id}", delete, methods=["DELETE"]),
    ]


def _found(service: Service, subscription_id: str) -> SubscriptionRecord:
    record = service.store.get_subscription(subscription_id)
    if record is None:
        raise ActionError("NOT_FOUND", f"no subscription {subscription_id!r}",
                          message="No such subscription.", extra={"subscription": subscription_id})
    return record


def _manages(principal: Principal) -> bool:
    try:
        _may_manage(principal)
    except ActionError:
        return False
    return True


def _may_manage(principal: Principal) -> None:
    """Subscribing or unsubscribing: an unscoped, writing key (or no auth) without pinned values or
    a role — events are read as the connection's login role, which such a caller could not."""
    if principal.read_only or principal.connections is not None or principal.actions is not None:
        raise ActionError("FORBIDDEN", "only a key without scopes may create or delete subscriptions")
    if principal.pinned or principal.role is not None:
        raise ActionError("FORBIDDEN", "a key or token with pinned context values or a role may not create or "
                                       "delete subscriptions: their events are read as the connection's login "
                                       "role, without those limits")


def _start(service: Service, trigger_id: str, source: str, profile: Any, inputs: dict[str, Any]) -> Any:
    """A polling trigger is opened now, so a wrong table or column is this request's error, and
    ``startFrom: now`` means now (not when a worker first polls): the checkpoint to start from."""
    if source != "polling":
        return None
    from pgactions.triggers import open_source

    opened = open_source(service.runtime, trigger_id, profile, inputs, None)
    try:
        if inputs.get("startFrom", "now") != "now":
            return None
        batch = opened.poll(0)
        return batch.checkpoint if not batch.events else None
    finally:
        opened.close()


def subscriptions_paths() -> dict[str, Any]:
    """The triggers and subscriptions in the OpenAPI document."""
    error = {"description": "Error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ErrorResponse"}}}}
    errors = {str(code): error for code in (401, 403, 404, 422, 502, 503)}
    any_json = {"description": "OK", "content": {"application/json": {"schema": {}}}}
    identifier = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    subscription = {"type": "object", "properties": {
        "id": {"type": "string"}, "trigger": {"type": "string"}, "connectionId": {"type": "string"},
        "inputs": {"type": "object"}, "url": {"type": "string"},
        "secret": {"type": "string", "description": "********, except in the answer to a POST that made it"},
        "created": {"type": "string", "format": "date-time"},
        "status": {"enum": ["starting", "active", "retrying", "failing"]},
        "lastDelivery": {"type": ["string", "null"], "format": "date-time"},
        "lastError": {"type": ["string", "null"]}, "delivered": {"type": "integer"},
        "checkpoint": {"type": ["object", "null"]}}}
    body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["trigger", "connectionId", "url"], "additionalProperties": False,
        "properties": {
            "trigger": {"type": "string", "description": "A trigger's id (GET /v1/triggers)."},
            "connectionId": {"type": "string", "description": "A stored connection."},
            "inputs": {"type": "object", "description": "The trigger's inputs (GET /v1/triggers/{id})."},
            "url": {"type": "string", "format": "uri", "description": "http(s) URL the batches are POSTed to."},
            "secret": {"type": "string", "minLength": MIN_SECRET, "maxLength": MAX_SECRET,
                       "description": "HMAC key of X-Pgactions-Signature (made and shown once when left out)."}}}}}}
    one = {"description": "The subscription", "content": {"application/json": {"schema": subscription}}}
    tags = ["Subscriptions"]
    return {
        "/v1/triggers": {"get": {"operationId": "list_triggers", "tags": ["Triggers"],
                                 "summary": "List the triggers (not runnable with :run)",
                                 "responses": {"200": any_json, **errors}}},
        "/v1/triggers/{id}": {"get": {"operationId": "describe_trigger", "tags": ["Triggers"],
                                      "parameters": [identifier], "summary": "A trigger's inputs and events",
                                      "responses": {"200": any_json, **errors}}},
        "/v1/subscriptions": {
            "get": {"operationId": "list_subscriptions", "tags": tags, "summary": "List subscriptions (masked)",
                    "responses": {"200": {"description": "Subscriptions", "content": {"application/json": {
                        "schema": {"type": "array", "items": subscription}}}}, **errors}},
            "post": {"operationId": "create_subscription", "tags": tags, "requestBody": body,
                     "summary": "POST a trigger's events to a webhook, signed, at least once",
                     "responses": {"201": one, **errors}}},
        "/v1/subscriptions/{id}": {
            "get": {"operationId": "get_subscription", "tags": tags, "parameters": [identifier],
                    "summary": "A subscription and its delivery state", "responses": {"200": one, **errors}},
            "delete": {"operationId": "delete_subscription", "tags": tags, "parameters": [identifier],
                       "summary": "End a subscription (a row_changes slot stays: pgactions cdc drop-slot)",
                       "responses": {"204": {"description": "Deleted"}, **errors}}},
    }
