"""The ASGI application: routes, the one error boundary, request ids, the access log, metrics.

``create_app(config)`` builds it; ``pgactions serve`` runs it under uvicorn.  Every failure
leaves through :class:`Boundary` as ``{"error": {...}}`` with the status of ``status.py``; an
unexpected exception becomes INTERNAL_ERROR (500), logged with the request id, never with a
traceback in the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgactions.service.actions_api import action_routes
from pgactions.service.config import ServiceConfig
from pgactions.service.connections_api import connection_routes
from pgactions.service.core import Service
from pgactions.service.http import error_response, json_response
from pgactions.service.metrics import Metrics, log_request
from pgactions.service.status import http_status
from pgactions.service.store import StateStore
from pgactions.spec.errors import ActionError, make_error

__all__ = ["create_app"]

log = logging.getLogger("pgactions.service")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Request ids made here: a random prefix per process and a counter (unique without a syscall each).
_ID_PREFIX = uuid.uuid4().hex[:10] + "-"
_ID_COUNTER = itertools.count(1)


def create_app(config: ServiceConfig, store: StateStore | None = None) -> Starlette:
    """The service for *config*; *store* defaults to the one the config names."""
    from pgactions.service.auth import Authenticator, JwtSettings
    from pgactions.service.state import open_store
    from pgactions.service.untrusted import HostPolicy

    store = store or open_store(config.state_dir, config.state_url)
    jwt = _jwt_settings(JwtSettings, config.jwt) if config.jwt else None
    authenticator = Authenticator(store, jwt, enabled=config.auth_enabled)
    policy = HostPolicy(list(config.allow_hosts) if config.allow_hosts is not None else None, list(config.deny_hosts))
    service = Service(config, store, authenticator, policy)
    metrics = Metrics(lambda: _pool_states(service))

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True})

    async def readyz(request: Request) -> Response:
        ready = await service.in_thread(request, lambda _c: service.store.readable())
        if not ready:
            return json_response({"ok": False, "detail": "the state store cannot be read"}, status=503)
        return json_response({"ok": True})

    async def metrics_page(request: Request) -> Response:
        await service.who(request)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        from pgactions.service.openapi import openapi_bytes

        return Response(openapi_bytes(), media_type="application/json")

    async def docs(request: Request) -> Response:
        from pgactions.service.openapi import docs_page

        return HTMLResponse(docs_page())

    mcp_routes, mcp_lifespan = _mcp(service)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        subscriptions = getattr(service, "subscriptions", None)  # trigger subscriptions (subscriptions_api)
        if subscriptions is not None:
            subscriptions.start()
        async with (mcp_lifespan() if mcp_lifespan is not None else contextlib.nullcontext()):
            yield
        if subscriptions is not None:
            await asyncio.to_thread(subscriptions.stop)  # every delivery thread ends, every source closes
        service.close()  # uvicorn has let in-flight requests finish: pools close, no backend left

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        *action_routes(service),
        *connection_routes(service),
        *_records_routes(service),
        *_subscription_routes(service),
        *mcp_routes,
        *_playground_routes(),
    ]
    middleware = [Middleware(Boundary, metrics=metrics)]
    if config.cors_origins:  # off unless configured: browsers may not call the service from other sites
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Prefer",
                                                    "X-Request-Id"],
                                     expose_headers=["X-Request-Id", "Content-Range", "Retry-After"]))
    app = ServiceApp(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={ActionError: _action_error, HTTPException: _http_error})
    # The hot route skips Starlette's middleware stack, router and exception layers (its handler
    # is the same function the route calls); not when CORS is on: CORS must see every request.
    if not config.cors_origins:
        app.direct = Boundary(app.router, metrics, direct_run=service)
    app.state.service = service
    app.state.metrics = metrics
    return app


def _jwt_settings(settings: Any, block: dict[str, Any]) -> Any:
    """The config file's ``auth.jwt`` block (camelCase keys) as the authenticator's settings."""
    return settings(secret=block.get("secret"), jwks_file=block.get("jwksFile"), audience=block.get("audience"),
                    role_claim=block.get("roleClaim", "role"), context_claims=dict(block.get("contextClaims", {})))


def _mcp(service: Service) -> tuple[list[Any], Any]:
    """The MCP streamable-HTTP transport at /mcp/{connectionId} (pgactions.service.mcp_http):
    its routes and the lifespan its session manager needs."""
    try:
        from pgactions.service.mcp_http import mcp_routes
    except ImportError:  # the mcp SDK is not installed: no MCP endpoint
        return [], None
    return mcp_routes(service)  # type: ignore[no-any-return]


def _playground_routes() -> list[Any]:
    """The playground page at / (static files shipped in the package; no build step)."""
    from pathlib import Path

    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    folder = Path(__file__).parent / "static"
    if not (folder / "index.html").exists():
        return []

    async def index(request: Request) -> Response:
        return HTMLResponse((folder / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    return [Route("/", index, methods=["GET"]), Mount("/static", StaticFiles(directory=folder), name="static")]


# The page loads only its own files and talks only to this service.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
}


def _records_routes(service: Service) -> list[Route]:
    try:
        from pgactions.service.records_api import records_routes
    except ImportError:
        return []
    return records_routes(service)


def _subscription_routes(service: Service) -> list[Route]:
    try:
        from pgactions.service.subscriptions_api import subscriptions_routes
    except ImportError:
        return []
    return subscriptions_routes(service)


async def _action_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ActionError)
    request.scope.setdefault("state", {})["code"] = exc.code
    return error_response(exc.payload)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing misses: no such endpoint (404) or method (405), in the same error shape."""
    assert isinstance(exc, HTTPException)
    code = "NOT_FOUND" if exc.status_code == 404 else "INVALID_INPUT"
    payload = make_error(code, f"{request.method} {request.url.path}: "
                               + ("no such endpoint (see /openapi.json)" if exc.status_code == 404
                                  else f"{exc.detail or 'not allowed'}"))
    request.scope.setdefault("state", {})["code"] = code
    headers = dict(exc.headers or {})
    return json_response({"error": payload}, exc.status_code if exc.status_code in (404, 405) else 422, headers)


def _pool_states(service: Service) -> list[tuple[str, str, int]]:
    states = []
    for runtime in filter(None, (service.runtime, service._numeric_runtime)):
        for profile, pool in list(getattr(runtime.pools, "_pools", {}).items()):
            label = service.labels.get(profile, "inline")
            idle = int(getattr(pool, "idle_count", 0))
            size = int(getattr(pool, "size", 0))
            states += [(label, "idle", idle), (label, "active", max(0, size - idle)),
                       (label, "waiting", int(getattr(pool, "waiting_count", 0)))]
    return states


class ServiceApp(Starlette):
    """Starlette, with ``POST /v1/actions/{id}:run`` — what flows call most — answered by
    :attr:`direct` (a :class:`Boundary` of its own) before the middleware stack: the router
    tries every route in turn and wraps each request in two exception layers, more CPU than the
    rest of a one-row read's HTTP path (bench/README.md)."""

    direct: Boundary | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.direct is not None and scope["type"] == "http" and scope["method"] == "POST":
            run = _RUN_PATH.match(scope["path"])
            if run:
                scope["app"], scope["path_params"] = self, {"action": run.group(1)}
                await self.direct(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


# POST /v1/actions/{id}:run, the route flows call most: answered by Boundary directly.
_RUN_PATH = re.compile(r"^/v1/actions/([^/:]+):run$")


class Boundary:
    """Outermost: gives each request an id (``X-Request-Id``, the caller's if it is a plain token),
    times it, turns any unexpected exception into INTERNAL_ERROR, writes the access log line and
    the metrics.  With *direct_run* (the service) it answers ``POST /v1/actions/{id}:run`` itself,
    the only request :class:`ServiceApp` gives it; without, every request goes on to *app*."""

    def __init__(self, app: ASGIApp, metrics: Metrics, direct_run: Service | None = None) -> None:
        self.app, self.metrics, self.direct_run = app, metrics, direct_run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):x}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["request_id_given"] = request_id == given
        status = 500
        sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if self.direct_run is not None:  # ServiceApp sends it only :run (its action in path_params)
                answer = await self._run(scope, receive)
                if isinstance(answer, bytes):  # the usual answer: two messages, no Response object
                    status, sent = 200, True
                    await send({"type": "http.response.start", "status": 200, "headers": [
                        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer)),
                        (b"x-request-id", request_id.encode())]})
                    await send({"type": "http.response.body", "body": answer})
                else:
                    await answer(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            state["code"], status = "CANCELLED", 499
        except Exception:
            log.exception("internal error in request %s", request_id)
            state["code"] = "INTERNAL_ERROR"
            if not sent:
                response = json_response({"error": make_error("INTERNAL_ERROR", f"request {request_id}")},
                                         http_status("INTERNAL_ERROR"))
                await response(scope, receive, send_with_id)
        self._account(scope, state, status, time.perf_counter() - started, request_id)

    async def _run(self, scope: Scope, receive: Receive) -> Response | bytes:
        from pgactions.service.actions_api import run_request

        assert self.direct_run is not None
        try:
            return await run_request(self.direct_run, Request(scope, receive))
        except ActionError as exc:  # as the app's exception handler (_action_error) answers it
            scope["state"]["code"] = exc.code
            return error_response(exc.payload)

    def _account(self, scope: Scope, state: dict[str, Any], status: int, seconds: float, request_id: str) -> None:
        call = state.get("call")
        code = str(state.get("code") or (getattr(call, "code", "OK") if status < 400 else "ERROR"))
        action = getattr(call, "action_id", None)
        if action is not None or code != "OK":
            self.metrics.observe(action, code, seconds, getattr(call, "rows", None) if code == "OK" else None)
        principal = getattr(call, "principal", None)
        log_request({
            "time": round(time.time(), 3), "requestId": request_id, "method": scope.get("method"),
            "path": scope.get("path"), "status": status, "code": code,
            "who": getattr(principal, "name", None), "action": action,
            "connection": getattr(call, "connection_id", None), "rows": getattr(call, "rows", None),
            "ms": round(seconds * 1000, 2),
        })


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None
