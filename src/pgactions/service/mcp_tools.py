"""The actions as MCP tools: shared by ``pgactions mcp`` (stdio) and the service's
``/mcp/{connectionId}`` endpoint (streamable HTTP).

Built on the official SDK's low-level server, so a tool's ``inputSchema`` is exactly its
manifest's bundled input schema (``describe()["input"]``) and the tool arguments are the action's
inputs as they stand.  A result is the action's output: the JSON text and the same object as
structured content; a failure is a tool error (``isError``) carrying ``{"error": {...}}``, the
friendly payload every other front door gives — never a traceback.

Metadata actions are also resources: ``pgactions://{connection}/schemas`` (list_schemas),
``pgactions://{connection}/tables`` (list_tables) and the template
``pgactions://{connection}/tables/{schema}/{table}`` (get_table_metadata).

A transport supplies a :class:`Backend`: which manifests the caller sees, and how one runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Protocol
from urllib.parse import quote, unquote

import anyio
import anyio.to_thread
import orjson
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from pgactions import __version__
from pgactions.runtime import ActionResult
from pgactions.spec.errors import ActionError, make_error
from pgactions.spec.manifests import Manifest, load_manifests

__all__ = ["Backend", "ExposureError", "build_server", "error_result", "exposed_manifests", "is_tool", "ok_result",
           "run_in_thread", "tool_for"]

log = logging.getLogger("pgactions.mcp")

# The metadata actions that are also resources (path under pgactions://{connection}/ → action).
RESOURCES = {
    "schemas": ("list_schemas", "Schemas", "The schemas of the database (list_schemas), as JSON."),
    "tables": ("list_tables", "Tables", "The tables, views and other relations (list_tables), as JSON."),
}
TABLE_TEMPLATE = ("get_table_metadata", "Table",
                  "One table's columns, keys, indexes and constraints (get_table_metadata), as JSON.")

# Resource read failures that are the caller's (JSON-RPC invalid params); others are internal errors.
CALLER_ERRORS = frozenset({"UNKNOWN_ACTION", "FORBIDDEN", "UNDEFINED_TABLE", "UNDEFINED_OBJECT", "NOT_FOUND",
                           "INVALID_INPUT", "UNKNOWN_CONNECTION", "PERMISSION_DENIED"})

INSTRUCTIONS = (
    "PostgreSQL actions on one database connection. Each tool runs one action; its arguments are "
    "the action's inputs. Write SQL with $1, $2 … placeholders and pass the values in 'parameters' "
    "(they are bound, never pasted into the SQL). A failure comes back as a tool error whose text "
    "is {\"error\": {code, message, cause, fix, detail …}}: read 'fix' before retrying."
)


class ExposureError(ValueError):
    """The chosen subset of actions cannot be made (an unknown id or toolset): a usage error."""


class Backend(Protocol):
    """What a transport supplies: the caller's manifests, the connection's label, and running."""

    def manifests(self, ctx: ServerRequestContext[Any, Any]) -> list[Manifest]:
        """The actions this caller sees as tools (in order); may raise ActionError."""

    def label(self, ctx: ServerRequestContext[Any, Any]) -> str:
        """The connection's name in resource URIs (a stored connection's id)."""

    async def run(self, ctx: ServerRequestContext[Any, Any], manifest: Manifest,
                  inputs: dict[str, Any]) -> ActionResult:
        """Run one action (already among ``manifests(ctx)``); raises ActionError."""


# -- which actions -------------------------------------------------------------------------------

def is_tool(manifest: Manifest) -> bool:
    """Every action manifest is a tool; a trigger's manifest (if there ever are any) is not."""
    return manifest.category != "trigger" and not manifest.execution.get("trigger", False)


def exposed_manifests(actions: Sequence[str] | None = None, toolset: str | None = None,
                      toolsets: Mapping[str, Sequence[str]] | None = None,
                      read_only: bool = False) -> list[Manifest]:
    """The manifests to offer: every action, or those named by *actions* and/or the *toolset*
    (a name in *toolsets*; both given: the actions in both), and only read-only ones with
    *read_only*.  Raises :class:`ExposureError` for an unknown action id or toolset."""
    known = {m.id: m for m in load_manifests().values() if is_tool(m)}
    chosen: set[str] = set(known)
    if actions is not None:
        unknown = sorted(set(actions) - set(known))
        if unknown:
            raise ExposureError(f"unknown action ids {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        chosen &= set(actions)
    if toolset is not None:
        sets = toolsets or {}
        if toolset not in sets:
            named = ", ".join(sorted(sets)) or "none are configured (toolsets: in the config file)"
            raise ExposureError(f"unknown toolset {toolset!r} (toolsets: {named})")
        chosen &= set(sets[toolset])
    return [m for m in known.values() if m.id in chosen and (m.read_only or not read_only)]


# -- tools and results ---------------------------------------------------------------------------

@cache
def tool_for(action_id: str) -> types.Tool:
    """The tool of an action: its id, title and description, its input and output schemas as the
    manifest bundles them, and annotations from the manifest (readOnly, destructive)."""
    manifest = load_manifests()[action_id]
    described = manifest.describe()
    read_only = manifest.read_only
    annotations = types.ToolAnnotations(
        title=manifest.title, read_only_hint=read_only,
        # MCP's default for a writing tool is "destructive": say which are not.
        destructive_hint=None if read_only else bool(manifest.execution.get("destructive", False)),
        open_world_hint=False,  # one database, not the open world
    )
    return types.Tool(name=manifest.id, title=manifest.title, description=manifest.description,
                      input_schema=described["input"], output_schema=described["output"], annotations=annotations)


def ok_result(result: ActionResult) -> types.CallToolResult:
    text = result.json.decode("utf-8")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                structured_content=result.data, is_error=False)


def error_result(payload: dict[str, Any]) -> types.CallToolResult:
    """A tool error: the text and the structured content are ``{"error": payload}``."""
    body = {"error": payload}
    text = orjson.dumps(body, default=str).decode("utf-8")
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                structured_content=body, is_error=True)


async def run_in_thread(work: Callable[[threading.Event], Any], limiter: anyio.CapacityLimiter | None = None) -> Any:
    """Run *work(cancel)* in a worker thread; if this task is cancelled meanwhile (the client
    cancelled the call or went away), set *cancel* so the runtime cancels the query on the server
    and rolls back, and wait for the thread to end."""
    cancel = threading.Event()

    async def watch() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancel.set()

    result: Any = None
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            result = await anyio.to_thread.run_sync(work, cancel, limiter=limiter)
        except Exception as exc:  # raised outside the group, so it is not wrapped in an ExceptionGroup
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


# -- the server ----------------------------------------------------------------------------------

def build_server(backend: Backend, name: str = "pgactions") -> Server[Any]:
    """A low-level MCP server whose tools and resources come from *backend*."""

    def find(ctx: ServerRequestContext[Any, Any], action_id: str) -> Manifest:
        for manifest in backend.manifests(ctx):
            if manifest.id == action_id:
                return manifest
        manifests = load_manifests()
        if action_id in manifests:
            raise ActionError("FORBIDDEN", f"{action_id} is not among the tools offered here",
                              extra={"action": action_id})
        raise ActionError("UNKNOWN_ACTION", f"{action_id!r} is not an action",
                          extra={"knownActions": [m.id for m in backend.manifests(ctx)]})

    async def list_tools(ctx: ServerRequestContext[Any, Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool_for(m.id) for m in backend.manifests(ctx)])

    async def call_tool(ctx: ServerRequestContext[Any, Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            manifest = find(ctx, params.name)
            result = await backend.run(ctx, manifest, dict(params.arguments or {}))
        except ActionError as exc:
            return error_result(exc.payload)
        except Exception:  # a bug: logged, and the caller gets the error shape, not the exception's text
            log.exception("internal error in the MCP tool %s", params.name)
            return error_result(make_error("INTERNAL_ERROR", f"tool {params.name}"))
        return ok_result(result)

    async def list_resources(ctx: ServerRequestContext[Any, Any],
                             params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        offered = {m.id for m in backend.manifests(ctx)}
        label = quote(backend.label(ctx), safe="")
        return types.ListResourcesResult(resources=[
            types.Resource(uri=f"pgactions://{label}/{path}", name=path, title=title, description=description,
                           mime_type="application/json")
            for path, (action_id, title, description) in RESOURCES.items() if action_id in offered])

    async def list_templates(ctx: ServerRequestContext[Any, Any],
                             params: types.PaginatedRequestParams | None) -> types.ListResourceTemplatesResult:
        action_id, title, description = TABLE_TEMPLATE
        if action_id not in {m.id for m in backend.manifests(ctx)}:
            return types.ListResourceTemplatesResult(resource_templates=[])
        label = quote(backend.label(ctx), safe="")
        return types.ListResourceTemplatesResult(resource_templates=[
            types.ResourceTemplate(uri_template=f"pgactions://{label}/tables/{{schema}}/{{table}}", name="table",
                                   title=title, description=description, mime_type="application/json")])

    async def read_resource(ctx: ServerRequestContext[Any, Any],
                            params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        action_id, inputs = _resource_action(uri, backend.label(ctx))
        try:
            result = await backend.run(ctx, find(ctx, action_id), inputs)
        except ActionError as exc:
            code = types.INVALID_PARAMS if exc.code in CALLER_ERRORS else types.INTERNAL_ERROR
            raise MCPError(code, exc.one_line(), {"error": exc.payload}) from None
        return types.ReadResourceResult(contents=[
            types.TextResourceContents(uri=uri, mime_type="application/json", text=result.json.decode("utf-8"))])

    def input_schema(tool: str) -> Mapping[str, Any] | None:
        manifest = load_manifests().get(tool)
        return manifest.bundled_input_schema() if manifest is not None and is_tool(manifest) else None

    return Server(name, version=__version__, title="pgactions", instructions=INSTRUCTIONS,
                  get_tool_input_schema=input_schema,
                  on_list_tools=list_tools, on_call_tool=call_tool, on_list_resources=list_resources,
                  on_list_resource_templates=list_templates, on_read_resource=read_resource)


def _resource_action(uri: str, label: str) -> tuple[str, dict[str, Any]]:
    """The action and inputs a resource URI stands for; an unknown URI is an invalid parameter."""
    prefix = f"pgactions://{quote(label, safe='')}/"
    if uri.startswith(prefix):
        path = uri[len(prefix):].split("/")
        if len(path) == 1 and path[0] in RESOURCES:
            return RESOURCES[path[0]][0], {}
        if len(path) == 3 and path[0] == "tables" and path[1] and path[2]:
            return TABLE_TEMPLATE[0], {"schema": unquote(path[1]), "table": unquote(path[2])}
    raise MCPError(types.INVALID_PARAMS, f"no such resource: {uri[:200]}",
                   {"uri": uri[:200], "resources": [f"{prefix}{path}" for path in RESOURCES]
                    + [f"{prefix}tables/{{schema}}/{{table}}"]})

