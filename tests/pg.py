"""A real, throwaway PostgreSQL server from Debian's packages, for tests and benchmarks.

    server = PostgresServer.start()      # initdb + pg_ctl start on 127.0.0.1:<free port>
    server.dsn                           # postgresql://postgres@127.0.0.1:<port>/postgres
    create_database(server.dsn)          # a fresh empty database; its URL
    server.stop()                        # pg_ctl stop -m immediate, data directory removed

Runs the server as the `postgres` system user when we are root (PostgreSQL refuses to run as
root), else as ourselves. No fsync unless `start(durable=True)` (bench/store_latency.py): test
data is thrown away anyway.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

INSTALL_HINT = "apt-get install postgresql (scripts/install-system-deps does that)"


def find_bindir() -> Path:
    """The highest installed version's bin directory (not /usr/local/bin's wrappers)."""
    found = [
        bindir
        for bindir in Path("/usr/lib/postgresql").glob("*/bin")
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()
    ]
    if not found:
        raise RuntimeError(
            f"PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
        )

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))

    return max(found, key=version)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    """Holds the data directory, the log and the unix socket."""
    port: int
    user: str | None
    """The system user the server runs as (None: ourselves)."""

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresServer:
        bindir = find_bindir()
        root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        user = "postgres" if os.geteuid() == 0 else None
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = cls(bindir, root, free_port(), user)
        server._run(
            "initdb",
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c max_connections=300"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            server._run(
                "pg_ctl", "start", "-D", str(root / "data"), "-l", str(root / "log"),
                "-o", options, "-w", "-t", "60",
            )  # fmt: skip
        except RuntimeError as error:
            log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"{error}\n{log[-2000:]}") from None
        return server

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            user=self.user,
            group=self.user,
            cwd=self.root,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def create_database(self) -> str:
        return create_database(self.dsn)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def create_database(dsn: str) -> str:
    """A new empty database on the server at `dsn`; its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + f"/{name}"


def drop_database(dsn: str, url: str) -> None:
    """Drop the database `url` names, even with connections still open to it."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
