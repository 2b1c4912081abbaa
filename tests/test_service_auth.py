"""Who may call the service: API keys (made with the real ``pgactions keys`` command) and JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pgactions.service.apikeys import create_key, principal_for_key, verify_key
from pgactions.service.auth import Authenticator, JwtSettings
from pgactions.service.crypto import Keyring, new_secret_key
from pgactions.service.filestore import FileStore
from pgactions.service.principal import ANONYMOUS
from pgactions.spec.errors import ActionError

ROOT = Path(__file__).resolve().parents[1]
HS_SECRET = "an-hs256-secret-long-enough-for-pyjwt-0123456789"
AUDIENCE = "pgactions"


def keys(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGACTIONS_SECRET")}
    return subprocess.run([sys.executable, "-m", "pgactions", "keys", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60, env={**env, "PYTHONPATH": str(ROOT / "src")})


def refused(auth: Authenticator, header: str | None) -> str:
    with pytest.raises(ActionError) as caught:
        auth.authenticate(header)
    assert caught.value.code == "UNAUTHORIZED"
    return str(caught.value.payload.get("detail"))


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "state", Keyring(new_secret_key()))


# -- API keys through the real command -------------------------------------------------------------

def test_keys_create_list_revoke_through_the_cli(tmp_path: Path) -> None:
    state = tmp_path / "state"
    made = keys(state, "create", "--name", "ci", "--actions", "query_rows", "insert_row", "--connections", "main",
                "--read-only", "--expires", "30", "--context", '{"tenant": "acme"}')
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert set(created) == {"name", "key"} and created["name"] == "ci" and created["key"].startswith("pga_")
    key = created["key"]
    assert (state / "secret.key").stat().st_mode & 0o777 == 0o600  # a fresh start needs no set-up

    again = keys(state, "create", "--name", "ci")
    assert again.returncode == 1 and again.stderr.startswith("pgactions: ") and "exists" in again.stderr
    bad = keys(state, "create", "--name", "x", "--context", "not json")
    assert bad.returncode == 2 and "--context" in bad.stderr
    assert keys(state, "create", "--name", "../x").returncode == 1

    listed = keys(state, "list")
    assert listed.returncode == 0 and key not in listed.stdout
    entry, = json.loads(listed.stdout)
    assert "keyHash" not in entry and "key" not in entry
    assert entry["actions"] == ["query_rows", "insert_row"] and entry["connections"] == ["main"]
    assert entry["readOnly"] is True and entry["context"] == {"tenant": "acme"} and entry["revoked"] is False
    assert entry["created"].endswith("Z") and entry["expires"] > entry["created"]

    reader = FileStore(state, Keyring.from_environment(state, require_env=False, environ={}))
    auth = Authenticator(reader, None, enabled=True, cache_seconds=0)
    principal = auth.authenticate(f"Bearer {key}")
    assert principal.name == "ci" and principal.kind == "key" and principal.read_only
    assert principal.may_run("query_rows") and not principal.may_run("delete_rows")  # the app answers 403
    assert principal.may_use("main") and not principal.may_use("other") and not principal.may_use(None)
    assert principal.pinned == {"tenant": "acme"} and principal.sql_refused("query_rows")

    revoked = keys(state, "revoke", "--name", "ci")
    assert revoked.returncode == 0 and json.loads(revoked.stdout) == {"name": "ci", "revoked": True}
    assert "unknown, revoked or expired" in refused(auth, f"Bearer {key}")
    assert json.loads(keys(state, "list").stdout)[0]["revoked"] is True
    missing = keys(state, "revoke", "--name", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr


def test_keys_secret_prints_a_usable_key(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pgactions", "keys", "secret"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    key = result.stdout.strip()
    assert len(key) == 44
    Keyring(key)  # a valid Fernet key


def test_allow_sql_key(store: FileStore) -> None:
    record, _ = create_key(store, "sql", pinned={"tenant": "t1"}, allow_sql=True)
    assert not principal_for_key(record).sql_refused("query_rows")
    plain, _ = create_key(store, "plain")
    assert not principal_for_key(plain).sql_refused("query_rows") and principal_for_key(plain).actions is None


def test_no_key_bad_scheme_unknown_expired_key_are_401(store: FileStore) -> None:
    auth = Authenticator(store, None, enabled=True)
    assert "no Authorization header" in refused(auth, None)
    assert "Bearer" in refused(auth, "")
    assert "Bearer" in refused(auth, "Basic dXNlcjpwdw==")
    assert "Bearer" in refused(auth, "Bearer ")
    refused(auth, "Bearer pga_not-a-key")
    refused(auth, "Bearer " + "x" * 20000)
    _, old = create_key(store, "old", expires_days=1, now=time.time() - 2 * 86400)
    detail = refused(auth, f"Bearer {old}")
    assert old not in detail
    _, good = create_key(store, "good")
    assert auth.authenticate(f"bearer {good}").name == "good"  # the scheme is case-insensitive


def test_revocation_is_seen_within_the_cache_bound(store: FileStore) -> None:
    _, key = create_key(store, "k")
    auth = Authenticator(store, None, enabled=True, cache_seconds=0.5)
    assert auth.authenticate(f"Bearer {key}").name == "k"
    other_process = FileStore(store.root, store.keyring)  # the same state, as another process sees it
    assert other_process.revoke_key("k")
    time.sleep(0.6)
    refused(auth, f"Bearer {key}")


def test_key_expiring_while_cached_is_refused(store: FileStore) -> None:
    _, key = create_key(store, "brief", expires_days=1.5 / 86400)  # 1.5 s
    auth = Authenticator(store, None, enabled=True, cache_seconds=60)
    auth.authenticate(f"Bearer {key}")
    time.sleep(1.6)
    refused(auth, f"Bearer {key}")


def test_no_auth_gives_the_anonymous_principal(store: FileStore) -> None:
    auth = Authenticator(store, None, enabled=False)
    assert auth.authenticate(None) is ANONYMOUS and ANONYMOUS.pinned == {}


def test_verify_key_rejects_lookalikes(store: FileStore) -> None:
    record, key = create_key(store, "k")
    assert verify_key(store, key) == record
    assert verify_key(store, key[:-1]) is None and verify_key(store, key + "x") is None
    assert verify_key(store, record.key_hash) is None  # the hash is not the key


# -- JWTs --------------------------------------------------------------------------------------------

def hs_token(claims: dict[str, Any], secret: str = HS_SECRET, **header: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=header or None)


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "user-7", "aud": AUDIENCE, "exp": int(time.time()) + 300, **extra}


def test_hs256_token_role_and_context_claims(store: FileStore) -> None:
    settings = JwtSettings(secret=HS_SECRET, audience=AUDIENCE, context_claims={"tenant": "tenant_id"})
    auth = Authenticator(store, settings, enabled=True)
    principal = auth.authenticate("Bearer " + hs_token(claims(role="app_reader", tenant_id="acme")))
    assert (principal.name, principal.kind, principal.role) == ("user-7", "jwt", "app_reader")
    assert principal.pinned == {"tenant": "acme"} and principal.sql_refused("execute_query")
    assert principal.actions is None and principal.connections is None

    assert "expired" in refused(auth, "Bearer " + hs_token(claims(tenant_id="a", exp=int(time.time()) - 10)))
    assert "audience" in refused(auth, "Bearer " + hs_token(claims(tenant_id="a", aud="someone-else")))
    no_exp = claims(tenant_id="a")
    del no_exp["exp"]
    assert "exp" in refused(auth, "Bearer " + hs_token(no_exp))
    assert "tenant_id" in refused(auth, "Bearer " + hs_token(claims()))  # never runs unpinned
    refused(auth, "Bearer " + hs_token(claims(tenant_id="a"), secret="another-secret-that-is-long-enough-000"))
    refused(auth, "Bearer " + hs_token(claims(tenant_id="a", role=["x"])))
    refused(auth, "Bearer " + jwt.encode(claims(tenant_id="a"), None, algorithm="none"))
    refused(auth, "Bearer not.a.token")


def test_leeway_and_no_audience_configured(store: FileStore) -> None:
    auth = Authenticator(store, JwtSettings(secret=HS_SECRET, leeway=30), enabled=True)
    just_expired = {"sub": "u", "exp": int(time.time()) - 5}
    assert auth.authenticate("Bearer " + hs_token(just_expired)).name == "u"
    # A token meant for some audience is refused by a service that has none configured.
    refused(auth, "Bearer " + hs_token(claims()))


def test_tokens_refused_when_only_keys_are_configured(store: FileStore) -> None:
    auth = Authenticator(store, None, enabled=True)
    assert "API keys" in refused(auth, "Bearer " + hs_token(claims()))


def _hmac_token(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """A token signed by hand (pyjwt itself refuses a PEM as an HMAC secret)."""
    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    signing_input = part(json.dumps(header).encode()) + "." + part(json.dumps(payload).encode())
    return signing_input + "." + part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def _rsa() -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private, json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))


def test_rs256_token_with_a_jwks_file(store: FileStore, tmp_path: Path) -> None:
    (key_a, jwk_a), (key_b, jwk_b), (stranger, _) = _rsa(), _rsa(), _rsa()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk_a, "kid": "a", "use": "sig", "alg": "RS256"},
                                         {**jwk_b, "kid": "b", "use": "sig", "alg": "RS256"}]}))
    settings = JwtSettings(jwks_file=jwks, audience=AUDIENCE, role_claim="db_role")
    auth = Authenticator(store, settings, enabled=True)

    def rs(private: Any, kid: str | None, **extra: Any) -> str:
        return jwt.encode(claims(**extra), private, algorithm="RS256", headers={"kid": kid} if kid else None)

    assert auth.authenticate("Bearer " + rs(key_a, "a", db_role="r1")).role == "r1"
    assert auth.authenticate("Bearer " + rs(key_b, "b")).role is None
    refused(auth, "Bearer " + rs(key_a, "b"))  # signed by a, claims to be b
    refused(auth, "Bearer " + rs(stranger, "a"))
    assert "kid" in refused(auth, "Bearer " + rs(key_a, "zzz"))
    refused(auth, "Bearer " + rs(key_a, None))  # two keys: the token must say which
    assert "expired" in refused(auth, "Bearer " + rs(key_a, "a", exp=int(time.time()) - 60))
    # Algorithm confusion: an HS256 token "signed" with the public key as secret is refused.
    public_pem = key_a.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = _hmac_token({"alg": "HS256", "typ": "JWT", "kid": "a"}, claims(), public_pem)
    assert "no key is configured" in refused(auth, "Bearer " + forged)


def test_single_key_jwks_needs_no_kid_and_a_bad_file_is_refused(store: FileStore, tmp_path: Path) -> None:
    private, public = _rsa()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}))
    auth = Authenticator(store, JwtSettings(jwks_file=jwks, audience=AUDIENCE), enabled=True)
    assert auth.authenticate("Bearer " + jwt.encode(claims(), private, algorithm="RS256")).name == "user-7"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="JWKS file"):
        Authenticator(store, JwtSettings(jwks_file=tmp_path / "bad.json"), enabled=True)
    with pytest.raises(ValueError, match="secret"):
        Authenticator(store, JwtSettings(), enabled=True)
