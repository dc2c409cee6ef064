"""A real PostgreSQL 15 server for the session: the beta stage's database engine, started from its binaries.

The server gets a throw-away cluster under /tmp, listens on 127.0.0.1 at a free port (plus a private
Unix socket for the superuser) and holds a role ``platform`` with a password and two databases:
``platform`` (platform_db) and ``dagster`` (Dagster's storage), as the compose stack does. It is
stopped and its directory removed at the end of the session, also when a test or the start fails.

PostgreSQL refuses to run as root: under root the server runs as the ``postgres`` system user.
pg_ctl detaches the server from the test process, so a watchdog process stops it and removes the
cluster if the test process dies without its teardown (SIGKILL, a CI timeout's SIGTERM).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from psycopg2 import sql
from sqlalchemy.engine import URL

from platform_db.migrate import downgrade

# The platform_db suite's fixtures, for its tests run again on PostgreSQL (test_platform_db_postgres.py):
# ``db_url`` below points them at the server.
from tests.platform_db.conftest import connect, make_payload, migrated_url, new_order, repo

__all__ = ["connect", "make_payload", "migrated_url", "new_order", "repo"]

ROLE = "platform"
PLATFORM_DB = "platform"
DAGSTER_DB = "dagster"
SUPERUSER = "postgres"
SERVER_USER = "postgres"  # the system user the server runs as when the tests run as root
COMMAND_TIMEOUT = 120
# Waits until its parent (the test process) is gone, then runs the stop command and removes the cluster.
WATCHDOG = """
import os, shutil, subprocess, sys, time
parent, base, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
while os.getppid() == parent:
    time.sleep(0.5)
subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
shutil.rmtree(base, ignore_errors=True)
"""
BETA_INSTANCE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "dagster.beta.yaml"


def _bin_dir() -> Path:
    """The directory with initdb and pg_ctl of the installed server (not a client-only pg_config)."""
    candidates: list[Path] = []
    if os.environ.get("POSTGRES_BIN_DIR"):
        candidates.append(Path(os.environ["POSTGRES_BIN_DIR"]))
    if shutil.which("pg_config"):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if bindir:
            candidates.append(Path(bindir))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)]
    for wrapper in (shutil.which("pg_ctl"), shutil.which("initdb")):
        if wrapper:
            candidates.append(Path(wrapper).resolve().parent)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; looked in "
        + ", ".join(str(c) for c in candidates or [Path("/usr/lib/postgresql/<version>/bin")])
        + ". Install PostgreSQL 15 (e.g. apt-get install postgresql-15) or set POSTGRES_BIN_DIR.",
        pytrace=False,
    )


def _major(path: str) -> int:
    version = Path(path).parent.name
    return int(version) if version.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    role: str
    password: str
    socket_dir: str

    def url(self, database: str = PLATFORM_DB, *, with_password: bool = True) -> URL:
        """SQLAlchemy URL (psycopg2) of ``database`` as the ``platform`` role, over TCP."""
        return URL.create(
            "postgresql+psycopg2",
            username=self.role,
            password=self.password if with_password else None,
            host=self.host,
            port=self.port,
            database=database,
        )

    def dagster_storage_config(self, database: str = DAGSTER_DB) -> dict[str, Any]:
        """The ``storage`` block of the beta stage's dagster.yaml, pointed at this server.

        Only the address and database change: user, driver scheme and the password's source
        (``{"env": "PLATFORM_DB_PASSWORD"}``) stay as deployed.
        """
        storage = yaml.safe_load(BETA_INSTANCE_FILE.read_text())["storage"]
        storage["postgres"]["postgres_db"].update(hostname=self.host, port=self.port, db_name=database)
        return dict(storage)

    def superuser_connection(self, database: str = "postgres") -> psycopg2.extensions.connection:
        connection = psycopg2.connect(host=self.socket_dir, port=self.port, user=SUPERUSER, dbname=database)
        connection.autocommit = True
        return connection


class _Cluster:
    """initdb / pg_ctl of one throw-away cluster, run as the server's user."""

    def __init__(self, bin_dir: Path, base: Path) -> None:
        self.bin_dir = bin_dir
        self.data = base / "data"
        self.run_dir = base / "run"
        self.log = self.run_dir / "postgres.log"
        self.as_root = os.geteuid() == 0

    def prepare(self) -> None:
        for directory in (self.data, self.run_dir):
            directory.mkdir(mode=0o700)
            if self.as_root:
                entry = pwd.getpwnam(SERVER_USER)
                os.chown(directory, entry.pw_uid, entry.pw_gid)

    def command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", SERVER_USER, "--", *command] if self.as_root else command

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(tool, *args),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            cwd=self.run_dir,
        )

    def check(self, tool: str, *args: str) -> None:
        result = self.run(tool, *args)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args[:1])} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}"
            )

    def stop_command(self) -> list[str]:
        return self.command("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").is_file()

    def stop(self) -> None:
        if self.running():
            result = subprocess.run(
                self.stop_command(), capture_output=True, timeout=COMMAND_TIMEOUT, check=False
            )
            if result.returncode != 0:
                self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


def _start(cluster: _Cluster, port: int, password: str) -> PostgresServer:
    cluster.prepare()
    cluster.check(
        "initdb",
        "-D", str(cluster.data),
        "-U", SUPERUSER,
        "-E", "UTF8",
        "--locale=C",
        # No password over the private socket (its directory is 0700); over TCP, as the services connect, scram.
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
    )  # fmt: skip
    options = " ".join(
        [
            f"-p {port}",
            f"-k {cluster.run_dir}",
            "-c listen_addresses=127.0.0.1",
            # A scratch cluster: durability buys nothing here, speed does.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
    )
    cluster.check(
        "pg_ctl", "-D", str(cluster.data), "-o", options, "-l", str(cluster.log), "-w", "-t", "60", "start"
    )

    server = PostgresServer(
        host="127.0.0.1", port=port, role=ROLE, password=password, socket_dir=str(cluster.run_dir)
    )
    connection = server.superuser_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(ROLE)), (password,)
            )
            for database in (PLATFORM_DB, DAGSTER_DB):
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(ROLE)
                    )
                )
    finally:
        connection.close()
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server with the role ``platform`` and the databases ``platform`` and ``dagster``."""
    bin_dir = _bin_dir()
    # mkdtemp makes 0700; the server's user must be able to reach its directories inside.
    base = Path(tempfile.mkdtemp(prefix="platform-pg-", dir="/tmp"))
    base.chmod(0o755)
    cluster = _Cluster(bin_dir, base)
    # Its own session and no inherited pipes: it outlives a killed test run and holds up no reader.
    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(base), *cluster.stop_command()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield _start(cluster, _free_port(), secrets.token_urlsafe(24))
    finally:
        watchdog.terminate()
        try:
            watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # Seen once on a loaded machine; the cluster is stopped below either way.
            watchdog.kill()
            watchdog.wait(timeout=10)
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def platform_db_url(postgres: PostgresServer) -> str:
    """The ``platform`` database emptied to no schema at all (as rendered, password included)."""
    url = postgres.url().render_as_string(hide_password=False)
    downgrade(url, "base")
    return url


@pytest.fixture
def db_url(platform_db_url: str) -> str:
    """The ``platform`` database on the test server, without any schema (for the platform_db suite)."""
    return platform_db_url
