"""A throwaway local PostgreSQL cluster, for the demo and the test suite.

It finds the server binaries (PATH, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``),
runs ``initdb`` into a temporary folder, writes the configuration the caller asks for (password
auth over TCP, optional SSL with a CA and server certificate generated on the spot) and starts
the server on a free loopback port.  PostgreSQL refuses to run as root, so when we are root the
server runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LocalServer", "ServerNotAvailable", "find_bindir", "free_port", "stop_kept_server"]

# Written into the server's folder at start: what stop_kept_server needs to stop it later, from
# another process (the binaries it was started with, the OS user it runs as).
MARKER = "pgactions-server.json"


class ServerNotAvailable(RuntimeError):
    """No PostgreSQL server binaries could be found on this machine."""


def find_bindir(embedded: bool = True) -> Path:
    """Locate the folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    The system's installation first; with *embedded*, the ``pgserver`` wheel's binaries after it.
    """
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    # Newest major version first.
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        candidates.append(Path(found))
    for bindir in candidates:
        if _is_bindir(bindir):
            return bindir
    shipped = _embedded_bindir() if embedded else None
    if shipped is not None:
        return shipped
    raise ServerNotAvailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found; install them with "
        "'apt-get install -y postgresql postgresql-contrib', or pip install 'pgactions[embedded]'"
    )


def _is_bindir(path: Path) -> bool:
    return all((path / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))


def _embedded_bindir() -> Path | None:
    """The server binaries shipped in the ``pgserver`` wheel (the ``embedded`` extra)."""
    try:
        with warnings.catch_warnings():  # its platformdirs import warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-not-found]
    except ImportError:
        return None
    install = Path(pgserver.__file__).parent / "pginstall"
    if not _is_bindir(install / "bin"):
        return None
    if os.geteuid() != 0:
        return install / "bin"
    # As root the server runs as another user, who may not reach site-packages under /root:
    # use a world-readable copy (made once per machine).  The binaries find their libraries at
    # $ORIGIN/../../../pgserver.libs, so the copy keeps that layout.
    copy = Path(tempfile.gettempdir()) / f"pgactions-pgserver-{os.stat(install).st_ino}"
    if not _is_bindir(copy / "pgserver" / "pginstall" / "bin"):
        staging = Path(tempfile.mkdtemp(prefix="pgactions-pgserver-"))
        shutil.copytree(install, staging / "pgserver" / "pginstall", symlinks=True)
        libs = install.parent.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
        for dirpath, _dirs, files in os.walk(staging):
            os.chmod(dirpath, 0o755)
            for name in files:
                target = os.path.join(dirpath, name)
                if not os.path.islink(target):
                    os.chmod(target, 0o755 if os.access(target, os.X_OK) else 0o644)
        shutil.rmtree(copy, ignore_errors=True)
        os.replace(staging, copy)
    return copy / "pgserver" / "pginstall" / "bin"


def _ssl_supported(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        return True  # Debian's server packages put pg_config elsewhere; they are built with SSL
    out = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True).stdout
    return "--with-openssl" in out or "--with-ssl=openssl" in out


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: run it as 'postgres' (or 'nobody' where there is none)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServerNotAvailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name.split(".")[0])
    except ValueError:
        return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalServer:
    """One temporary cluster.  Use as a context manager or call start()/stop()."""

    superuser_password: str = field(default="pgactions-test-pw", repr=False)
    ssl: bool = True
    # A self-signed server certificate (no CA), as many managed and hand-made servers have.
    self_signed: bool = False
    max_connections: int = 40
    # pg_hba.conf lines placed before the catch-all password rules.
    extra_hba: list[str] = field(default_factory=list)
    extra_conf: dict[str, str] = field(default_factory=dict)
    port: int = 0
    bindir: Path | None = None  # default: find_bindir()
    root: Path | None = None
    _run_as: str | None = None

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> LocalServer:
        bindir = self.bindir or find_bindir()
        if self.ssl and not _ssl_supported(bindir):
            self.ssl = False  # e.g. the embedded build: callers check .ssl
        self.root = Path(tempfile.mkdtemp(prefix="pgactions-pg-"))
        self._run_as = _server_user()
        self.port = self.port or free_port()
        data = self.datadir
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if self._run_as:
            _chown_tree(self.root, self._run_as)
        self._run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
             "-A", "scram-sha-256", "--auth-local", "trust", "-E", "UTF8", "--locale", "C.UTF-8"
             if _has_c_utf8() else "C"],
        )
        pwfile.unlink()
        self._write_config()
        if self.ssl:
            self._make_certificates()
        if self._run_as:
            _chown_tree(self.root, self._run_as)
        self._run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"),
                   "-w", "-t", "60", "start"])
        self._bindir = bindir
        (self.root / MARKER).write_text(json.dumps({"bindir": str(bindir), "runAs": self._run_as,
                                                    "port": self.port}))
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            self._run([str(self._bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                       "-w", "stop"], check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def restart(self) -> None:
        assert self.root is not None, "the server is not running"
        self._run([str(self._bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w",
                   "-l", str(self.root / "server.log"), "restart"])

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- facts -------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def ca_file(self) -> Path:
        assert self.root is not None
        return self.root / "ca.crt"

    def url(self, user: str = "postgres", password: str | None = None, database: str = "postgres",
            **query: str) -> str:
        from urllib.parse import quote, urlencode

        pw = self.superuser_password if password is None and user == "postgres" else password
        auth = quote(user, safe="") + (":" + quote(pw, safe="") if pw else "")
        qs = ("?" + urlencode(query)) if query else ""
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(database, safe='')}{qs}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the local socket (set-up only, never the code under test)."""
        out = self._run([str(self._bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", database,
                         "-c", sql])
        return out.strip()

    def log_tail(self, lines: int = 40) -> str:
        if self.root is None:
            return ""
        try:
            return "\n".join((self.root / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    # -- helpers -----------------------------------------------------------------------
    def _write_config(self) -> None:
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": str(self.max_connections),
            "superuser_reserved_connections": "3",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
            "password_encryption": "'scram-sha-256'",
        }
        if self.ssl:
            conf.update(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'")
            if not self.self_signed:
                conf["ssl_ca_file"] = "'ca.crt'"  # also verifies client certificates
        conf.update(self.extra_conf)
        with (self.datadir / "postgresql.conf").open("a") as fh:
            fh.write("\n# pgactions throwaway server\n")
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        # A build without SSL refuses to start with hostssl rules: they could never match anyway.
        extra = [line for line in self.extra_hba if self.ssl or not line.startswith("hostssl")]
        hba = ["local all all trust", *extra,
               "host all all 127.0.0.1/32 scram-sha-256",
               "host all all ::1/128 scram-sha-256"]
        (self.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")

    def _make_certificates(self) -> None:
        """A private CA and a server certificate for localhost/127.0.0.1, valid for two days (or,
        with *self_signed*, the server certificate alone, signed by itself)."""
        d = self.datadir
        ossl = _openssl(d)
        if self.self_signed:
            ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                 "-keyout", "server.key", "-out", "server.crt",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
            os.chmod(d / "server.key", 0o600)
            shutil.copy(d / "server.crt", self.ca_file)  # the certificate is its own root
            os.chmod(self.ca_file, 0o644)
            return
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=pgactions test CA", "-keyout", "ca.key", "-out", "ca.crt",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr")
        (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.crt", "-extfile", "ext.cnf")
        os.chmod(d / "server.key", 0o600)
        shutil.copy(d / "ca.crt", self.ca_file)
        os.chmod(self.ca_file, 0o644)

    def client_certificate(self, common_name: str, folder: Path) -> tuple[Path, Path]:
        """A client certificate for *common_name* signed by this server's CA, and its key (0600)."""
        assert self.root is not None and not self.self_signed, "needs the server's own CA"
        ossl = _openssl(folder)
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}",
             "-keyout", "client.key", "-out", "client.csr")
        ossl("x509", "-req", "-in", "client.csr", "-CA", str(self.datadir / "ca.crt"),
             "-CAkey", str(self.datadir / "ca.key"), "-CAcreateserial", "-days", "2", "-out", "client.crt")
        os.chmod(folder / "client.key", 0o600)
        return folder / "client.crt", folder / "client.key"

    def _run(self, argv: list[str], check: bool = True) -> str:
        if self._run_as:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd="/")
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[3 if self._run_as else 0]).name} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}\n{self.log_tail() if self.root else ''}"
            )
        return proc.stdout


def stop_kept_server(root: str | Path) -> bool:
    """Stop a server a previous process left running (``pgactions demo --keep``) and delete its
    folder *root*.  As root, pg_ctl runs as the OS user the server runs as (PostgreSQL refuses
    root).  Returns False when the server was not running any more (the folder is deleted anyway).
    Raises ValueError when *root* is not such a folder (it is then left alone), RuntimeError when
    pg_ctl fails."""
    root = Path(root)
    try:
        facts = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        facts = None
    if not isinstance(facts, dict):
        raise ValueError(f"{root} is not the folder of a server started by pgactions (it has no valid {MARKER})")
    data = root / "data"
    running = (data / "postmaster.pid").exists()
    if running:
        bindir = Path(facts.get("bindir") or "")
        pg_ctl = bindir / "pg_ctl" if (bindir / "pg_ctl").exists() else find_bindir() / "pg_ctl"
        argv = [str(pg_ctl), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"]
        if os.geteuid() == 0:
            run_as = facts.get("runAs") or pwd.getpwuid(data.stat().st_uid).pw_name
            if run_as != "root":
                argv = ["runuser", "-u", run_as, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd="/")
        if proc.returncode != 0 and (data / "postmaster.pid").exists():
            raise RuntimeError(f"pg_ctl stop failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    shutil.rmtree(root, ignore_errors=True)
    return running


def _openssl(cwd: Path) -> Any:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerNotAvailable("openssl is needed to generate the test certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True)

    return run


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for dirpath, _dirs, files in os.walk(root):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    except OSError:
        return False
    return "c.utf8" in out or "c.utf-8" in out
