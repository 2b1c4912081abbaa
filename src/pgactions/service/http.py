"""JSON in and out of HTTP: the request body (size-capped, integers kept exact) and responses,
including the one error response every failure becomes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from pgactions.db.output import loads_exact
from pgactions.service.status import http_status
from pgactions.spec.errors import ActionError, make_error

__all__ = ["error_response", "json_response", "read_json"]

JSON = "application/json"


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """*content*: bytes already JSON (an action's output, never parsed again) or a value."""
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def error_response(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    status = http_status(payload.get("code", "INTERNAL_ERROR"))
    headers = dict(headers or {})
    if payload.get("code") in ("RATE_LIMITED", "REQUEST_IN_PROGRESS") or status == 503:
        headers.setdefault("Retry-After", str(payload.get("retryAfter", 1)))
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="pgactions"')
    return json_response({"error": payload}, status, headers)


def action_error_response(exc: ActionError) -> Response:
    return error_response(exc.payload)


def internal_error(request_id: str) -> dict[str, Any]:
    return make_error("INTERNAL_ERROR", f"request {request_id}")


async def read_json(request: Request, limit: int, seconds: float = 30.0) -> Any:
    """The body as JSON; larger than *limit* → REQUEST_TOO_LARGE (read no further); not all
    there within *seconds* → REQUEST_TIMEOUT (a stalled client holds no more than its socket)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    # The ASGI messages themselves (Request.stream() costs more per call), under one clock from
    # the first: a client that sends the headers and then nothing, or a trickle, holds no more
    # than its socket for *seconds*.  (A timer on the task, not asyncio.timeout: Python 3.10.)
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    clock = asyncio.get_running_loop().call_later(seconds, expire)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if not expired:
            raise
        if hasattr(task, "uncancel"):  # 3.11+: this cancellation is handled here
            task.uncancel()
        raise ActionError("REQUEST_TIMEOUT", f"the request body did not arrive within {seconds:g} s",
                          extra={"field": "(body)"}) from None
    finally:
        clock.cancel()
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not raw.strip():
        raise ActionError("INVALID_INPUT", "the request body is empty; send a JSON object",
                          extra={"field": "(body)"})
    try:
        value = loads_exact(raw)
    except (orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ActionError("INVALID_INPUT", f"the request body is not valid JSON ({_short(exc)})",
                          extra={"field": "(body)"}) from None
    return value


def _too_large(limit: int) -> ActionError:
    return ActionError("REQUEST_TOO_LARGE", f"the body is larger than {limit:,} bytes", extra={"limit": limit})


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:120]


def object_body(value: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """A JSON object with only the *allowed* keys (a misspelt key is an error, not ignored)."""
    if not isinstance(value, dict):
        raise ActionError("INVALID_INPUT", "the request body must be a JSON object", extra={"field": "(body)"})
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ActionError("INVALID_INPUT", f"unknown field {unknown[0]!r} in the request body "
                                           f"(allowed: {', '.join(sorted(allowed))})", extra={"field": unknown[0]})
    return value
