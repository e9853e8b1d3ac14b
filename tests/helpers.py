"""Helpers the tests share: git, the CLI in-process, the demo copy, the tiny project.

Plain functions and classes (fixtures live in conftest.py); test modules import them directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from cli.main import app

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHES = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache", ".ruff_cache", "runs"
)
IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@t")


# --- git -------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return stdout; a failing git command fails the test."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def git_ok(cwd: Path, *args: str) -> bool:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, timeout=60)
    return done.returncode == 0


def init_repo(path: Path, message: str = "initial") -> Path:
    """`git init -b main` at `path` and commit everything in it with a throwaway identity."""
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, *IDENTITY, "commit", "-q", "-m", message)
    return path


def branch_exists(repo: Path, branch: str) -> bool:
    return git_ok(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")


def worktree_count(repo: Path) -> int:
    listing = git(repo, "worktree", "list", "--porcelain")
    return sum(1 for line in listing.splitlines() if line.startswith("worktree "))


def tree_hashes(root: Path, skip: Sequence[str] = (".git", "runs")) -> dict[str, str]:
    """sha256 of every file under `root` (symlinks by target), skipping top-level `skip`."""
    hashes: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            path = here / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                hashes[rel] = "symlink:" + os.readlink(path)
            else:
                hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def commit_files(repo: Path, files: dict[str, str], message: str = "more") -> None:
    """Write `files` (relative path -> text) into `repo` and commit them."""
    for relpath, text in files.items():
        path = repo / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, *IDENTITY, "commit", "-q", "-m", message)


# --- records ---------------------------------------------------------------------------------


def escalation_problems(path: Path) -> list[dict[str, Any]]:
    """The problem objects of an escalation record: one JSON array in the ```json block that
    follows "As application/problem+json:"."""
    record = path.read_text("utf-8")
    match = re.search(r"As application/problem\+json:\n\n```json\n(.*?)\n```", record, re.DOTALL)
    assert match, f"no problem JSON in {path}:\n{record}"
    problems = json.loads(match.group(1))
    assert isinstance(problems, list) and all(isinstance(p, dict) for p in problems), problems
    return problems


def section(record: str, heading: str) -> str:
    """The body of the Markdown section whose `## ` heading starts with `heading` ("" if none)."""
    for part in record.split("\n## ")[1:]:
        if part.startswith(heading):
            return part.split("\n", 1)[1] if "\n" in part else ""
    return ""


# --- the CLI, in-process ------------------------------------------------------------------------


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(args: Sequence[str], cwd: Path) -> CliResult:
    """`harness ARGS` in-process with `cwd` as the working directory (runs/ defaults to ./runs).

    A crash inside harness is re-raised rather than reported as exit code 1, so a test can never
    mistake a traceback for a task that ended in `error`.
    """
    runner = CliRunner()
    with working_directory(cwd):
        result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


# --- the demo, copied into a fresh repository -------------------------------------------------


def make_demo_repo(dest: Path) -> Path:
    """Copy the working-tree files of examples/, specs/ and policies/ (and the root .gitignore,
    which keeps runs/ out of git status) into `dest`, then `git init -b main` and commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in ("examples", "specs", "policies"):
        shutil.copytree(REPO_ROOT / folder, dest / folder, ignore=CACHES)
    shutil.copy2(REPO_ROOT / ".gitignore", dest / ".gitignore")
    return init_repo(dest, "demo")


# --- a tiny project with shell-command gates, for fast graph-path tests ---------------------

DEFAULT_GATES: list[dict[str, Any]] = [
    {"name": "done", "kind": "test", "command": "test -f done.txt", "timeout_s": 30}
]
FINISH = {"tool": "finish", "args": {"summary": "done"}}
WRITE_DONE = {"tool": "write_file", "args": {"path": "done.txt", "content": "done\n"}}


@dataclass
class TinyProject:
    """tmp/repo (a git repo: README.md, proj/README.md, .gitignore with build/), tmp/specs for
    specs and replay files (outside the repo, `repo: ../repo`), tmp/runs for runs."""

    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def write_policy(
        self,
        gates: list[dict[str, Any]] | None = None,
        name: str = "policy.yaml",
        **overrides: Any,
    ) -> Path:
        policy: dict[str, Any] = {
            "agent": {"kind": "replay"},
            "gates": gates if gates is not None else DEFAULT_GATES,
            "budget": {"max_attempts": 2, "max_steps": 20, "wall_clock_s": 120},
            "concurrency": 2,
            "publish": {"auto_pr_tiers": [1, 2], "protected_paths": [".github/**"]},
        }
        policy |= overrides
        path = self.root / name
        path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
        return path

    def add_spec(
        self,
        spec_id: str,
        *,
        tier: int = 1,
        repo: str = "../repo",
        attempts: list[list[dict[str, Any]]] | None = None,
        replay: bool = True,
        body: str = "Create done.txt.\n",
        **front: Any,
    ) -> Path:
        """A spec plus its replay file; `attempts` are lists of tool steps (default: one
        attempt writing done.txt)."""
        self.specs.mkdir(exist_ok=True)
        meta = {"id": spec_id, "title": f"Task {spec_id}", "tier": tier, "repo": repo, **front}
        path = self.specs / f"{spec_id}.md"
        path.write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}", "utf-8")
        if replay:
            script = {"attempts": [{"steps": s} for s in attempts or [[WRITE_DONE, FINISH]]]}
            (self.specs / f"{spec_id}.replay.yaml").write_text(
                yaml.safe_dump(script, sort_keys=False), encoding="utf-8"
            )
        return path

    def run(self, *args: str, policy: Path | None = None, run_id: str = "r1") -> CliResult:
        """`harness run` on the specs folder (unless args name specs) with this project's runs."""
        targets = list(args) or [str(self.specs)]
        argv = ["run", *targets, "--policy", str(policy or self.root / "policy.yaml")]
        argv += ["--runs-dir", str(self.runs), "--run-id", run_id]
        return run_cli(argv, cwd=self.root)

    def summary(self, run_id: str = "r1") -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.runs / run_id / "summary.json").read_text(encoding="utf-8")
        )
        return data

    def task(self, spec_id: str, run_id: str = "r1") -> dict[str, Any]:
        tasks = {t["spec_id"]: t for t in self.summary(run_id)["tasks"]}
        assert spec_id in tasks, f"{spec_id} not in summary: {sorted(tasks)}"
        task: dict[str, Any] = tasks[spec_id]
        return task

    def events(self, spec_id: str, run_id: str = "r1") -> list[tuple[str, str]]:
        lines = (self.runs / run_id / "events.jsonl").read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines]
        return [(e["node"], e["event"]) for e in events if e["spec_id"] == spec_id]


def make_tiny_repo(repo: Path) -> Path:
    (repo / "proj").mkdir(parents=True)
    (repo / "README.md").write_text("# tiny\n", encoding="utf-8")
    (repo / "proj" / "README.md").write_text("# proj\n", encoding="utf-8")
    (repo / ".gitignore").write_text("build/\n", encoding="utf-8")
    return init_repo(repo)
