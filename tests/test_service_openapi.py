"""The OpenAPI document: generated from the manifests, valid OpenAPI 3.1, and the server keeps its
word — schemathesis sends generated requests to the action and records endpoints of the suite's
own server and checks there is no 5xx and every response conforms to the document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pgactions.service.openapi import openapi_document
from pgactions.spec.manifests import load_manifests

from .conftest import APP_PASSWORD, TestServer
from .serving import Served, serve

STORED = "fuzzed"


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_action_has_its_schemas_and_paths() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for manifest in load_manifests().values():
        assert schemas[f"{manifest.id}.input"]["properties"] == manifest.describe()["input"]["properties"]
        assert f"/v1/actions/{manifest.id}:run" in document["paths"]
        assert f"/v1/actions/{manifest.id}:batch" in document["paths"]
    profile = schemas["ConnectionProfile"]["properties"]
    assert all(profile[name]["writeOnly"] for name in ("password", "sslKey", "sslPassword", "url"))
    assert set(schemas["Error"]["properties"]["code"]["enum"]) >= {"UNAUTHORIZED", "RATE_LIMITED"}


def test_served_document_is_the_generated_one(fuzz_service: Served) -> None:
    assert fuzz_service.get("/openapi.json").json() == openapi_document()
    page = fuzz_service.get("/docs")
    assert page.status_code == 200 and "query_rows" in page.text and "<script" not in page.text


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    """Auth off, callers' connections limited to the suite's server, one stored connection."""
    folder = tmp_path_factory.mktemp("fuzz")
    with serve(folder / "state", "--no-auth", "--allow-hosts", "127.0.0.1") as served:
        profile = {"host": "127.0.0.1", "port": pg.port, "database": "pgactions_test", "username": "app",
                   "password": APP_PASSWORD, "sslMode": "disable", "connectTimeout": 3}
        assert served.client.put(f"/v1/connections/{STORED}", json=profile).status_code in (200, 201)
        yield served


@pytest.fixture(scope="module")
def api_schema(fuzz_service: Served) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_service.base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """Every generated call goes to the stored connection (generated hosts would only measure DNS)."""
    if isinstance(case.body, dict) and ("connection" in case.body or "connectionId" in case.body):
        case.body.pop("connection", None)
        case.body["connectionId"] = STORED
    if case.path_parameters and "connectionId" in case.path_parameters:
        case.path_parameters["connectionId"] = STORED


def _timeouts(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        return []
    found = [body.get("options", {}).get("timeout") if isinstance(body.get("options"), dict) else None]
    found.append(body.get("inputs", {}).get("timeout") if isinstance(body.get("inputs"), dict) else None)
    for item in body.get("items", []) if isinstance(body.get("items"), list) else []:
        if isinstance(item, dict) and isinstance(item.get("inputs"), dict):
            found.append(item["inputs"].get("timeout"))
    return [t for t in found if isinstance(t, (int, float))]


def no_server_error(ctx: Any, response: Any, case: Any) -> Any:
    """No 5xx, but for QUERY_TIMEOUT (504) when the request itself asked for a timeout under a
    second: the generator likes 5e-324 seconds, and giving up then is the documented answer."""
    if response.status_code == 504 and any(t < 1 for t in _timeouts(case.body)):
        return None
    return not_a_server_error(ctx, response, case)


@schema.include(path_regex=r"^/v1/(actions|db)/").parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_conform(case: Any) -> None:
    case.call_and_validate(checks=[no_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
