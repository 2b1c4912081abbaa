"""Real PostgreSQL for the suite.

Order: ``PGACTIONS_TEST_DSN`` if set (tests needing server configuration skip with a reason);
else a throwaway cluster from the local binaries (password auth over TCP, SSL with a generated CA,
an SSL-only role); else testcontainers when a Docker engine answers.  Each test gets its own
schema and its own Runtime, so tests never see each other's tables or pools.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from pgactions import Runtime
from pgactions.devtools.local_server import LocalServer, ServerNotAvailable, _embedded_bindir, find_bindir

APP_PASSWORD = "app-s3cret-Pw!"
SSLONLY_PASSWORD = "sslonly-s3cret"
LIMITED_PASSWORD = "limited-s3cret"
CERTUSER = "certuser"  # logs in with a client certificate only (pg_hba "cert")


@dataclass
class TestServer:
    """What tests need to know about the server under test."""

    __test__ = False

    admin_url: str = field(repr=False)
    host: str
    port: int
    configurable: bool  # False for an external DSN: no SSL-only role, no generated CA
    local: LocalServer | None = None

    def url(self, user: str = "app", password: str | None = None, database: str = "pgactions_test",
            **query: str) -> str:
        from urllib.parse import quote, urlencode

        secret = {"app": APP_PASSWORD, "sslonly": SSLONLY_PASSWORD, "limited": LIMITED_PASSWORD}.get(user)
        pw = password if password is not None else secret
        auth = quote(user, safe="") + (":" + quote(pw, safe="") if pw else "")
        qs = ("?" + urlencode(query)) if query else ""
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}{qs}"

    @property
    def ca_file(self) -> str:
        assert self.local is not None
        return str(self.local.ca_file)

    def admin(self, database: str = "pgactions_test") -> psycopg.Connection[Any]:
        base = self.admin_url.rsplit("/", 1)[0]
        return psycopg.connect(f"{base}/{database}", autocommit=True)


def _prepare_roles(server: TestServer) -> None:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pgactions_test")
        conn.execute("CREATE DATABASE pgactions_test")
        for role, password, extra in (("app", APP_PASSWORD, ""), ("sslonly", SSLONLY_PASSWORD, ""),
                                      ("limited", LIMITED_PASSWORD, " CONNECTION LIMIT 1"),
                                      ("noaccess", "noaccess-pw", ""), (CERTUSER, "certuser-unused-pw", "")):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'{extra}")
        conn.execute("GRANT ALL ON DATABASE pgactions_test TO app")
        conn.execute(f"GRANT CONNECT ON DATABASE pgactions_test TO sslonly, limited, noaccess, {CERTUSER}")
    with server.admin() as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO app")


@pytest.fixture(scope="session")
def pg() -> Iterator[TestServer]:
    dsn = os.environ.get("PGACTIONS_TEST_DSN")
    if dsn:
        from pgactions.connection.profiles import ConnectionProfile

        profile = ConnectionProfile.from_url(dsn)
        server = TestServer(dsn, profile.host, profile.port, configurable=False)
        _prepare_roles(server)
        yield server
        return
    # PGACTIONS_TEST_SERVER=embedded runs the suite on the pgserver wheel even where Debian's is installed.
    forced_embedded = os.environ.get("PGACTIONS_TEST_SERVER") == "embedded"
    local = None if forced_embedded else _start_local(embedded=False)
    if local is None:
        started_container = False
        for server in ([] if forced_embedded else _container_server()):  # Docker, when an engine answers
            started_container = True
            yield server
        if started_container:
            return
        local = _start_local(embedded=True, only_embedded=forced_embedded)  # pgserver: no SSL in its build
        if local is None:
            pytest.skip("no PostgreSQL: set PGACTIONS_TEST_DSN, install postgresql "
                        "(apt-get install -y postgresql) or pip install 'pgactions[embedded]'")
    try:
        server = TestServer(local.url(), "127.0.0.1", local.port, configurable=True, local=local)
        _prepare_roles(server)
        yield server
    finally:
        local.stop()


def _start_local(embedded: bool, only_embedded: bool = False) -> LocalServer | None:
    try:
        bindir = _embedded_bindir() if only_embedded else find_bindir(embedded=embedded)
    except ServerNotAvailable:
        return None
    if bindir is None:
        return None
    return LocalServer(
        ssl=True, max_connections=40, bindir=bindir,
        extra_hba=["hostnossl all sslonly 127.0.0.1/32 reject", "hostnossl all sslonly ::1/128 reject",
                   f"hostssl all {CERTUSER} 127.0.0.1/32 cert", f"host all {CERTUSER} 127.0.0.1/32 reject"],
    ).start()


def _container_server() -> Iterator[TestServer]:
    """A server in Docker, when testcontainers is installed and an engine answers; else nothing."""
    if shutil.which("docker") is None:
        return
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return
    try:
        container = PostgresContainer("postgres:16", driver=None).start()
    except Exception:  # no engine answering
        return
    try:
        from pgactions.connection.profiles import ConnectionProfile

        url = container.get_connection_url()
        profile = ConnectionProfile.from_url(url)
        server = TestServer(url, profile.host, profile.port, configurable=False)
        _prepare_roles(server)
        yield server
    finally:
        container.stop()


@pytest.fixture
def local_server(pg: TestServer) -> LocalServer:
    if pg.local is None:
        pytest.skip("needs the suite's own server (SSL, pg_hba rules); PGACTIONS_TEST_DSN points elsewhere")
    return pg.local


@pytest.fixture
def ssl_server(local_server: LocalServer) -> LocalServer:
    if not local_server.ssl:
        pytest.skip("this PostgreSQL build has no SSL support (the embedded fallback); install Debian's")
    return local_server


@pytest.fixture(scope="session")
def ssl_only_server(pg: TestServer) -> Iterator[LocalServer]:
    """A second server that accepts SSL connections only, with a self-signed certificate and few
    connection slots (5 for ordinary roles), for the failures one shared server cannot show."""
    if pg.local is None or not pg.local.ssl:
        pytest.skip("needs local PostgreSQL binaries built with SSL (install Debian's postgresql)")
    server = LocalServer(ssl=True, self_signed=True, max_connections=8, bindir=pg.local._bindir,
                         extra_hba=["hostnossl all all 127.0.0.1/32 reject", "hostnossl all all ::1/128 reject"])
    server.start()
    try:
        server.psql(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
        server.psql("CREATE DATABASE pgactions_test OWNER app")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pgbouncer(pg: TestServer) -> Iterator[Any]:
    """PgBouncer in transaction mode in front of the suite's server."""
    from .pgbouncer import PgBouncer, find_pgbouncer

    binary = find_pgbouncer()
    if binary is None or pg.local is None:
        pytest.skip("PgBouncer is not installed (apt-get install -y pgbouncer; .ci/run installs it)")
    bouncer = PgBouncer(binary, pg.port, "pgactions_test", {"app": APP_PASSWORD}).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def pooler(request: pytest.FixtureRequest) -> str:
    """How tests reach the server: "direct", or "pgbouncer" for tests marked ``pooler_modes``
    (which then run twice; see pytest_generate_tests)."""
    return getattr(request, "param", "direct")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("pooler_modes") and "pooler" in metafunc.fixturenames:
        metafunc.parametrize("pooler", ["direct", "pgbouncer"], indirect=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pooler_modes: also run the test through PgBouncer in transaction "
                                       "mode, with the profile's pgbouncer mode on")


def skip_summary(reports: list[Any]) -> str | None:
    """One line: how many tests skipped for each reason, most frequent first."""
    from collections import Counter

    reasons: Counter[str] = Counter()
    for report in reports:
        longrepr = report.longrepr
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if not reasons:
        return None
    return f"skipped {sum(reasons.values())}: " + "; ".join(f"{n} × {r}" for r, n in reasons.most_common())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    line = skip_summary(terminalreporter.stats.get("skipped", []))
    if line:
        terminalreporter.write_line(line, yellow=True)


@dataclass
class TestDB:
    """One test's schema on the shared server, and a profile whose search path starts there
    (through PgBouncer in transaction mode when the test runs in that mode)."""

    __test__ = False

    server: TestServer
    schema: str
    bouncer_port: int | None = None

    @property
    def profile(self) -> dict[str, Any]:
        if self.bouncer_port is not None:
            url = f"postgresql://app:{quote(APP_PASSWORD, safe='')}@127.0.0.1:{self.bouncer_port}/pgactions_test"
            return {"url": url, "schema": self.schema, "sslMode": "disable", "pgbouncer": True}
        return {"url": self.server.url(), "schema": self.schema, "sslMode": "disable"}

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run set-up or checking SQL as the app role in this test's schema (not the code under test)."""
        with psycopg.connect(self.server.url(), autocommit=True) as conn:
            conn.execute(f'SET search_path = "{self.schema}", public')
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def db(pg: TestServer, pooler: str, request: pytest.FixtureRequest) -> Iterator[TestDB]:
    schema = "t_" + uuid.uuid4().hex[:12]
    bouncer_port = request.getfixturevalue("pgbouncer").port if pooler == "pgbouncer" else None
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield TestDB(pg, schema, bouncer_port)
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with Runtime() as rt:
        yield rt


GUIDE_TABLES = """
CREATE TABLE users (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE NOT NULL,
    status text NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz,
    last_login timestamptz
);
CREATE TABLE sessions (id serial PRIMARY KEY, user_id int REFERENCES users(id), expires_at timestamptz NOT NULL);
CREATE TABLE logs (id bigserial PRIMARY KEY, level text NOT NULL, message text, created_at timestamp);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id), total numeric(10,2) CHECK (total >= 0),
                     created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users (name, email, status, created_at) VALUES
    ('John Doe', 'john@example.com', 'active', '2026-01-15 10:30:00+00'),
    ('Mary Major', 'mary@example.com', 'inactive', '2026-01-10 08:00:00+00');
"""


@pytest.fixture
def guide_db(db: TestDB) -> TestDB:
    """The tables the integration guide's examples use."""
    db.sql(GUIDE_TABLES)
    return db
