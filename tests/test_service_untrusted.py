"""Profiles from callers (``pgactions serve``) may not reach the service's files, credentials or network.

Every refusal of issue 14 item 7, wherever the value is written (a field, the URL's host or query
string, ``extraOptions``); the host policy after DNS, with the answers pinned; and, against the
suite's server, that nothing of the service's own environment (PG* variables, ~/.pgpass, a
pg_service.conf group, ~/.postgresql/postgresql.crt) reaches a caller's connection while the
same profile loaded the ordinary way does take it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgactions import ActionError, Runtime
from pgactions.connection.profiles import NO_FILE, UNSEALED_OPTIONS, forget_profiles, load_profile
from pgactions.service.untrusted import ALLOWED_OPTIONS, HostPolicy, vet_profile

from .conftest import APP_PASSWORD

PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n"
OPEN = HostPolicy(None, [])  # the default deny list only
BASE = {"host": "127.0.0.1", "database": "app", "username": "app", "password": "pw"}


def refused(spec: Any, policy: HostPolicy = OPEN) -> dict[str, Any]:
    with pytest.raises(ActionError) as info:
        vet_profile(spec, policy)
    assert info.value.code == "INVALID_CONNECTION", info.value.payload
    return info.value.payload


def resolver(table: dict[str, list[str]]) -> Any:
    """A DNS of the test's own: names → addresses; anything else does not resolve."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        name = host.rstrip(".").lower()  # as DNS does
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[name]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


@pytest.fixture
def fresh_profiles() -> Iterator[None]:
    """Profiles are parsed once and cached with the environment of the time: start and end clean."""
    forget_profiles()
    yield
    forget_profiles()


# -- files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "field"), [
    ({**BASE, "sslRootCert": "/etc/ssl/certs/ca-certificates.crt"}, "sslRootCert"),
    ({**BASE, "sslRootCert": "~/.postgresql/root.crt"}, "sslRootCert"),
    ({**BASE, "sslCert": "/home/service/.postgresql/postgresql.crt", "sslKey": PEM_KEY}, "sslCert"),
    ({**BASE, "sslCert": PEM_CERT, "sslKey": "/home/service/.postgresql/postgresql.key"}, "sslKey"),
    ({**BASE, "sslCert": PEM_CERT, "sslKey": "system"}, "sslKey"),
    ("postgresql://app:pw@db.example.com/app?sslkey=/etc/ssl/private/server.key", "url: sslkey"),
    ("postgresql://app:pw@db.example.com/app?sslcert=/etc/ssl/certs/a.pem", "url: sslcert"),
    ("postgresql://app:pw@db.example.com/app?sslrootcert=/etc/passwd", "url: sslrootcert"),
    ({"url": "postgresql://app:pw@db.example.com/app?sslkey=/etc/ssl/private/server.key"}, "url: sslkey"),
])
def test_certificates_and_keys_as_pem_text_only(spec: Any, field: str) -> None:
    payload = refused(spec)
    assert payload["field"] == field
    assert "PEM text" in payload["detail"]
    assert "/etc/ssl/private" not in str(payload) and "pw@" not in str(payload)  # a key path is secret too


def test_pem_text_and_system_are_accepted() -> None:
    profile = vet_profile({**BASE, "sslMode": "verify-full", "sslRootCert": "system",
                           "sslCert": PEM_CERT, "sslKey": PEM_KEY}, OPEN)
    assert (profile.sslRootCert, profile.sslCert, profile.sslKey) == ("system", PEM_CERT, PEM_KEY)
    assert vet_profile({**BASE, "sslRootCert": PEM_CERT}, OPEN).sslRootCert == PEM_CERT


def test_a_profile_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text("host: 127.0.0.1\nusername: app\n")
    for spec in (str(path), "profile.yaml", "postgres-profile"):
        assert refused(spec)["field"] == "connection"
    assert refused(42)["field"] == "connection"  # type: ignore[arg-type]


# -- Unix sockets ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "field"), [
    ({**BASE, "host": "/var/run/postgresql"}, "host"),
    ({**BASE, "host": "/tmp"}, "host"),
    ({**BASE, "host": "@abstract-socket"}, "host"),
    ({**BASE, "host": "127.0.0.1,/var/run/postgresql"}, "host"),
    ({**BASE, "host": "127.0.0.1,"}, "host"),  # an empty entry is libpq's default socket
    ({**BASE, "host": "127.0.0.1,,localhost"}, "host"),
    ("postgresql://app:pw@db.example.com/app?host=/var/run/postgresql", "url: host"),
    ("postgresql://app:pw@/app?host=/var/run/postgresql", "url: host"),
    ("postgresql://app:pw@%2Fvar%2Frun%2Fpostgresql/app", "url: host"),
    ("postgresql://app:pw@%2fvar%2frun%2fpostgresql:5432/app", "url: host"),
    ({"url": "postgresql://app:pw@db.example.com/app?host=%2Ftmp"}, "url: host"),
])
def test_unix_sockets_are_refused(spec: Any, field: str) -> None:
    payload = refused(spec)
    assert payload["field"] == field
    assert "Unix socket" in payload["detail"] or "Unix-socket" in payload["detail"]


# -- libpq options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["passfile", "service", "sslcrl", "sslcrldir", "sslkeylogfile", "options",
                                    "requirepeer", "gssencmode", "krbsrvname", "gsslib", "require_auth",
                                    "oauth_issuer", "replication", "client_encoding", "servicefile"])
def test_options_outside_the_allowlist_are_refused(option: str) -> None:
    value = {"gssencmode": "prefer", "replication": "database", "client_encoding": "LATIN1",
             "requirepeer": "postgres", "require_auth": "gss", "options": "-c statement_timeout=0"}.get(option, "/x/y")
    payload = refused({**BASE, "extraOptions": {option: value}})
    assert payload["field"] == f"extraOptions/{option}"


@pytest.mark.parametrize(("query", "field"), [
    ("passfile=/root/.pgpass", "url: passfile"),
    ("service=production", "url: service"),
    ("sslcrl=/etc/ssl/crl.pem", "url: sslcrl"),
    ("sslkeylogfile=/tmp/keys.log", "url: sslkeylogfile"),
    ("options=-c%20default_transaction_read_only%3Doff", "url: options"),
    ("options=-c%20search_path%3Dsales%20-c%20statement_timeout%3D0", "url: options"),
    ("keepalives=1&passfile=/root/.pgpass", "url: passfile"),
])
def test_url_query_options_are_vetted_too(query: str, field: str) -> None:
    payload = refused(f"postgresql://app:pw@127.0.0.1/app?{query}")
    assert payload["field"] == field


def test_allowed_options_pass() -> None:
    options = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
               "tcp_user_timeout": 5000, "target_session_attrs": "read-write", "load_balance_hosts": "disable",
               "channel_binding": "prefer", "sslsni": 1, "ssl_min_protocol_version": "TLSv1.2"}
    assert set(options) <= ALLOWED_OPTIONS
    profile = vet_profile({**BASE, "connectTimeout": 5, "applicationName": "tenant-7", "extraOptions": options}, OPEN)
    kept = dict(profile.extraOptions)
    assert kept["keepalives_idle"] == "30" and kept["target_session_attrs"] == "read-write"
    assert vet_profile("postgresql://app:pw@127.0.0.1/app?keepalives_idle=30&connect_timeout=5"
                       "&application_name=x&options=-c%20search_path%3Dsales", OPEN).schema == "sales"


def test_every_refusal_is_named() -> None:
    payload = refused({**BASE, "host": "/tmp", "sslKey": "/k", "extraOptions": {"passfile": "/p", "service": "s"}})
    assert {e["path"] for e in payload["errors"]} == {"host", "sslKey", "extraOptions/passfile", "extraOptions/service"}


# -- addresses: the default deny list, allow and deny, DNS ------------------------------------------

@pytest.mark.parametrize("host", ["169.254.169.254", "169.254.170.2", "fd00:ec2::254", "fe80::1",
                                  "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "100.100.100.200",
                                  "168.63.129.16", "0.0.0.0", "::"])
def test_metadata_and_link_local_addresses_are_denied_by_default(host: str) -> None:
    payload = refused({**BASE, "host": host})
    assert payload["field"] == "host" and "denied" in payload["detail"]
    url_host = f"[{host}]" if ":" in host else host
    assert refused(f"postgresql://app:pw@{url_host}/app")["field"] == "url: host"


@pytest.mark.parametrize(("spec", "field"), [
    ({**BASE, "extraOptions": {"hostaddr": "169.254.169.254"}}, "extraOptions/hostaddr"),
    ({**BASE, "host": "db.example.com", "extraOptions": {"hostaddr": "fd00:ec2::254"}}, "extraOptions/hostaddr"),
    ({**BASE, "host": "a,b", "extraOptions": {"hostaddr": "127.0.0.1,169.254.169.254"}}, "extraOptions/hostaddr"),
    ("postgresql://app:pw@db.example.com/app?hostaddr=169.254.169.254", "url: hostaddr"),
    ({**BASE, "extraOptions": {"hostaddr": "metadata.google.internal"}}, "extraOptions/hostaddr"),  # IPs only
    ({**BASE, "host": "a,b", "extraOptions": {"hostaddr": "127.0.0.1"}}, "extraOptions/hostaddr"),  # one per host
])
def test_hostaddr_is_checked_like_a_host(spec: Any, field: str) -> None:
    assert refused(spec)["field"] == field


def test_a_name_resolving_to_a_denied_address_is_refused_without_saying_which() -> None:
    policy = HostPolicy(None, ["127.0.0.0/8", "::1"])
    payload = refused({**BASE, "host": "localhost"}, policy)
    assert payload["field"] == "host" and "'localhost' resolves to an address" in payload["detail"]
    assert "127.0.0.1" not in payload["detail"]  # the service's DNS answers are not shown to callers
    assert refused({**BASE, "host": "127.0.0.1"}, policy)["field"] == "host"
    # A name the caller controls, answering with the metadata address: denied by default.
    rebinding = HostPolicy(None, [], resolver=resolver({"evil.example.com": ["203.0.113.7", "169.254.169.254"]}))
    assert refused({**BASE, "host": "evil.example.com"}, rebinding)["field"] == "host"
    assert refused("postgresql://app:pw@evil.example.com/app", rebinding)["field"] == "url: host"


def test_allow_list_by_cidr() -> None:
    dns = resolver({"localhost": ["127.0.0.1"], "db.internal": ["10.1.2.3"], "db6.internal": ["fd12::5"]})
    policy = HostPolicy(["127.0.0.0/8", "fd12::/16"], [], resolver=dns)
    assert dict(vet_profile({**BASE, "host": "localhost"}, policy).extraOptions)["hostaddr"] == "127.0.0.1"
    assert dict(vet_profile({**BASE, "host": "db6.internal"}, policy).extraOptions)["hostaddr"] == "fd12::5"
    assert vet_profile({**BASE, "host": "127.0.0.9"}, policy).host == "127.0.0.9"
    payload = refused({**BASE, "host": "db.internal"}, policy)
    assert payload["field"] == "host" and "--allow-hosts" in payload["detail"]
    assert refused({**BASE, "host": "10.1.2.3"}, policy)["field"] == "host"
    # An IPv4-mapped IPv6 address is the IPv4 address it names.
    assert vet_profile({**BASE, "host": "::ffff:127.0.0.1"}, policy).host == "::ffff:127.0.0.1"


def test_allow_list_by_name() -> None:
    dns = resolver({"db.example.com": ["198.51.100.10"], "eu.db.example.com": ["198.51.100.11"],
                    "other.example.org": ["198.51.100.10"]})
    policy = HostPolicy(["db.example.com", "*.db.example.com"], [], resolver=dns)
    assert vet_profile({**BASE, "host": "db.example.com"}, policy).extraOptions == (("hostaddr", "198.51.100.10"),)
    assert vet_profile({**BASE, "host": "DB.Example.com."}, policy).host == "DB.Example.com."
    assert vet_profile({**BASE, "host": "eu.db.example.com"}, policy).extraOptions == (("hostaddr", "198.51.100.11"),)
    # The same address under another name, or written directly, is not allowed by the name.
    assert refused({**BASE, "host": "other.example.org"}, policy)["field"] == "host"
    assert refused({**BASE, "host": "198.51.100.10"}, policy)["field"] == "host"
    # An allowed name with an address of the caller's choosing: the name allows nothing.
    payload = refused({**BASE, "host": "db.example.com", "extraOptions": {"hostaddr": "198.51.100.99"}}, policy)
    assert payload["field"] == "extraOptions/hostaddr"
    # Deny wins over allow.
    both = HostPolicy(["db.example.com"], ["198.51.100.0/24"], resolver=dns)
    assert "denied" in refused({**BASE, "host": "db.example.com"}, both)["detail"]


def test_deny_by_name_is_checked_before_dns() -> None:
    dns = resolver({})
    policy = HostPolicy(None, ["db.internal", "*.corp.example.com"], resolver=dns)
    for host in ("db.internal", "DB.INTERNAL.", "pg.corp.example.com"):
        payload = refused({**BASE, "host": host}, policy)
        assert payload["field"] == "host" and "denied" in payload["detail"]
    assert dns.asked == []


def test_multi_host_every_host_and_every_address_checked_and_pinned() -> None:
    dns = resolver({"a.example.com": ["198.51.100.2", "198.51.100.1", "2001:db8::1"],
                    "b.example.com": ["203.0.113.5"], "c.example.com": ["169.254.169.254"]})
    policy = HostPolicy(None, [], resolver=dns)
    profile = vet_profile({**BASE, "host": "a.example.com,b.example.com", "port": 6432}, policy)
    # One entry per address, host names kept (TLS), addresses in a stable order (pools are per profile).
    assert profile.host == "a.example.com,a.example.com,a.example.com,b.example.com"
    assert dict(profile.extraOptions)["hostaddr"] == "198.51.100.1,198.51.100.2,2001:db8::1,203.0.113.5"
    assert profile.port == 6432
    assert refused({**BASE, "host": "a.example.com,c.example.com"}, policy)["field"] == "host"
    assert refused({**BASE, "host": "b.example.com,169.254.169.254"}, policy)["field"] == "host"
    # A host that does not resolve is skipped, as libpq would; none resolving is HOST_NOT_FOUND.
    assert vet_profile({**BASE, "host": "nowhere.example.com,b.example.com"}, policy).host == "b.example.com"
    with pytest.raises(ActionError) as info:
        vet_profile({**BASE, "host": "nowhere.example.com"}, policy)
    assert info.value.code == "HOST_NOT_FOUND" and info.value.payload["field"] == "host"


def test_an_unknown_host_is_host_not_found_with_the_system_dns() -> None:
    with pytest.raises(ActionError) as info:
        vet_profile("postgresql://app:pw@no-such-host.pgactions.invalid/app", OPEN)
    assert info.value.code == "HOST_NOT_FOUND" and info.value.payload["field"] == "url: host"


def test_bad_policy_entries_are_refused_at_start() -> None:
    for entry in ("10.0.0.0/33", "not a host", "http://x", ""):
        with pytest.raises(ValueError):
            HostPolicy([entry], [])
        with pytest.raises(ValueError):
            HostPolicy(None, [entry])
    assert HostPolicy(None, [], default_deny=False).refusal(__import__("ipaddress").ip_address("169.254.169.254"),
                                                            None) is None


# -- nothing from the service's own environment --------------------------------------------------------

def test_the_environment_does_not_fill_a_vetted_profile(monkeypatch: pytest.MonkeyPatch, fresh_profiles: None) -> None:
    for var, value in {"PGHOST": "10.9.9.9", "PGPORT": "6000", "PGUSER": "svc", "PGPASSWORD": "service-secret",
                       "PGDATABASE": "svcdb", "PGSSLMODE": "disable", "PGSSLKEY": "/home/svc/key.pem",
                       "PGSSLROOTCERT": "/home/svc/ca.pem", "PGAPPNAME": "svc"}.items():
        monkeypatch.setenv(var, value)
    profile = vet_profile({"username": "app", "database": "app"}, OPEN)
    assert (profile.host, profile.port, profile.password, profile.sslMode, profile.sslKey, profile.sslRootCert) == (
        "localhost", 5432, None, "prefer", None, None)
    assert load_profile({"username": "app", "database": "app"}).password == "service-secret"  # the ordinary way
    kwargs = profile.connect_kwargs()
    assert kwargs["password"] == "" and kwargs["passfile"] == NO_FILE
    assert kwargs["sslkey"] == kwargs["sslcert"] == kwargs["sslrootcert"] == NO_FILE
    assert "service-secret" not in str(kwargs) and "/home/svc" not in str(kwargs)


def test_every_libpq_environment_variable_is_sealed() -> None:
    from psycopg import pq

    kwargs = vet_profile(BASE, OPEN).connect_kwargs()
    for option in pq.Conninfo.get_defaults():
        keyword = option.keyword.decode()
        if option.envvar and keyword not in UNSEALED_OPTIONS:
            assert keyword in kwargs, f"{keyword} ({option.envvar.decode()}) would be read from the environment"
    assert "service" not in kwargs


def test_vetted_profiles_are_stable_pool_keys() -> None:
    a = vet_profile({**BASE, "host": "localhost"}, OPEN)
    b = vet_profile({**BASE, "host": "localhost"}, OPEN)
    assert a == b and hash(a) == hash(b) and not a.environment
    assert "environment=False" in repr(a) and "pw" not in repr(a).replace("password=***", "")


# -- against the suite's server ----------------------------------------------------------------------

def _fields(pg: Any, **extra: Any) -> dict[str, Any]:
    return {"host": pg.host, "port": pg.port, "database": "pgactions_test", "username": "app",
            "sslMode": "disable", **extra}


def test_a_pinned_profile_reaches_the_server(runtime: Runtime, pg: Any) -> None:
    # A name only the test's DNS knows: libpq could not resolve it, so the query proves libpq
    # connected to the pinned hostaddr and never asked DNS again.
    name = "pinned.pgactions.invalid"
    address = socket.getaddrinfo(pg.host, pg.port, type=socket.SOCK_STREAM)[0][4][0]
    policy = HostPolicy(None, [], resolver=resolver({name: [address]}))
    profile = vet_profile(_fields(pg, host=name, password=APP_PASSWORD), policy)
    assert dict(profile.extraOptions)["hostaddr"] == address
    assert runtime.run("query_rows", profile, {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]
    url = pg.url(sslmode="disable")
    assert runtime.run("query_rows", vet_profile(url, OPEN), {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]


@pytest.fixture
def service_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_profiles: None) -> Path:
    """The service's OS user's home, with nothing in it yet; PG* variables cleared."""
    for var in [v for v in os.environ if v.startswith("PG") and v not in ("PGACTIONS_TEST_DSN", "PGACTIONS_TEST_SERVER")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _fails_with(runtime: Runtime, profile: Any, code: str) -> None:
    with pytest.raises(ActionError) as info:
        runtime.run("query_rows", profile, {"query": "SELECT 1 AS one"})
    assert info.value.code == code, info.value.payload


def test_pgpass_of_the_service_is_not_used(runtime: Runtime, pg: Any, local_server: Any, service_home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pgpass = service_home / ".pgpass"
    pgpass.write_text(f"{pg.host}:{pg.port}:pgactions_test:app:{APP_PASSWORD}\n*:*:*:app:{APP_PASSWORD}\n")
    pgpass.chmod(0o600)
    fields = _fields(pg)  # no password
    # The ordinary way, libpq finds the password in ~/.pgpass: the entry is right.
    assert runtime.run("query_rows", load_profile(fields), {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]
    _fails_with(runtime, vet_profile(fields, OPEN), "AUTHENTICATION_FAILED")
    # Also when PGPASSFILE names it, and from a URL.
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    forget_profiles()
    url = pg.url(password="", sslmode="disable")
    assert runtime.run("query_rows", load_profile(url), {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]
    _fails_with(runtime, vet_profile(url, OPEN), "AUTHENTICATION_FAILED")


def test_pgpassword_and_service_groups_are_not_used(runtime: Runtime, pg: Any, local_server: Any,
                                                    service_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = service_home / "pg_service.conf"
    services.write_text(f"[svc]\npassword={APP_PASSWORD}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGSERVICE", "svc")
    fields = _fields(pg)
    assert runtime.run("query_rows", load_profile(fields), {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]
    _fails_with(runtime, vet_profile(fields, OPEN), "AUTHENTICATION_FAILED")
    monkeypatch.delenv("PGSERVICE")
    # PGPASSWORD read by libpq itself (the profile was parsed before it was set).
    vetted = vet_profile(fields, OPEN)
    monkeypatch.setenv("PGPASSWORD", APP_PASSWORD)
    _fails_with(runtime, vetted, "AUTHENTICATION_FAILED")


def test_the_service_client_certificate_is_not_used(runtime: Runtime, pg: Any, ssl_server: Any,
                                                    service_home: Path) -> None:
    # libpq presents ~/.postgresql/postgresql.crt (and its key) to any server that asks when the
    # profile names none; a broken file there makes the ordinary connection fail, which shows libpq
    # reads it, while the vetted one never looks.
    folder = service_home / ".postgresql"
    folder.mkdir()
    (folder / "postgresql.crt").write_text("not a certificate\n")
    (folder / "postgresql.key").write_text("not a key\n")
    (folder / "postgresql.key").chmod(0o600)
    fields = _fields(pg, sslMode="require", password=APP_PASSWORD)
    _fails_with(runtime, load_profile(fields), "SSL_FAILED")
    assert runtime.run("query_rows", vet_profile(fields, OPEN), {"query": "SELECT 1 AS one"}).data["rows"] == [{"one": 1}]
