"""A throwaway PgBouncer in transaction mode in front of the suite's server.

Transaction pooling is what PgBouncer deployments, Supabase's pooler (port 6543) and RDS Proxy
do: each transaction may run on a different server connection, so server-side prepared
statements and session settings do not survive between transactions.  Running the action tests
through it proves the profile's ``pgbouncer`` mode really needs neither.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pgactions.devtools.local_server import free_port

__all__ = ["PgBouncer", "find_pgbouncer"]


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None)


class PgBouncer:
    def __init__(self, binary: str, server_port: int, database: str, users: dict[str, str]) -> None:
        self.binary = binary
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgactions-pgbouncer-"))
        userlist = "".join(f'"{user}" "{password}"\n' for user, password in users.items())
        (self.root / "userlist.txt").write_text(userlist)
        (self.root / "pgbouncer.ini").write_text(f"""
[databases]
{database} = host=127.0.0.1 port={server_port} dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.root}/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 400
server_reset_query =
logfile = {self.root}/pgbouncer.log
pidfile = {self.root}/pgbouncer.pid
""")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        argv = [self.binary, str(self.root / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            entry = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
            for path in [self.root, *self.root.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            argv = ["runuser", "-u", entry.pw_name, "--", *argv]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self._process.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"PgBouncer did not start: {self.log_tail()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return (self.root / "pgbouncer.log").read_text()[-2000:]
        except OSError:
            return ""


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
