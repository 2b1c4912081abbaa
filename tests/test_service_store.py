"""The service's state stores: the file store and the PostgreSQL store, with secrets encrypted at rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgactions.service.apikeys import create_key, verify_key
from pgactions.service.crypto import Keyring, SecretKeyError, key_id, new_secret_key, reencrypt_all
from pgactions.service.filestore import FileStore
from pgactions.service.pgstore import PostgresStore
from pgactions.service.state import open_store

from .conftest import TestServer

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Pa55-w0rd-only-in-memory"
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
       "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\n")
SECRETS = [PASSWORD, "pem-pass-phrase-42", "oauth-client-secret-77", "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu"]
PROFILE: dict[str, Any] = {
    "host": "db.example.com", "port": 5432, "database": "shop", "user": "app", "password": PASSWORD,
    "sslMode": "verify-full", "sslKey": PEM, "sslPassword": "pem-pass-phrase-42",
    "extraOptions": {"oauth_client_secret": "oauth-client-secret-77", "application_name": "flows"},
}
URL_PROFILE: dict[str, Any] = {"url": f"postgresql://app:{PASSWORD}@db.example.com/shop", "connectTimeout": 5}


# -- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def state_db(pg: TestServer) -> Iterator[str]:
    """A database of its own for the PostgreSQL store (its schema is fixed: pgactions_state)."""
    name = "pgactions_state_test"
    with pg.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    yield pg.admin_url.rsplit("/", 1)[0] + "/" + name
    with pg.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def schema() -> str:
    return "st_" + uuid.uuid4().hex[:12]


@pytest.fixture
def secret_key() -> str:
    return new_secret_key()


@pytest.fixture(params=["file", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, secret_key: str) -> Iterator[Any]:
    keyring = Keyring(secret_key)
    if request.param == "file":
        made: Any = FileStore(tmp_path / "state", keyring)
    else:
        url = request.getfixturevalue("state_db")
        made = PostgresStore(url, keyring, schema=request.getfixturevalue("schema"))
    yield made
    made.close()


def _reopen(store: Any, keyring: Keyring) -> Any:
    """A second store on the same state, with another keyring."""
    if isinstance(store, FileStore):
        return FileStore(store.root, keyring)
    return PostgresStore(store._url, keyring, schema=store.schema)


def _everything_stored(store: Any) -> list[bytes]:
    """Every byte the store keeps: each file of the state directory, or each row of the schema."""
    if isinstance(store, FileStore):
        return [p.read_bytes() for p in store.root.rglob("*") if p.is_file()]
    with psycopg.connect(store._url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [store.schema])]
        assert {"connections", "api_keys", "idempotency", "schema_version"} <= set(tables)
        rows = []
        for table in tables:
            rows += [r[0].encode() for r in conn.execute(f'SELECT t::text FROM "{store.schema}"."{table}" t')]
        return rows


# -- connections -----------------------------------------------------------------------------------

def test_connections_round_trip(store: Any) -> None:
    assert store.readable()
    assert store.get_connection("main") is None and store.list_connections() == []
    store.put_connection("main", PROFILE)
    store.put_connection("by-url", URL_PROFILE)
    assert store.get_connection("main") == PROFILE
    assert store.get_connection("by-url") == URL_PROFILE
    assert store.list_connections() == ["by-url", "main"]
    store.put_connection("main", {**PROFILE, "host": "db2.example.com", "password": None})
    assert store.get_connection("main") == {**PROFILE, "host": "db2.example.com", "password": None}
    assert store.delete_connection("main") is True
    assert store.delete_connection("main") is False
    assert store.get_connection("main") is None and store.list_connections() == ["by-url"]


def test_secrets_are_never_stored_in_clear(store: Any) -> None:
    store.put_connection("main", PROFILE)
    store.put_connection("by-url", URL_PROFILE)
    create_key(store, "ci")
    store.claim_idempotency("k1", "h", time.time())
    stored = _everything_stored(store)
    assert stored
    for blob in stored:
        for secret in SECRETS:
            assert secret.encode() not in blob
    # …while what is not secret stays readable, so listing and masking need no key.
    assert any(b"db.example.com" in blob for blob in stored)


def test_odd_shapes_never_leave_a_secret_in_clear(store: Any) -> None:
    odd = {"host": "h", "extraOptions": [["oauth_client_secret", "oauth-client-secret-77"]],
           "note": {"$secret": "v1:00000000:not-a-token"}, "password": ""}
    store.put_connection("odd", odd)
    assert store.get_connection("odd") == odd  # a look-alike outside the secret fields stays as given
    assert all(b"oauth-client-secret-77" not in blob for blob in _everything_stored(store))


def test_without_the_key_secrets_do_not_open_but_ids_list(store: Any) -> None:
    store.put_connection("main", PROFILE)
    stranger = _reopen(store, Keyring(new_secret_key()))
    assert stranger.list_connections() == ["main"]
    with pytest.raises(SecretKeyError) as caught:
        stranger.get_connection("main")
    assert "key id" in str(caught.value) and PASSWORD not in str(caught.value)
    stranger.close()


def test_rotation_reads_with_the_previous_key_and_reencrypts(store: Any, secret_key: str) -> None:
    store.put_connection("main", PROFILE)
    store.put_connection("other", URL_PROFILE)
    new_key = new_secret_key()
    rotated = _reopen(store, Keyring(new_key, [secret_key]))
    assert rotated.get_connection("main") == PROFILE  # read with the previous key
    assert rotated.connection_needs_reencrypt("main")
    rotated.put_connection("main", rotated.get_connection("main"))  # a write re-encrypts with the current key
    assert not rotated.connection_needs_reencrypt("main")
    assert reencrypt_all(rotated) == 1  # only "other" was left
    assert reencrypt_all(rotated) == 0
    only_new = _reopen(store, Keyring(new_key))
    assert only_new.get_connection("main") == PROFILE and only_new.get_connection("other") == URL_PROFILE
    old_only = _reopen(store, Keyring(secret_key))
    with pytest.raises(SecretKeyError):
        old_only.get_connection("main")  # the old key alone no longer reads them
    for opened in (rotated, only_new, old_only):
        opened.close()


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "x" * 65, "a b", "-x", "é", "a\x00b", "/abs"])
def test_connection_ids_are_checked(store: Any, bad: str) -> None:
    with pytest.raises(ValueError, match="not valid"):
        store.put_connection(bad, PROFILE)
    assert store.get_connection(bad) is None
    assert store.delete_connection(bad) is False
    with pytest.raises(ValueError, match="not valid"):
        create_key(store, bad)


# -- keys ------------------------------------------------------------------------------------------

def test_keys_stored_as_hashes_names_unique_until_revoked(store: Any) -> None:
    record, key = create_key(store, "ci", actions=["query_rows"], connections=["main"], read_only=True,
                             pinned={"tenant": "acme"})
    assert key.startswith("pga_") and record.key_hash != key
    assert all(key.encode() not in blob for blob in _everything_stored(store))
    assert verify_key(store, key) == record
    assert store.find_key(record.key_hash) == record
    with pytest.raises(ValueError, match="exists"):
        create_key(store, "ci")
    assert store.revoke_key("ci") is True and store.revoke_key("nobody") is False
    assert verify_key(store, key) is None
    assert [k.revoked for k in store.list_keys()] == [True]
    _, second = create_key(store, "ci")  # a revoked key's name may be given to a new key
    assert verify_key(store, second) is not None and verify_key(store, key) is None


def test_expired_key_is_refused(store: Any) -> None:
    _, key = create_key(store, "old", expires_days=1, now=time.time() - 2 * 86400)
    _, fresh = create_key(store, "new", expires_days=1)
    assert verify_key(store, key) is None
    assert verify_key(store, fresh) is not None
    assert verify_key(store, "pga_unknown") is None and verify_key(store, "") is None


# -- idempotency -----------------------------------------------------------------------------------

def test_idempotency_claim_finish_release_expire(store: Any) -> None:
    now = time.time()
    assert store.claim_idempotency("caller:k1", "body1", now) is None
    running = store.claim_idempotency("caller:k1", "body1", now + 1)
    assert running is not None and running.status is None and running.body_hash == "body1"
    store.finish_idempotency("caller:k1", 201, b'{"ok": true}', {"content-type": "application/json"})
    done = store.claim_idempotency("caller:k1", "body2", now + 2)
    assert done is not None and (done.status, done.response, done.body_hash) == (201, b'{"ok": true}', "body1")
    assert done.headers == {"content-type": "application/json"}
    assert store.claim_idempotency("caller:k1", "body3", now + 25 * 3600) is None  # older than 24 h: gone
    store.release_idempotency("caller:k1")
    assert store.claim_idempotency("caller:k1", "body4", now + 25 * 3600) is None


_CLAIM_SCRIPT = """
import sys, time
from pathlib import Path
from pgactions.service.crypto import Keyring
kind, where, schema, key, start = sys.argv[1:6]
keyring = Keyring.from_environment(None, require_env=True)
if kind == "file":
    from pgactions.service.filestore import FileStore
    store = FileStore(Path(where), keyring)
else:
    from pgactions.service.pgstore import PostgresStore
    store = PostgresStore(where, keyring, schema=schema)
while time.time() < float(start):
    pass
print("won" if store.claim_idempotency(key, "body", time.time()) is None else "lost", flush=True)
"""


def _env(secret_key: str) -> dict[str, str]:
    return {**os.environ, "PGACTIONS_SECRET_KEY": secret_key, "PYTHONPATH": str(ROOT / "src")}


def test_idempotency_claimed_once_across_processes(store: Any, secret_key: str) -> None:
    if isinstance(store, FileStore):
        kind, where, schema = "file", str(store.root), "-"
    else:
        kind, where, schema = "pg", store._url, store.schema
    for round_ in range(3):
        start = time.time() + 1.5  # every process has started and opened its store by then
        procs = [subprocess.Popen([sys.executable, "-c", _CLAIM_SCRIPT, kind, where, schema, f"k{round_}", str(start)],
                                  stdout=subprocess.PIPE, text=True, env=_env(secret_key)) for _ in range(4)]
        results = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert sorted(results) == ["lost", "lost", "lost", "won"], results


# -- the file store: kill -9 mid-write -------------------------------------------------------------

_WRITER = """
import sys
from pathlib import Path
from pgactions.service.crypto import Keyring
from pgactions.service.filestore import FileStore
store = FileStore(Path(sys.argv[1]), Keyring.from_environment(None, require_env=True))
pad = "x" * 2_000_000  # big records: a write takes long enough to be interrupted
n = 0
while True:
    n += 1
    store.put_connection("main", {"host": "h", "password": "pw-%d" % n, "note": pad, "n": n})
    store.revoke_key("none")
    if n == 1:
        print("writing", flush=True)
"""


def test_file_store_survives_kill_9_mid_write(tmp_path: Path, secret_key: str) -> None:
    state = tmp_path / "state"
    keyring = Keyring(secret_key)
    FileStore(state, keyring).put_connection("main", {"host": "h", "password": "pw-0", "n": 0})
    seen = set()
    temps: list[Path] = []
    attempt = 0
    # Kill at spread-out moments until at least one kill landed mid-write (it leaves its temporary
    # file); on a busy machine that can take more than a dozen tries.
    while attempt < 12 or (not temps and attempt < 60):
        attempt += 1
        with subprocess.Popen([sys.executable, "-c", _WRITER, str(state)], stdout=subprocess.PIPE, text=True,
                              env=_env(secret_key)) as proc:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
            time.sleep(0.01 + 0.037 * (attempt % 12) + 0.003 * (attempt // 12))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        reader = FileStore(state, keyring)
        profile = reader.get_connection("main")  # whole: the old value or the new one, never torn
        assert profile is not None and profile["password"] == f"pw-{profile['n']}"
        assert reader.list_connections() == ["main"]
        seen.add(profile["n"])
        temps = [p for p in (state / "connections").iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert len(seen) > 1
    assert temps  # kills landed mid-write (each left its temporary file): the leftovers never look like records
    for temp in temps:  # a store that opens later removes the stale ones
        os.utime(temp, (time.time() - 7200, time.time() - 7200))
    FileStore(state, keyring)
    assert [p.name for p in (state / "connections").iterdir()] == ["main.json"]


# -- the PostgreSQL store: shared by processes -----------------------------------------------------

def test_postgres_store_migrates_once_when_processes_start_together(state_db: str, schema: str,
                                                                     secret_key: str) -> None:
    script = ("import sys, time\nfrom pgactions.service.crypto import Keyring\n"
              "from pgactions.service.pgstore import PostgresStore\n"
              "while time.time() < float(sys.argv[3]): pass\n"
              "PostgresStore(sys.argv[1], Keyring.from_environment(None, True), schema=sys.argv[2]).close()\n")
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", script, state_db, schema, str(start)], env=_env(secret_key),
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with psycopg.connect(state_db) as conn:
        assert conn.execute(f"SELECT version FROM {schema}.schema_version ORDER BY 1").fetchall() == [(1,), (2,)]
    PostgresStore(state_db, Keyring(secret_key), schema=schema).close()  # and again: nothing to do


@pytest.mark.parametrize("had_subscriptions", [False, True])
def test_postgres_store_moves_an_older_schema_up(state_db: str, schema: str, secret_key: str,
                                                 had_subscriptions: bool) -> None:
    """A store at version 1 — with or without the subscriptions table an earlier release created
    outside the numbered migrations — is moved to version 2 and keeps what it holds."""
    store = PostgresStore(state_db, Keyring(secret_key), schema=schema)
    store.put_connection("main", PROFILE)
    store.close()
    with psycopg.connect(state_db, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {schema}.schema_version WHERE version > 1")
        if not had_subscriptions:
            conn.execute(f"DROP TABLE {schema}.subscriptions")
    store = PostgresStore(state_db, Keyring(secret_key), schema=schema)
    try:
        assert store.get_connection("main") == PROFILE
        with psycopg.connect(state_db) as conn:
            assert conn.execute(f"SELECT version FROM {schema}.schema_version ORDER BY 1").fetchall() == [(1,), (2,)]
            assert conn.execute(f"SELECT count(*) FROM {schema}.subscriptions").fetchone() == (0,)
    finally:
        store.close()


def test_postgres_store_reconnects_after_its_connection_is_killed(state_db: str, schema: str,
                                                                  secret_key: str, pg: TestServer) -> None:
    store = PostgresStore(state_db, Keyring(secret_key), schema=schema)
    store.put_connection("main", PROFILE)
    with pg.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'pgactions-state' AND datname = 'pgactions_state_test'")
    time.sleep(0.2)
    assert store.get_connection("main") == PROFILE
    store.close()


def _cli(*args: str, secret_key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgactions", "keys", *args], capture_output=True, text=True,
                          env=_env(secret_key), timeout=60)


def test_two_processes_share_one_postgres_store(state_db: str, secret_key: str) -> None:
    """A connection saved through one process is usable through another; a key revoked through
    one is refused by all (the CLI runs in processes of its own, on the default schema)."""
    with psycopg.connect(state_db, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS pgactions_state CASCADE")
    saver = ("import sys\nfrom pgactions.service.state import open_store\n"
             "open_store(None, sys.argv[1]).put_connection('shared', json.loads(sys.argv[2]))\n")
    done = subprocess.run([sys.executable, "-c", "import json\n" + saver, state_db, json.dumps(PROFILE)],
                          env=_env(secret_key), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    env = {"PGACTIONS_SECRET_KEY": secret_key}
    one, two = open_store(None, state_db, environ=env), open_store(None, state_db, environ=env)
    assert one.get_connection("shared") == PROFILE == two.get_connection("shared")

    created = _cli("create", "--name", "shared-key", "--state-url", state_db, secret_key=secret_key)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    assert verify_key(one, key) is not None and verify_key(two, key) is not None
    revoked = _cli("revoke", "--name", "shared-key", "--state-url", state_db, secret_key=secret_key)
    assert revoked.returncode == 0, revoked.stderr
    assert verify_key(one, key) is None and verify_key(two, key) is None
    listed = _cli("list", "--state-url", state_db, secret_key=secret_key)
    assert key not in listed.stdout and json.loads(listed.stdout)[0]["revoked"] is True
    one.close()
    two.close()


def test_state_url_needs_the_secret_key_variable(state_db: str) -> None:
    with pytest.raises(SecretKeyError, match="PGACTIONS_SECRET_KEY is required"):
        open_store(None, state_db, environ={})
    result = subprocess.run([sys.executable, "-m", "pgactions", "keys", "list", "--state-url", state_db],
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PGACTIONS_SECRET")})
    assert result.returncode == 1 and "PGACTIONS_SECRET_KEY is required" in result.stderr


# -- the key: variable or key file -----------------------------------------------------------------

def test_key_file_created_private_on_first_start_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "pgactions"
    first = Keyring.from_environment(state, require_env=False, environ={})
    assert (state / "secret.key").stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    second = Keyring.from_environment(state, require_env=False, environ={})
    assert first.current_id == second.current_id == key_id((state / "secret.key").read_text())
    assert second.decrypt(first.encrypt("hello")) == "hello"


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    Keyring.from_environment(tmp_path, require_env=False, environ={})
    (tmp_path / "secret.key").chmod(0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"):
        Keyring.from_environment(tmp_path, require_env=False, environ={})


def test_variable_wins_and_a_bad_key_is_named_never_shown(tmp_path: Path) -> None:
    key = new_secret_key()
    ring = Keyring.from_environment(tmp_path, require_env=False, environ={"PGACTIONS_SECRET_KEY": key})
    assert ring.current_id == key_id(key) and not (tmp_path / "secret.key").exists()
    bad = "not-a-key-but-secret-text"
    for variable in ("PGACTIONS_SECRET_KEY", "PGACTIONS_SECRET_KEY_PREVIOUS"):
        env = {"PGACTIONS_SECRET_KEY": key, variable: bad}
        with pytest.raises(SecretKeyError) as caught:
            Keyring.from_environment(tmp_path, require_env=False, environ=env)
        assert variable in str(caught.value) and bad not in str(caught.value)
    assert key not in repr(ring)


def test_previous_key_from_the_environment(tmp_path: Path) -> None:
    old, new = new_secret_key(), new_secret_key()
    token = Keyring(old).encrypt("s3cret")
    ring = Keyring.from_environment(None, require_env=True,
                                    environ={"PGACTIONS_SECRET_KEY": new, "PGACTIONS_SECRET_KEY_PREVIOUS": old})
    assert ring.decrypt(token) == "s3cret" and ring.needs_reencrypt(token)
    assert not ring.needs_reencrypt(ring.encrypt("s3cret"))
    assert ring.encrypt("s3cret").startswith(f"v1:{key_id(new)}:")


def test_open_store_default_directory_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGACTIONS_SECRET_KEY", raising=False)
    store = open_store(None, None, environ={"XDG_STATE_HOME": str(tmp_path)})
    assert isinstance(store, FileStore) and store.root == tmp_path / "pgactions"
    assert (tmp_path / "pgactions" / "secret.key").exists()


def test_store_code_never_prints_the_url(state_db: str, schema: str, secret_key: str) -> None:
    store = PostgresStore(state_db, Keyring(secret_key), schema=schema)
    assert "postgresql://" not in repr(store)
    store.close()


def test_sealed_fields_match_the_profiles_secret_fields() -> None:
    """The store encrypts exactly what connection/profiles.py masks as secret."""
    from pgactions.connection import profiles
    from pgactions.service.crypto import SECRET_FIELDS, SECRET_OPTIONS

    assert SECRET_FIELDS == profiles.SECRET_FIELDS
    assert SECRET_OPTIONS == profiles._SECRET_OPTIONS


def test_rotation_reencrypts_subscriptions_too(store: Any, secret_key: str) -> None:
    from pgactions.service.store import SubscriptionRecord

    record = SubscriptionRecord(id="sub1", trigger="new_rows", connection_id="main",
                                inputs={"table": "t", "orderBy": "id"}, url="https://hooks.example.com/x?token=t0ken",
                                secret="webhook-secret-value", created=1.0)
    store.put_subscription(record)
    new_key = new_secret_key()
    rotated = _reopen(store, Keyring(new_key, [secret_key]))
    assert reencrypt_all(rotated) == 1
    only_new = _reopen(store, Keyring(new_key))
    again = only_new.get_subscription("sub1")
    assert again is not None and again.secret == "webhook-secret-value" and again.url.endswith("t0ken")
    for opened in (rotated, only_new):
        opened.close()
