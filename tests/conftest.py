"""Shared fixtures: throwaway git repositories, the demo copied into one, a real sandbox.

Every test works on copies under pytest's tmp dirs; the project's own checkout is only read.
Plain helpers (git, the CLI in-process, TinyProject) are in helpers.py.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TinyProject, make_demo_repo, make_tiny_repo
from pg import PostgresServer, create_database, drop_database

from harness.config.spec import Spec, load_spec
from harness.sandbox.local import WorktreeSandbox


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    return make_demo_repo(tmp_path / "demo")


@pytest.fixture
def tiny(tmp_path: Path) -> TinyProject:
    """A tiny git project and a policy whose only gate is `test -f done.txt`."""
    project = TinyProject(tmp_path)
    make_tiny_repo(project.repo)
    project.specs.mkdir()
    project.write_policy()
    return project


# --- a provisioned sandbox on the tiny repo ---------------------------------------------------


@pytest.fixture
def tiny_spec(tiny: TinyProject) -> Spec:
    return load_spec(tiny.add_spec("sandboxed", replay=False))


@pytest.fixture
def sandbox(tiny: TinyProject, tiny_spec: Spec) -> Iterator[WorktreeSandbox]:
    """A real WorktreeSandbox (git worktree + bubblewrap) on branch harness/t/sandboxed."""
    box = WorktreeSandbox.provision(
        tiny_spec,
        "harness/t/sandboxed",
        tiny.runs / "t" / "worktrees" / "sandboxed",
        tiny.runs / "t" / "scratch" / "sandboxed",
    )
    yield box
    box.teardown()


@pytest.fixture
def http_server() -> Iterator[int]:
    """A real HTTP server on the host's loopback; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# --- the store: a real PostgreSQL server, and a fresh store URL per backend -------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """PostgreSQL from Debian's packages on 127.0.0.1; yields its DSN (superuser `postgres`,
    database `postgres`). Missing binaries fail the test, never skip it."""
    try:
        server = PostgresServer.start()
    except RuntimeError as error:
        pytest.fail(f"cannot start PostgreSQL: {error}")
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL: a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'harness.db'}"
        return
    dsn: str = request.getfixturevalue("postgres_server")
    url = create_database(dsn)
    try:
        yield url
    finally:
        drop_database(dsn, url)
