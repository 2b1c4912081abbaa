"""The MCP server, driven by the official SDK's client: ``pgactions mcp`` over stdio (a real
subprocess) and the streamable-HTTP endpoint of a real ``pgactions serve`` at /mcp/{connectionId}.

Every action manifest is a tool whose input schema is the manifest's; query_rows and insert_row run
against the suite's server; a bad query is a tool error carrying the friendly payload; read-only
mode offers no write tool and refuses a call to one; the HTTP endpoint applies the service's auth
and the key's scopes."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest

mcp = pytest.importorskip("mcp")

import httpx2  # noqa: E402  (the SDK's HTTP client)
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS  # noqa: E402

from pgactions.service.mcp_tools import is_tool  # noqa: E402
from pgactions.spec.manifests import get_manifest, load_manifests  # noqa: E402

from .conftest import APP_PASSWORD, TestDB, TestServer  # noqa: E402
from .serving import Served, serve  # noqa: E402

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(work)


@pytest.fixture
def items(db: TestDB) -> TestDB:
    db.sql("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2))")
    db.sql("INSERT INTO items (name, price) VALUES ('pen', 1.50), ('book', 12.00)")
    return db


def stdio(db: TestDB, tmp_path: Path, *options: str) -> Client:
    """A client that starts ``pgactions mcp --connection <profile file>`` as its server."""
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(db.profile))
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "pgactions", "mcp", "--connection",
                                                                      str(profile), *options], cwd=str(ROOT)),
                  read_timeout_seconds=60)


def payload(result: Any) -> dict[str, Any]:
    """The text content of a tool result, parsed (the structured content must be the same)."""
    assert len(result.content) == 1 and result.content[0].type == "text"
    parsed = json.loads(result.content[0].text)
    assert result.structured_content == parsed
    return parsed  # type: ignore[no-any-return]


# -- stdio ---------------------------------------------------------------------------------------

def test_every_action_is_a_tool_with_its_manifests_schema(db: TestDB, tmp_path: Path) -> None:
    async def work() -> None:
        async with stdio(db, tmp_path) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {m.id for m in load_manifests().values() if is_tool(m)}
            for action_id, tool in tools.items():
                manifest = get_manifest(action_id)
                described = manifest.describe()
                assert tool.input_schema == described["input"], action_id
                assert tool.output_schema == described["output"], action_id
                assert tool.description == manifest.description and tool.title == manifest.title
                assert tool.annotations is not None and tool.annotations.read_only_hint is manifest.read_only
                if not manifest.read_only:
                    assert tool.annotations.destructive_hint is bool(manifest.execution.get("destructive", False))
            assert tools["delete_rows"].annotations.destructive_hint is True  # type: ignore[union-attr]
            assert tools["execute_query"].annotations.destructive_hint is True  # type: ignore[union-attr]
            assert tools["insert_row"].annotations.destructive_hint is False  # type: ignore[union-attr]
            assert tools["query_rows"].annotations.read_only_hint is True  # type: ignore[union-attr]

    run_async(work)


def test_query_and_insert_over_stdio(items: TestDB, tmp_path: Path) -> None:
    async def work() -> None:
        async with stdio(items, tmp_path) as client:
            query = await client.call_tool("query_rows", {"query": "SELECT id, name, price FROM items WHERE id = $1",
                                                          "parameters": [2]})
            assert not query.is_error
            assert payload(query)["rows"] == [{"id": 2, "name": "book", "price": "12.00"}]
            inserted = await client.call_tool("insert_row", {"table": "items",
                                                             "columns": {"name": "lamp", "price": "30.5"}})
            assert not inserted.is_error
            out = payload(inserted)
            assert out["rowCount"] == 1 and out["row"]["name"] == "lamp" and out["insertedId"] == 3

    run_async(work)
    assert items.sql("SELECT name, price::text FROM items WHERE id = 3") == [("lamp", "30.50")]


def test_a_bad_query_is_a_tool_error_with_the_friendly_payload(items: TestDB, tmp_path: Path) -> None:
    async def work() -> None:
        async with stdio(items, tmp_path) as client:
            bad = await client.call_tool("query_rows", {"query": "SELEC id FROM items"})
            assert bad.is_error
            error = payload(bad)["error"]
            assert error["code"] == "SYNTAX_ERROR" and error["fix"] and "Traceback" not in bad.content[0].text
            missing = await client.call_tool("query_rows", {"query": "SELECT * FROM no_such_table"})
            assert missing.is_error and payload(missing)["error"]["code"] == "UNDEFINED_TABLE"
            invalid = await client.call_tool("insert_row", {"table": "items"})  # columns is required
            assert invalid.is_error and payload(invalid)["error"]["code"] == "INVALID_INPUT"
            unknown = await client.call_tool("drop_everything", {})
            assert unknown.is_error and payload(unknown)["error"]["code"] == "UNKNOWN_ACTION"

    run_async(work)


def test_read_only_offers_no_write_tool_and_refuses_one(items: TestDB, tmp_path: Path) -> None:
    items.sql("CREATE FUNCTION wipe() RETURNS bigint LANGUAGE sql AS 'DELETE FROM items RETURNING 1'")

    async def work() -> None:
        async with stdio(items, tmp_path, "--read-only") as client:
            tools = (await client.list_tools()).tools
            assert {t.name for t in tools} == {m.id for m in load_manifests().values() if m.read_only}
            refused = await client.call_tool("insert_row", {"table": "items", "columns": {"name": "x"}})
            assert refused.is_error and payload(refused)["error"]["code"] == "FORBIDDEN"
            delete = await client.call_tool("query_rows", {"query": "DELETE FROM items RETURNING id"})
            assert delete.is_error and payload(delete)["error"]["code"] == "INVALID_INPUT"  # not a read statement
            hidden = await client.call_tool("query_rows", {"query": "SELECT wipe()"})  # a write inside a function
            assert hidden.is_error and payload(hidden)["error"]["code"] == "READ_ONLY_VIOLATION"
            rows = await client.call_tool("query_rows", {"query": "SELECT count(*) AS n FROM items"})
            assert payload(rows)["rows"] == [{"n": 2}]

    run_async(work)
    assert items.sql("SELECT count(*) FROM items") == [(2,)]


def test_actions_choose_the_tools_and_metadata_is_a_resource(items: TestDB, tmp_path: Path) -> None:
    async def work() -> None:
        async with stdio(items, tmp_path, "--actions", "query_rows", "list_tables", "get_table_metadata") as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"query_rows", "list_tables",
                                                                           "get_table_metadata"}
            resources = {str(r.uri) for r in (await client.list_resources()).resources}
            assert resources == {"pgactions://pgactions_test/tables"}  # list_schemas is not offered
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["pgactions://pgactions_test/tables/{schema}/{table}"]
            tables = await client.read_resource("pgactions://pgactions_test/tables")
            listed = json.loads(tables.contents[0].text)  # type: ignore[union-attr]
            assert "items" in {t["name"] for t in listed["tables"]}
            table = await client.read_resource(f"pgactions://pgactions_test/tables/{items.schema}/items")
            metadata = json.loads(table.contents[0].text)  # type: ignore[union-attr]
            assert "price" in {c["name"] for c in metadata["columns"]}
            with pytest.raises(MCPError):
                await client.read_resource("pgactions://pgactions_test/schemas")

    run_async(work)


@pytest.mark.parametrize(("options", "says"), [
    (["--actions", "no_such_action"], "unknown action ids no_such_action"),
    (["--toolset", "readers"], "--toolset needs --config"),
    (["--read-only", "--actions", "insert_row"], "no action is left"),
])
def test_usage_errors_at_start(options: list[str], says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pgactions", "mcp", "--connection", "postgresql://x@127.0.0.1/x",
                           *options], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and says in done.stderr and done.stdout == ""


def test_toolset_from_config_and_a_stored_connection(items: TestDB, pg: TestServer, tmp_path: Path) -> None:
    """--connection-id reads the service's state; --toolset a list of its config file."""
    state = tmp_path / "state"
    config = tmp_path / "service.yaml"
    config.write_text("toolsets:\n  readers: [query_rows, list_tables, insert_row]\n")
    profile = {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
               "password": APP_PASSWORD, "sslMode": "disable", "schema": items.schema}
    from pgactions.service.state import open_store

    store = open_store(str(state), None)
    store.put_connection("shop", profile)
    store.close()

    async def work() -> None:
        server = StdioServerParameters(command=sys.executable, cwd=str(ROOT), args=[
            "-m", "pgactions", "mcp", "--connection-id", "shop", "--state-dir", str(state), "--config", str(config),
            "--toolset", "readers", "--read-only"])
        async with Client(server, read_timeout_seconds=60) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"query_rows", "list_tables"}
            rows = await client.call_tool("query_rows", {"query": "SELECT name FROM items ORDER BY id"})
            assert payload(rows)["rows"] == [{"name": "pen"}, {"name": "book"}]
            assert [str(r.uri) for r in (await client.list_resources()).resources] == ["pgactions://shop/tables"]

    run_async(work)
    unknown = subprocess.run([sys.executable, "-m", "pgactions", "mcp", "--connection-id", "nope", "--state-dir",
                              str(state)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert unknown.returncode == 1 and "UNKNOWN_CONNECTION" in unknown.stderr


# -- streamable HTTP in pgactions serve --------------------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("mcp") / "state") as served:
        served.key = served.create_key("admin")
        yield served


@pytest.fixture
def stored(service: Served, items: TestDB, pg: TestServer) -> str:
    """The test's schema as a stored connection named after it."""
    profile = {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
               "password": APP_PASSWORD, "sslMode": "disable", "schema": items.schema}
    response = service.client.put(f"/v1/connections/{items.schema}", json=profile, headers=service.headers())
    assert response.status_code in (200, 201), response.text
    return items.schema


@contextlib.asynccontextmanager
async def http(service: Served, connection_id: str, key: str | None, mode: str = "auto",
               query: str = "") -> AsyncIterator[Client]:
    """An SDK client of /mcp/{connection_id}, with the key as the bearer (the HTTP client given to
    the transport is ours to close)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as client:
        transport = streamable_http_client(f"{service.base_url}/mcp/{connection_id}{query}", http_client=client)
        async with Client(transport, mode=mode, read_timeout_seconds=60) as connected:  # type: ignore[arg-type]
            yield connected


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28's single exchanges, and the handshake
def test_http_tools_and_calls(service: Served, stored: str, items: TestDB, mode: str) -> None:
    async def work() -> None:
        async with http(service, stored, service.key, mode) as client:
            assert client.protocol_version in (MODERN_PROTOCOL_VERSIONS if mode == "auto" else HANDSHAKE_PROTOCOL_VERSIONS)
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == set(load_manifests())
            assert all(tools[i].input_schema == get_manifest(i).describe()["input"] for i in tools)
            query = await client.call_tool("query_rows", {"query": "SELECT name FROM items WHERE id = $1",
                                                          "parameters": [1]})
            assert payload(query)["rows"] == [{"name": "pen"}]
            inserted = await client.call_tool("insert_row", {"table": "items", "columns": {"name": f"via {mode}"}})
            assert payload(inserted)["rowCount"] == 1
            bad = await client.call_tool("query_rows", {"query": "SELECT FROM WHERE"})
            assert bad.is_error and payload(bad)["error"]["code"] == "SYNTAX_ERROR"

    run_async(work)
    assert items.sql("SELECT count(*) FROM items WHERE name = %s", (f"via {mode}",)) == [(1,)]
    log = service.log_with('"action": "insert_row"', '"action":"insert_row"')
    assert '"action": "insert_row"' in log or '"action":"insert_row"' in log


def test_http_needs_a_key_and_applies_its_scopes(service: Served, stored: str, items: TestDB) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    refused = service.client.post(f"/mcp/{stored}", json=initialize, headers=accept)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
    wrong = service.client.post(f"/mcp/{stored}", json=initialize, headers={**accept, "Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    other = service.create_key(f"other-{stored}", "--connections", "somewhere_else")
    scoped = service.client.post(f"/mcp/{stored}", json=initialize, headers={**accept, **service.headers(other)})
    assert scoped.status_code == 403 and scoped.json()["error"]["code"] == "FORBIDDEN"

    async def refused_by_the_sdk() -> None:
        with pytest.raises(Exception):  # noqa: B017,PT011  (the SDK's own error for an HTTP 401)
            async with http(service, stored, None) as client:
                await client.list_tools()

    run_async(refused_by_the_sdk)

    reader = service.create_key(f"reader-{stored}", "--read-only")

    async def read_only() -> None:
        async with http(service, stored, reader) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {m.id for m in load_manifests().values() if m.read_only}
            refused = await client.call_tool("insert_row", {"table": "items", "columns": {"name": "no"}})
            assert refused.is_error and payload(refused)["error"]["code"] == "FORBIDDEN"
            rows = await client.call_tool("query_rows", {"query": "SELECT count(*) AS n FROM items"})
            assert payload(rows)["rows"] == [{"n": 2}]

    run_async(read_only)
    assert items.sql("SELECT count(*) FROM items WHERE name = 'no'") == [(0,)]


def test_http_pinned_context_and_unknown_connection(service: Served, stored: str, items: TestDB) -> None:
    pinned = service.create_key(f"tenant-{stored}", "--context", '{"tenant": "acme"}')

    async def work() -> None:
        async with http(service, stored, pinned) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "query_rows" not in names and "execute_query" not in names and "insert_row" in names
            out = await client.call_tool("insert_row", {"table": "items", "columns": {"name": "{{ auth.tenant }}"}})
            assert payload(out)["row"]["name"] == "acme"
        async with http(service, "no_such_connection", service.key) as client:
            missing = await client.call_tool("query_rows", {"query": "SELECT 1"})
            assert missing.is_error and payload(missing)["error"]["code"] == "UNKNOWN_CONNECTION"

    run_async(work)


def test_http_toolset(tmp_path: Path, pg: TestServer, items: TestDB) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("toolsets:\n  readers: [query_rows, get_row]\n")
    with serve(tmp_path / "state", "--no-auth", "--config", str(config)) as served:
        profile = {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
                   "password": APP_PASSWORD, "sslMode": "disable", "schema": items.schema}
        assert served.client.put("/v1/connections/shop", json=profile).status_code == 201

        async def work() -> None:
            async with http(served, "shop", None, query="?toolset=readers") as client:
                assert {t.name for t in (await client.list_tools()).tools} == {"query_rows", "get_row"}
                refused = await client.call_tool("insert_row", {"table": "items", "columns": {"name": "x"}})
                assert refused.is_error and payload(refused)["error"]["code"] == "FORBIDDEN"

        run_async(work)
        unknown = served.client.post("/mcp/shop?toolset=writers", json={}, headers={"Accept": "application/json"})
        assert unknown.status_code == 422 and "writers" in unknown.json()["error"]["detail"]
        rebinding = httpx.post(f"{served.base_url}/mcp/shop", json={}, headers={"Host": "evil.example.com"})
        assert rebinding.status_code == 421  # --no-auth on loopback: only loopback Host headers
