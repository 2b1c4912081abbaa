"""Stored connections: ``PUT/GET/DELETE /v1/connections/{id}``, ``GET /v1/connections``.

Secrets are write-only: a response shows ``"********"`` in their place, and a PUT that sends the
mask back (a form that loaded the profile and saved it again) keeps the stored secret.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgactions.service.core import ActionRequest, Service
from pgactions.service.http import json_response, read_json
from pgactions.spec.errors import ActionError

__all__ = ["MASK", "connection_routes", "masked"]

MASK = "********"
SECRET_FIELDS = ("password", "sslKey", "sslPassword")
SECRET_OPTIONS = ("oauth_client_secret", "scram_client_key", "scram_server_key")


def masked(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile as shown: every secret replaced by the mask (present or not, nothing leaks)."""
    shown = dict(profile)
    for name in SECRET_FIELDS:
        if shown.get(name) is not None:
            shown[name] = MASK
    options = shown.get("extraOptions")
    if isinstance(options, dict):
        shown["extraOptions"] = {k: (MASK if k in SECRET_OPTIONS else v) for k, v in options.items()}
    if isinstance(shown.get("url"), str):
        shown["url"] = _masked_url(shown["url"])
    return shown


def _masked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None and "password=" not in parts.query:
            return url
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
        query = "&".join(f"{k}={MASK}" if k in ("password", "sslpassword") else f"{k}={v}"
                         for k, _, v in (item.partition("=") for item in parts.query.split("&") if item))
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return MASK


# What decides where a connection goes and how it is protected: a stored secret is kept (the mask
# sent back) only while these stay as they were — else a caller could point the stored password at
# a server of its own and read it there (secrets are write-only).
DESTINATION_FIELDS = ("url", "host", "port", "database", "username", "sslMode", "sslRootCert", "sslCert",
                      "extraOptions")


def _keep_masked(given: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """A secret sent back as the mask keeps the stored value, as long as the connection still goes
    where it went; otherwise the real value must be sent again."""
    merged = dict(given)
    kept = []
    for name in (*SECRET_FIELDS, "url"):
        if merged.get(name) == MASK or (name == "url" and isinstance(merged.get("url"), str)
                                         and MASK in merged["url"]):
            if stored is not None and name in stored and name != "url":
                merged[name] = stored[name]
            elif name == "url" and stored is not None and masked(stored).get("url") == merged["url"]:
                merged["url"] = stored["url"]
            else:
                raise ActionError("INVALID_CONNECTION", f"{name} holds the mask {MASK!r} but no secret is stored "
                                                        "to keep; send the real value", extra={"field": name})
            kept.append(name)
    if kept and stored is not None:
        before, after = masked(stored), masked(merged)
        moved = [f for f in DESTINATION_FIELDS if before.get(f) != after.get(f)]
        if moved:
            raise ActionError("INVALID_CONNECTION", f"{moved[0]} changes where the connection goes: send "
                                                    f"{kept[0]} again (a kept secret only goes where it went)",
                              extra={"field": kept[0]})
    return merged


def connection_routes(service: Service) -> list[Route]:
    async def put(request: Request) -> Response:
        connection_id = request.path_params["id"]
        request.state.call = call = ActionRequest("put_connection", connection_id)
        principal = call.principal = await service.who(request)
        _may_manage(principal, connection_id)
        given = await read_json(request, service.config.body_bytes, service.config.body_seconds)
        if isinstance(given, str):
            given = {"url": given}
        if not isinstance(given, dict):
            raise ActionError("INVALID_CONNECTION", "send the connection as a profile object or a URL string",
                              extra={"field": "(body)"})

        def work(_cancel: threading.Event) -> Response:
            stored = _get(service, connection_id)
            profile = _keep_masked(given, stored)
            service.vet(profile)  # the same checks as at every use: refused now, not at the first run
            try:
                service.store.put_connection(connection_id, profile)
                service.forget_connection(connection_id)
            except ValueError as exc:
                raise ActionError("INVALID_INPUT", str(exc), extra={"field": "id"}) from None
            return json_response({"id": connection_id, "connection": masked(profile)},
                                 status=200 if stored is not None else 201)

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    async def get(request: Request) -> Response:
        connection_id = request.path_params["id"]
        request.state.call = call = ActionRequest("get_connection", connection_id)
        principal = call.principal = await service.who(request)
        if not principal.may_use(connection_id):
            raise ActionError("FORBIDDEN", f"this key may not use the connection {connection_id!r}")

        def work(_cancel: threading.Event) -> Response:
            stored = _get(service, connection_id)
            if stored is None:
                raise ActionError("UNKNOWN_CONNECTION", f"no stored connection {connection_id!r}",
                                  extra={"connectionId": connection_id})
            return json_response({"id": connection_id, "connection": masked(stored)})

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    async def delete(request: Request) -> Response:
        connection_id = request.path_params["id"]
        request.state.call = call = ActionRequest("delete_connection", connection_id)
        principal = call.principal = await service.who(request)
        _may_manage(principal, connection_id)

        def work(_cancel: threading.Event) -> Response:
            try:
                gone = service.store.delete_connection(connection_id)
            except ValueError:
                gone = False
            service.forget_connection(connection_id)
            if not gone:
                raise ActionError("UNKNOWN_CONNECTION", f"no stored connection {connection_id!r}",
                                  extra={"connectionId": connection_id})
            return Response(status_code=204)

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    async def listing(request: Request) -> Response:
        request.state.call = call = ActionRequest("list_connections")
        principal = call.principal = await service.who(request)

        def work(_cancel: threading.Event) -> Response:
            ids = [i for i in service.store.list_connections() if principal.may_use(i)]
            return json_response([{"id": i} for i in sorted(ids)])

        return await service.in_thread(request, work)  # type: ignore[no-any-return]

    return [
        Route("/v1/connections", listing, methods=["GET"]),
        Route("/v1/connections/{id}", put, methods=["PUT"]),
        Route("/v1/connections/{id}", get, methods=["GET"]),
        Route("/v1/connections/{id}", delete, methods=["DELETE"]),
    ]


def _get(service: Service, connection_id: str) -> dict[str, Any] | None:
    try:
        return service.store.get_connection(connection_id)
    except ValueError as exc:
        raise ActionError("INVALID_INPUT", str(exc), extra={"field": "id"}) from None


def _may_manage(principal: Any, connection_id: str) -> None:
    """Saving or deleting connections: an unscoped, writing API key (or no auth) — never a token
    (end users) nor a key with pinned values or a role: a stored connection is used by every
    caller, so changing one would redirect their traffic."""
    if principal.read_only or principal.connections is not None or principal.actions is not None \
            or principal.pinned or principal.role is not None or principal.kind == "jwt":
        raise ActionError("FORBIDDEN", "only an API key without scopes, pinned values or a role may save or "
                                       "delete connections", extra={"connectionId": connection_id})
