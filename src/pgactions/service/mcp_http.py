"""The MCP streamable-HTTP transport of ``pgactions serve``, at ``/mcp/{connectionId}``.

Behind the service's auth: every HTTP request is authenticated (API key or JWT) before the SDK
sees it, and the principal's scopes apply — the stored connection must be in its scope, it sees
only the tools it may run (a read-only key: the read-only ones; a key with pinned context: no
free-SQL tools unless ``--allow-sql``), each call is checked again, and pinned values reach the
templates as ``{{ auth.… }}``.  The connection is always a stored one, never a profile from the
caller.  ``?toolset=NAME`` narrows the tools to a toolset of the service's configuration.

Stateless and JSON: each POST is one self-contained exchange, so any worker process can answer
it (``--workers N``) and nothing is kept between requests.  Calls run in the service's bounded
thread pool under the per-connection limit, like ``:run``; the access log and the metrics count
each tool call as its action.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from pgactions.runtime import ActionResult
from pgactions.service.config import ServiceConfig
from pgactions.service.core import ActionRequest, Service
from pgactions.service.http import error_response
from pgactions.service.mcp_tools import ExposureError, build_server, exposed_manifests
from pgactions.service.principal import Principal
from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import Manifest

__all__ = ["mcp_routes"]

_STATE = "mcp"  # the key of the caller in the request's scope state
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class _Caller:
    principal: Principal
    connection_id: str
    manifests: list[Manifest]


def mcp_routes(service: Service) -> tuple[list[BaseRoute], Callable[[], contextlib.AbstractAsyncContextManager[None]]]:
    """The route of the endpoint and the lifespan its session manager needs (entered once, in the
    application's lifespan)."""
    server = build_server(_ServiceBackend(service))
    manager = StreamableHTTPSessionManager(app=server, json_response=True, stateless=True,
                                           security_settings=_security(service.config),
                                           max_request_body_size=service.config.body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with manager.run():
            yield

    return [Route("/mcp/{connectionId}", _Endpoint(service, manager))], lifespan


def _security(config: ServiceConfig) -> TransportSecuritySettings | None:
    """Without auth on a loopback bind, DNS rebinding could let a web page reach the tools: then
    only loopback Host headers (and loopback or configured CORS origins) are accepted.  With auth,
    a page cannot present a key, and a proxy in front may send its own Host."""
    if config.auth_enabled or config.host not in _LOOPBACK:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *config.cors_origins])


class _Endpoint:
    """Authenticates the request and decides what this caller may see, then hands it to the SDK."""

    def __init__(self, service: Service, manager: StreamableHTTPSessionManager) -> None:
        self.service, self.manager = service, manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        try:
            request = Request(scope)
            state[_STATE] = self._caller(request, await self.service.who(request))
        except ActionError as exc:
            state["code"] = exc.code
            await error_response(exc.payload)(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)

    def _caller(self, request: Request, principal: Principal) -> _Caller:
        service = self.service
        connection_id = request.path_params["connectionId"]
        if not principal.may_use(connection_id):
            raise ActionError("FORBIDDEN", f"this key may not use the connection {connection_id!r}",
                              extra={"connectionId": connection_id})
        toolset = request.query_params.get("toolset")
        try:
            offered = exposed_manifests(toolset=toolset, toolsets=service.config.toolsets)
        except ExposureError as exc:
            raise ActionError("INVALID_INPUT", str(exc), extra={"field": "toolset"}) from None
        manifests = [m for m in offered if principal.may_run(m.id) and (m.read_only or not principal.read_only)
                     and not principal.sql_refused(m.id)]
        return _Caller(principal, connection_id, manifests)


class _ServiceBackend:
    """Tools run through the service: its runtime, thread pool, per-connection limit and scopes."""

    def __init__(self, service: Service) -> None:
        self.service = service

    @staticmethod
    def _caller(ctx: Any) -> _Caller:
        request = getattr(ctx, "request", None)
        caller = request.scope.get("state", {}).get(_STATE) if isinstance(request, Request) else None
        if not isinstance(caller, _Caller):  # not through _Endpoint: never served unauthenticated
            raise ActionError("UNAUTHORIZED", "the MCP endpoint needs Authorization: Bearer <key or token>")
        return caller

    def manifests(self, ctx: Any) -> list[Manifest]:
        return self._caller(ctx).manifests

    def label(self, ctx: Any) -> str:
        return self._caller(ctx).connection_id

    async def run(self, ctx: Any, manifest: Manifest, inputs: dict[str, Any]) -> ActionResult:
        service, caller = self.service, self._caller(ctx)
        principal, connection_id = caller.principal, caller.connection_id
        state = ctx.request.scope.setdefault("state", {})
        call = ActionRequest(manifest.id, connection_id, principal=principal)
        state["call"] = call  # the access log and the metrics read it
        step = f"{manifest.id} req={state.get('request_id')}"

        def work(cancel: threading.Event, counted: bool = False) -> ActionResult:
            profile = resolved or service.stored_profile(principal, connection_id)
            return service.run_action(principal, manifest, profile, inputs, {"auth": dict(principal.pinned)}, {},
                                      cancel, flow="mcp", step=step, counted=counted)

        try:
            service.check_action(principal, manifest)
            # On the event loop when the stored profile is at hand (as :run), else in a thread.
            resolved = service.cached_stored_profile(principal, connection_id)
            result: ActionResult = await service.run_work(None, resolved, work)
        except ActionError as exc:
            call.code = exc.code
            raise
        rows = result.data.get("rowCount")
        call.rows = rows if isinstance(rows, int) else None
        return result
