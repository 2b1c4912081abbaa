"""SSL for real: verification against the suite's own CA, a self-signed server, client certificates,
certificates given as file paths or pasted PEM text, and what test-connection reports about them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgactions import Runtime, load_profile, test_connection

from .conftest import APP_PASSWORD, CERTUSER

SSL_FACTS = {"query": "SELECT current_user AS who, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"}


def test_verify_full_with_the_right_ca(runtime: Runtime, pg, ssl_server) -> None:
    profile = {"url": pg.url("sslonly"), "host": "localhost", "sslMode": "verify-full", "sslRootCert": pg.ca_file}
    assert runtime.run("query_rows", profile, SSL_FACTS).data["rows"] == [{"who": "sslonly", "ssl": True}]


def test_ca_certificate_pasted_as_text(runtime: Runtime, pg, ssl_server) -> None:
    pem = Path(pg.ca_file).read_text()
    profile = {"url": pg.url(), "sslMode": "verify-full", "sslRootCert": pem}
    assert runtime.run("query_rows", profile, SSL_FACTS).data["rows"][0]["ssl"] is True
    report = test_connection(profile)
    assert report["ok"] and report["ssl"]["verified"] is True
    assert not any("not verified" in w for w in report["warnings"])


def test_ssl_only_server_accepts_ssl(runtime: Runtime, ssl_only_server) -> None:
    url = ssl_only_server.url("app", APP_PASSWORD, "pgactions_test")
    rows = runtime.run("query_rows", {"url": url, "sslMode": "require"}, SSL_FACTS).data["rows"]
    assert rows == [{"who": "app", "ssl": True}]


def test_self_signed_server_verified_with_its_own_certificate(runtime: Runtime, ssl_only_server) -> None:
    url = ssl_only_server.url("app", APP_PASSWORD, "pgactions_test")
    unverified = test_connection({"url": url, "sslMode": "require"})
    cert = unverified["ssl"]["certificate"]
    assert cert["selfSigned"] is True and cert["subject"] == cert["issuer"] == "CN=localhost"
    assert any("self-signed" in w for w in unverified["warnings"])
    # The fix the warning gives: the certificate itself as the root, and verify-full.
    own = Path(ssl_only_server.ca_file).read_text()
    profile = {"url": url, "host": "localhost", "sslMode": "verify-full", "sslRootCert": own}
    assert runtime.run("query_rows", profile, SSL_FACTS).data["rows"] == [{"who": "app", "ssl": True}]
    verified = test_connection(profile)
    assert verified["ok"] and verified["ssl"]["verified"] is True
    assert not any("self-signed" in w or "not verified" in w for w in verified["warnings"])


@pytest.mark.parametrize("form", ["paths", "pasted PEM text"])
def test_client_certificate_authentication(runtime: Runtime, pg, ssl_server, tmp_path, form) -> None:
    cert, key = ssl_server.client_certificate(CERTUSER, tmp_path)
    if form == "paths":
        tls = {"sslCert": str(cert), "sslKey": str(key)}
    else:
        tls = {"sslCert": cert.read_text(), "sslKey": key.read_text()}
    profile = {"url": pg.url(CERTUSER, password=""), "sslMode": "verify-full", "host": "localhost",
               "sslRootCert": pg.ca_file, **tls}
    assert runtime.run("query_rows", profile, SSL_FACTS).data["rows"] == [{"who": CERTUSER, "ssl": True}]
    report = test_connection(profile)
    assert report["ok"] and report["user"] == CERTUSER
    # The private key never shows: not in the profile's repr, not in any report.
    key_text = key.read_text()
    secret_line = key_text.splitlines()[1]
    assert secret_line not in repr(load_profile(profile)) and secret_line not in str(report)


def test_client_key_of_another_certificate_is_reported(pg, ssl_server, tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, _ = ssl_server.client_certificate(CERTUSER, tmp_path / "a")
    _, other_key = ssl_server.client_certificate(CERTUSER, tmp_path / "b")
    report = test_connection({"url": pg.url(CERTUSER, password=""), "sslMode": "require",
                              "sslCert": str(cert), "sslKey": str(other_key)})
    assert report["ok"] is False and report["failedStep"] == "tls"
    assert report["error"]["code"] == "SSL_FAILED" and "private key" in report["error"]["detail"]


def test_test_connection_reports_every_layer(pg, ssl_server, guide_db) -> None:
    guide_db.sql(f'GRANT USAGE ON SCHEMA "{guide_db.schema}" TO noaccess')
    guide_db.sql("GRANT SELECT ON users TO noaccess")
    guide_db.sql("GRANT SELECT, INSERT ON orders TO noaccess")
    report = test_connection({"url": pg.url("noaccess", password="noaccess-pw"), "sslMode": "require",
                              "schema": guide_db.schema})
    assert report["ok"] is True
    assert [s["name"] for s in report["steps"]] == ["dns", "tcp", "tls", "authentication", "database",
                                                    "query", "privileges"]
    assert all(s["ok"] and s["ms"] >= 0 for s in report["steps"])
    ssl = report["ssl"]
    assert ssl["inUse"] and ssl["protocol"].startswith("TLSv1.") and ssl["cipher"]
    cert = ssl["certificate"]
    assert cert["subject"] == "CN=localhost" and cert["issuer"] == "CN=pgactions test CA"
    assert cert["selfSigned"] is False and set(cert["names"]) == {"localhost", "127.0.0.1"}
    assert 0 <= cert["daysLeft"] <= 2  # the suite's certificates live two days
    assert report["user"] == "noaccess" and report["database"] == "pgactions_test"
    assert report["superuser"] is False and report["standby"] is False
    assert report["serverVersion"] and 0 < report["connectionsAvailable"] < 40
    privileges = report["privileges"]
    assert privileges["schema"] == guide_db.schema and privileges["usage"] is True
    assert privileges["byTable"]["users"] == ["SELECT"]
    assert privileges["byTable"]["orders"] == ["SELECT", "INSERT"]
    assert privileges["byTable"]["logs"] == []
    assert (privileges["tables"], privileges["select"], privileges["insert"], privileges["delete"]) == (4, 2, 1, 0)
    warnings = " ".join(report["warnings"])
    assert "not verified" in warnings and "expires in" in warnings
    assert "superuser" not in warnings and "SSL is not in use" not in warnings


def test_test_connection_warns_like_a_dba(pg, ssl_server) -> None:
    plain = test_connection({"url": pg.url(), "sslMode": "disable"})
    assert plain["ssl"]["inUse"] is False and any("SSL is not in use" in w for w in plain["warnings"])
    assert [s.get("skipped") for s in plain["steps"] if s["name"] == "tls"] == [True]
    admin = test_connection({"url": pg.admin_url, "sslMode": "require"})
    assert admin["superuser"] is True and any("superuser" in w for w in admin["warnings"])
    pooler_port = test_connection({"url": pg.url(), "sslMode": "disable", "port": pg.port})
    assert not any("pooler" in w for w in pooler_port["warnings"])
