"""The Sandbox protocols: where an agent's tools and the gates run. One file per backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from harness.git import Worktree

if TYPE_CHECKING:
    from harness.sandbox.bridge import Egress


@dataclass(frozen=True)
class Completed:
    """A finished command. `output` is stdout and stderr interleaved, capped; see `log_path`."""

    exit_code: int
    output: str
    duration_s: float
    timed_out: bool = False
    output_cut_bytes: int = 0
    """Bytes left out of `output` (the middle of a long output); the log file has all of it."""
    log_path: Path | None = None


# Every sandbox runs pytest with these options. no:cacheprovider keeps .pytest_cache out of the
# worktree; no:langsmith_plugin: harness's own venv (langgraph brings langsmith) carries a
# pytest plugin that adds ~2 s of imports to every pytest run resolving to that venv.
PYTEST_ADDOPTS = "-p no:cacheprovider -p no:langsmith_plugin"


class PathOutsideSandbox(ValueError):
    """A path that is absolute, escapes with `..`, or is a symlink resolving outside the tree."""


class Sandbox(Protocol):
    path: Path
    """The spec's repo directory inside the sandbox's worktree: the cwd of every command."""
    scratch: Path
    """A private writable directory outside the worktree (HOME, TMPDIR, tool caches)."""
    isolation: str
    """How commands are confined, e.g. "bubblewrap" or "none"; shown in records."""

    def run(
        self,
        command: str,
        timeout_s: float,
        log_path: Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        egress: Egress | None = None,
    ) -> Completed:
        """Run a shell command in `path`; killed after `timeout_s`; full output to `log_path`.

        `env` adds variables to the scrubbed environment. The network is cut off, unless
        `egress` names host endpoints to bridge in (an integration gate's routed services, a
        CLI agent's allowlisting proxy); denials harness sees land in `egress.denials`.
        """
        ...

    def read(self, relpath: str) -> str: ...

    def write(self, relpath: str, content: str) -> None: ...

    def teardown(self) -> None:
        """Release everything the sandbox holds. Idempotent; never discards committed work."""
        ...


class TaskSandbox(Sandbox, Protocol):
    """A task's sandbox: a Sandbox whose tree is a worktree on the task's branch. The graph
    commits each attempt, resets to the committed tree before verifying, and reads the
    change against the base through `worktree`, whose git directory harness recorded before
    any agent ran (see harness.git.Worktree)."""

    worktree: Worktree


def resolve_inside(root: Path, relpath: str, *, writing: bool = False) -> Path:
    """`relpath` under `root`, refusing anything that would resolve outside it, and, when
    `writing`, anything under a `.git` (git metadata is harness's, not the agent's)."""
    if writing and ".git" in Path(relpath).parts:
        raise PathOutsideSandbox(f"{relpath!r} is git metadata; refused")
    if not relpath or Path(relpath).is_absolute():
        raise PathOutsideSandbox(f"{relpath!r}: use a path relative to the repository root")
    resolved_root = root.resolve()
    candidate = (resolved_root / relpath).resolve()
    if candidate != resolved_root and resolved_root not in candidate.parents:
        raise PathOutsideSandbox(f"{relpath!r} resolves outside the repository; refused")
    return candidate
