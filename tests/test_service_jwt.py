"""Tokens over real HTTP: a JWT's role claim runs the action as that role, so row-level security
filters what it sees; resetting the role in SQL gains nothing; expired or foreign tokens are 401."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from .conftest import TestServer
from .serving import Served, serve
from .test_role_switch import authenticator  # noqa: F401  (the fixture: login role, two web roles, RLS table)

SECRET = "a-shared-secret-of-at-least-32-characters!"


@pytest.fixture(scope="module")
def jwt_service(tmp_path_factory: pytest.TempPathFactory, pg: TestServer) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("jwt")
    config = folder / "serve.yaml"
    config.write_text(f"auth:\n  jwt:\n    secret: \"{SECRET}\"\n    audience: flows\n")
    with serve(folder / "state", "--config", str(config)) as served:
        yield served


def token(claims: dict[str, Any], secret: str = SECRET) -> str:
    base = {"sub": "flow-runner", "aud": "flows", "exp": int(time.time()) + 300}
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


def query(served: Served, profile: dict[str, Any], sql: str, bearer: str, action: str = "query_rows") -> Any:
    return served.post(f"/v1/actions/{action}:run", {"connection": profile, "inputs": {"query": sql}}, key=bearer)


def test_role_claim_applies_row_level_security(jwt_service: Served, authenticator: dict[str, Any]) -> None:  # noqa: F811
    profile = authenticator["profile"]
    alice = query(jwt_service, profile, "SELECT id FROM notes ORDER BY id", token({"role": authenticator["alice"]}))
    bob = query(jwt_service, profile, "SELECT id FROM notes ORDER BY id", token({"role": authenticator["bob"]}))
    assert alice.status_code == 200, alice.text
    assert [r["id"] for r in alice.json()["rows"]] == [1, 2]
    assert [r["id"] for r in bob.json()["rows"]] == [3]


def test_reset_role_gains_nothing(jwt_service: Served, authenticator: dict[str, Any]) -> None:  # noqa: F811
    response = query(jwt_service, authenticator["profile"], "RESET ROLE; SELECT count(*) FROM notes",
                     token({"role": authenticator["alice"]}), action="execute_query")
    assert response.status_code == 403 and response.json()["error"]["code"] == "PERMISSION_DENIED"


def test_role_claim_refused_on_a_superuser_login(jwt_service: Served, pg: TestServer,
                                                 authenticator: dict[str, Any]) -> None:  # noqa: F811
    admin = {"url": pg.admin_url, "sslMode": "disable"}
    response = query(jwt_service, admin, "SELECT 1", token({"role": authenticator["alice"]}))
    assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"


def test_bad_tokens_are_401(jwt_service: Served, authenticator: dict[str, Any]) -> None:  # noqa: F811
    profile = authenticator["profile"]
    expired = token({"exp": int(time.time()) - 10})
    foreign = token({}, secret="another-secret-of-at-least-32-characters")
    wrong_audience = token({"aud": "someone-else"})
    for bearer in (expired, foreign, wrong_audience, "not.a.token"):
        response = query(jwt_service, profile, "SELECT 1", bearer)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "UNAUTHORIZED"


def test_context_claims_are_pinned(authenticator: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "serve.yaml"
    config.write_text(f"auth:\n  jwt:\n    secret: \"{SECRET}\"\n    audience: flows\n"
                      "    contextClaims: {tenant: tenant_id}\n")
    profile = authenticator["profile"]
    with serve(tmp_path / "state", "--config", str(config)) as served:
        without = query(served, profile, "SELECT 1", token({}))
        assert without.status_code == 401  # the claim the configuration pins is missing
        bearer = token({"tenant_id": "acme", "role": authenticator["alice"]})
        assert query(served, profile, "SELECT 1", bearer).status_code == 403  # pinned values: no free SQL
        written = served.post("/v1/actions/insert_row:run", {"connection": profile, "inputs": {
            "table": "notes", "columns": {"id": 20, "owner": authenticator["alice"], "body": "{{ auth.tenant }}"}}},
            key=bearer)
        assert written.status_code == 200, written.text
        found = served.post("/v1/actions/find_rows:run", {"connection": profile, "inputs": {
            "table": "notes", "where": [{"column": "id", "operator": "eq", "value": 20}]}}, key=bearer)
        assert found.json()["rows"][0]["body"] == "acme"


def test_tokens_may_not_change_stored_connections(jwt_service: Served, authenticator: dict[str, Any]) -> None:  # noqa: F811
    bearer = token({"role": authenticator["alice"]})
    put = jwt_service.client.put("/v1/connections/shared", json={"host": "127.0.0.1"},
                                 headers=jwt_service.headers(bearer))
    assert put.status_code == 403 and put.json()["error"]["code"] == "FORBIDDEN"
    assert jwt_service.client.delete("/v1/connections/shared", headers=jwt_service.headers(bearer)).status_code == 403
