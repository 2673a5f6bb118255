"""
A private PostgreSQL 15 server for a test session, started the way the
C{pytest-postgresql} fixtures do it: C{initdb} into a temporary directory, a
free TCP port on 127.0.0.1 and a private UNIX socket directory, C{pg_ctl start
-w}; a role and a database for the tests; stopped and removed at teardown.

It never touches the system's cluster: every command names its own data
directory, port and socket directory, and the C{PG*} variables of the
environment (which could point C{psql} at another server) are dropped.

C{initdb} refuses to run as root, and so does the server: when the tests run
as root, the server's files belong to the C{postgres} system user and its
commands run as that user through C{runuser}.  The tests themselves connect as
the role L{PostgresServer.user} over TCP with a password, as a node of a
cluster would.

A test module takes its fixtures, C{postgres_server} (the session's server)
and C{postgres_database} (a fresh database per test), with::

    pytest_plugins = ["postgres_server"]

The binaries are found under C{/usr/lib/postgresql/<newest version>/bin}
(C{MIDJOBS_PG_BIN} overrides it); if they are missing, the tests that use the fixture are skipped
with that reason, and only then.
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import attrs
import pytest



def _debian_server_bin() -> Path:
    """
    Where Debian's newest installed postgresql-<version> package puts the
    server's programs (version 15 if none is installed: it is then reported
    missing).
    """
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    if not versions:
        return Path("/usr/lib/postgresql/15/bin")
    return max(versions, key=lambda p: int(p.parent.name))


#: Where the server's programs are.
PG_BIN = Path(os.environ.get("MIDJOBS_PG_BIN") or _debian_server_bin())
#: The system user that owns the server's files when the tests run as root.
SERVER_USER = "postgres"
#: The programs the fixture runs.
PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")

#: Settings for a throwaway server on a small shared machine: little memory,
#: no durability work (a crashed test server is simply thrown away), and
#: enough connections for three nodes' pools and the tests' own.
SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "256MB",
    "autovacuum": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}

_ENV_DROPPED = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATA", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE",
                "PGSERVICEFILE", "PGPASSFILE", "PGSSLMODE", "PGOPTIONS")


def missing_binaries(bin_dir: Path = PG_BIN) -> list[str]:
    """
    The programs of L{PROGRAMS} that are not executable in C{bin_dir}.
    """
    return [name for name in PROGRAMS if not os.access(bin_dir / name, os.X_OK)]


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.  Another
    process may take it before the server does: L{start_postgres} tries again.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED}
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    return env


@attrs.define
class PostgresServer:
    """
    One private server: where it lives, how to reach it, and how to stop,
    restart or kill it (the cluster tests restart PostgreSQL under the nodes).
    """

    root: Path
    port: int
    user: str
    password: str
    dbname: str
    superuser: str
    superuser_password: str
    bin_dir: Path = PG_BIN
    run_as: str | None = None
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """
        The URL a node is given with C{--database}.
        """
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        return (f"postgresql://{quote(self.user)}:{quote(self.password)}@{self.host}:{self.port}/"
                f"{quote(dbname)}")

    @property
    def conninfo(self) -> str:
        """
        A libpq connection string for the tests' role and database.
        """
        return self.conninfo_for(self.dbname)

    def conninfo_for(self, dbname: str) -> str:
        return (f"host={self.host} port={self.port} dbname={dbname} user={self.user} "
                f"password={self.password} connect_timeout=10")

    @property
    def admin_conninfo(self) -> str:
        """
        A connection string for the superuser, to watch or disturb the server
        from a test (C{pg_terminate_backend}, C{pg_stat_activity}).
        """
        return (f"host={self.host} port={self.port} dbname=postgres user={self.superuser} "
                f"password={self.superuser_password} connect_timeout=10")

    def _command(self, argv: Sequence[str]) -> list[str]:
        if self.run_as is None:
            return list(argv)
        return ["runuser", "-u", self.run_as, "--", *argv]

    def run(self, program: str, *args: str, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """
        Run one of the server's programs as the server's user, in its root
        directory (which that user can read, unlike the tests' one).
        """
        argv = self._command([str(self.bin_dir / program), *args])
        result = subprocess.run(argv, cwd=self.root, env=_clean_env(), input=input, text=True,
                                capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip() or result.stdout}\n"
                               f"{self.log_tail()}")
        return result

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """
        Run SQL as the superuser through the private socket directory.
        """
        return self.run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                        "-p", str(self.port), "-U", self.superuser, "-d", dbname, "-At", input=sql).stdout

    def start(self) -> None:
        self.run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file))

    def stop(self, mode: str = "fast") -> None:
        """
        Stop the server (C{mode} as C{pg_ctl stop -m}: smart, fast,
        immediate).
        """
        self.run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir))

    def restart(self, mode: str = "fast") -> None:
        """
        Stop and start again on the same port, with the same data: every
        connection is cut, as when the database goes away under a node.
        """
        self.stop(mode)
        self.start()

    @property
    def pid(self) -> int | None:
        """
        The postmaster's pid while it runs.
        """
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def destroy(self) -> None:
        """
        Stop the server however it must be stopped and remove its files.
        """
        if self.running():
            for mode in ("fast", "immediate"):
                try:
                    self.stop(mode)
                    break
                except (RuntimeError, subprocess.TimeoutExpired):
                    continue
            pid = self.pid
            if pid is not None and self.running():
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while self.running() and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def _server_user() -> tuple[str | None, int | None, int | None]:
    """
    Who runs the server: nobody else when the tests are not root; the
    C{postgres} system user when they are.
    """
    if os.geteuid() != 0:
        return None, None, None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeError(f"the tests run as root and there is no {SERVER_USER!r} user to run PostgreSQL as "
                           "(initdb refuses root)") from None
    if shutil.which("runuser") is None:
        raise RuntimeError("the tests run as root and runuser(1) is missing to run PostgreSQL as another user")
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def start_postgres(bin_dir: Path = PG_BIN, settings: dict[str, str] | None = None,
                   user: str = "midjobs", dbname: str = "midjobs", attempts: int = 3) -> PostgresServer:
    """
    Make and start a private server; the caller must L{PostgresServer.destroy}
    it.  C{settings} are added to (or replace) L{SETTINGS}: a benchmark wants
    C{fsync} back on.
    """
    run_as, uid, gid = _server_user()
    base = {**SETTINGS, **(settings or {})}
    last_error: Exception | None = None
    for _ in range(attempts):
        root = Path(tempfile.mkdtemp(prefix="midjobs-pg-"))
        server = PostgresServer(root=root, port=free_port(), user=user, password=secrets.token_hex(16),
                                dbname=dbname, superuser="postgres", superuser_password=secrets.token_hex(16),
                                bin_dir=bin_dir, run_as=run_as)
        try:
            server.socket_dir.mkdir(mode=0o700)
            pwfile = root / "pwfile"
            pwfile.write_text(server.superuser_password + "\n")
            pwfile.chmod(0o600)
            if uid is not None and gid is not None:
                for path in (root, server.socket_dir, pwfile):
                    os.chown(path, uid, gid)
            # Local (socket) connections trust: only the server's user (and
            # root) can enter the socket directory.  TCP needs a password.
            server.run("initdb", "-D", str(server.data_dir), "-U", server.superuser, "--pwfile", str(pwfile),
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                       "--no-sync", timeout=120)
            pwfile.unlink()
            conf = {**base, "port": str(server.port), "unix_socket_directories": f"'{server.socket_dir}'"}
            with open(server.data_dir / "postgresql.conf", "a") as f:
                f.write("\n# midjobs tests (tests/postgres_server.py)\n")
                f.writelines(f"{key} = {value}\n" for key, value in conf.items())
            server.start()
        except Exception as e:
            last_error = e
            server.destroy()
            # Another process may have taken the port between free_port()
            # and the server's bind: try another.
            if "could not bind" in str(e) or "Address already in use" in str(e):
                continue
            raise
        try:
            server.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{server.password}';\n"
                        f"CREATE DATABASE {dbname} OWNER {user};\n")
        except Exception:
            server.destroy()
            raise
        return server
    raise RuntimeError(f"PostgreSQL did not start on a free port in {attempts} attempts: {last_error}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """
    The session's private PostgreSQL server, with the role and database
    L{PostgresServer.user} / L{PostgresServer.dbname}.
    """
    missing = missing_binaries()
    if missing:
        pytest.skip(f"PostgreSQL is not installed: {', '.join(missing)} missing in {PG_BIN} "
                    "(Debian package postgresql)")
    server = start_postgres()
    try:
        yield server
    finally:
        server.destroy()


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """
    A fresh, empty database of the session's server owned by the tests' role,
    dropped after the test; its URL is returned (what C{--database} takes).
    """
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    postgres_server.psql(f"CREATE DATABASE {name} OWNER {postgres_server.user} TEMPLATE template0;")
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")
