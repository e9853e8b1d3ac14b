"""Helpers for the fault-injection tests: the demo made fast, the real `harness` CLI as a
subprocess (so a failpoint's SIGKILL kills a real process, not the test), and readers of what a
run left behind (store records, git worktrees, branches and refs, sandbox processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from helpers import IDENTITY, git, make_demo_repo

from harness.store import Store, TaskRecord, open_store

# The demo's four outcomes under the fast policy: (outcome, attempts). The uninterrupted run
# of the session is checked against these first, so the fast policy is known to be faithful.
EXPECTED = {
    "add-bulk-discount": ("verified", 1),
    "fix-pagination": ("verified", 2),
    "round-tax-per-line": ("escalated", 2),
    "migrate-payment-provider": ("escalated", 0),
}
VERIFIED = sorted(spec for spec, (outcome, _) in EXPECTED.items() if outcome == "verified")
ESCALATED = sorted(spec for spec, (outcome, _) in EXPECTED.items() if outcome == "escalated")

# Only the shop's test gate (and the specs' acceptance tests): one demo batch in seconds. The
# same specs and replays keep the four outcomes (round-tax-per-line still fails its tests on
# both attempts); no base check, which would provision one more worktree per failing gate.
FAST_GATES = [{"name": "tests", "kind": "test", "command": "pytest -q", "timeout_s": 120}]

# The sandbox's PATH starts with harness's venv, whose pytest loads every installed plugin
# (harness itself turns off langsmith's); anyio's costs ~0.4 s per pytest start, and the shop
# uses none of them.
NO_PLUGINS = 'addopts = "-p no:anyio"\n'

HARNESS = [sys.executable, "-m", "cli.main"]
TIMEOUT_S = 180


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        old = merged.get(key)
        merged[key] = (
            _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return merged


def write_fast_policy(repo: Path, path: Path, **overrides: Any) -> Path:
    """policies/demo.yaml with FAST_GATES, concurrency 4 and `overrides` merged in."""
    policy = yaml.safe_load((repo / "policies" / "demo.yaml").read_text(encoding="utf-8"))
    policy |= {"gates": FAST_GATES, "concurrency": 4, "feedback": {"check_base": False}}
    policy = _merge(policy, overrides)
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Demo:
    """A copy of the demo in its own git repository, a fast policy beside it (outside the
    repository) and a store; runs go to repo/runs."""

    repo: Path
    policy: Path
    store_url: str

    @property
    def runs(self) -> Path:
        return self.repo / "runs"

    # --- the CLI, as a subprocess ---------------------------------------------------------
    def env(self, failpoints: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
        if failpoints:
            env["HARNESS_FAILPOINTS"] = failpoints
        return env

    def argv(self, *args: str) -> list[str]:
        return [*HARNESS, *args, "--runs-dir", "runs", "--store", self.store_url]

    def harness(
        self, *args: str, failpoints: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            cwd=self.repo,
            env=self.env(failpoints),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def start(self, *args: str, failpoints: str | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.repo,
            env=self.env(failpoints),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_args(self, run_id: str, *extra: str, specs: list[str] | None = None) -> list[str]:
        """`harness run` on the four demo specs (named: specs/ may hold others)."""
        targets = specs or [f"specs/{spec}.md" for spec in EXPECTED]
        return ["run", *targets, "--policy", str(self.policy), "--run-id", run_id, *extra]

    def run(
        self, run_id: str, *extra: str, failpoints: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.harness(*self.run_args(run_id, *extra), failpoints=failpoints)

    def resume(self, run_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.harness("resume", run_id, *extra)

    # --- what a run left --------------------------------------------------------------------
    def summary(self, run_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.runs / run_id / "summary.json").read_text("utf-8"))
        return data

    def outcomes(self, run_id: str) -> dict[str, tuple[Any, ...]]:
        """Per task: outcome, attempts, reason, and each gate run's (name, attempt, passed)."""
        return {
            t["spec_id"]: (
                t["outcome"],
                t["attempts"],
                t["reason"],
                [(g["name"], g["attempt"], g["passed"]) for g in t["gates"]],
            )
            for t in self.summary(run_id)["tasks"]
        }

    def events(self, run_id: str) -> list[dict[str, Any]]:
        path = self.runs / run_id / "events.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        # The last line may be half-written by a worker that is still running.
        return [json.loads(line) for line in lines if line.endswith("}")]

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        opened = open_store(self.store_url)
        try:
            yield opened
        finally:
            opened.close()

    def tasks(self, run_id: str) -> dict[str, TaskRecord]:
        with self.store() as store:
            return {task.spec_id: task for task in store.tasks(run_id)}

    def worktrees(self) -> list[str]:
        listing = git(self.repo, "worktree", "list", "--porcelain")
        return [
            line.split(" ", 1)[1] for line in listing.splitlines() if line.startswith("worktree ")
        ]

    def branches(self) -> list[str]:
        return git(self.repo, "branch", "--list", "harness/*", "--format=%(refname:short)").split()

    def harness_refs(self) -> list[str]:
        return git(self.repo, "for-each-ref", "--format=%(refname)", "refs/harness/").split()


def make_fast_demo(root: Path, store_url: str, **policy: Any) -> Demo:
    """The demo copied, made fast: no pytest plugins in the shop, and the replays without
    their `run` steps (the agent checking its own work with pytest, ruff and mypy: ~6 s of CPU
    per batch whose output the replay ignores; the gates decide every outcome)."""
    repo = make_demo_repo(root / "demo")
    pyproject = repo / "examples" / "shop" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text(encoding="utf-8") + NO_PLUGINS, encoding="utf-8")
    for spec in EXPECTED:
        path = repo / "specs" / f"{spec}.replay.yaml"
        if path.exists():
            script = yaml.safe_load(path.read_text(encoding="utf-8"))
            for attempt in script["attempts"]:
                attempt["steps"] = [step for step in attempt["steps"] if step["tool"] != "run"]
            path.write_text(yaml.safe_dump(script, sort_keys=False), encoding="utf-8")
    git(repo, *IDENTITY, "commit", "-q", "-am", "demo, made fast")
    return Demo(repo, write_fast_policy(repo, root / "fast.yaml", **policy), store_url)


# --- processes -------------------------------------------------------------------------------


def sandbox_processes(run_dir: Path) -> list[int]:
    """Live processes started for one of the run's sandboxes: their TMPDIR is one of the run's
    scratch directories (how harness itself recognises them). Zombies are not counted."""
    scratch = f"TMPDIR={run_dir.resolve() / 'scratch'}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(item.startswith(scratch) for item in environ):
            found.append(int(entry.name))
    return found


def start_orphan(scratch: Path) -> subprocess.Popen[bytes]:
    """A `sleep 600` that looks like a sandboxed command which outlived its worker."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(scratch)}
    return subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGKILL a process this test started (if still running) and reap it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def freeze(process: subprocess.Popen[Any], store_url: str) -> None:
    """SIGSTOP `process` (alive, its leases no longer heartbeated), at a moment it is in no
    store transaction: a frozen SQLite writer blocks every other process on the file, and a
    frozen PostgreSQL transaction keeps its row locks; no lease helps with either, and neither
    is what the lease tests are about."""
    for _ in range(200):
        os.kill(process.pid, signal.SIGSTOP)
        wait_for(lambda: _state(process.pid) == "T", "the worker to stop", 10)
        if _store_idle(store_url):
            return
        os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("the worker always held the SQLite write lock when stopped")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _store_idle(url: str) -> bool:
    """No other connection is in a transaction (SQLite: the write lock can be taken)."""
    if url.startswith("postgresql://"):
        with psycopg.connect(url, autocommit=True) as pg:
            busy = pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle'"
            ).fetchone()
        return busy is not None and busy[0] == 0
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{stderr}"
    return lines[0]
