"""The local sandbox: one git worktree per task, every command run under bubblewrap."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping
from pathlib import Path

from harness.gitrepo import GitRepository, Worktree
from harness.sandbox import Completed, resolve_inside
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.process import run_process
from harness.spec import Spec


class WorktreeSandbox:
    """A worktree of the spec's repository on the task branch, plus a private scratch dir.

    The user's checkout is untouched: the worktree lives under the run directory, on its own
    branch. When bubblewrap is unavailable commands still run, unconfined, and `isolation` says
    "none" so the records show it.
    """

    def __init__(self, repository: GitRepository, root: Path, project: Path, scratch: Path) -> None:
        self.repository = repository
        self.root = root
        """The worktree's top directory; `path` is the spec's repo directory inside it."""
        self.path = project
        self.worktree = Worktree.create(root, project)
        self.scratch = scratch
        self._git_common_dir = repository.common_dir()
        probe = bwrap.probe()
        self._bwrap = probe.reason if probe.available else None
        self.isolation = "bubblewrap" if probe.available else "none"

    @classmethod
    def provision(cls, spec: Spec, branch: str, root: Path, scratch: Path) -> WorktreeSandbox:
        """Create `branch` at the spec's base commit, checked out in a new worktree at `root`."""
        repository = GitRepository(Path(spec.git_toplevel))
        root.parent.mkdir(parents=True, exist_ok=True)
        repository.add_worktree(root, branch, spec.base_commit)
        scratch.mkdir(parents=True, exist_ok=True)
        return cls(repository, root, root / spec.subdir, scratch)

    def run(
        self,
        command: str,
        timeout_s: float,
        log_path: Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> Completed:
        full_env = bwrap.sandbox_env(self.scratch) | dict(env or {})
        if self._bwrap is None:
            argv = ["/bin/sh", "-c", command]
        else:
            argv = bwrap.wrap(
                self._bwrap,
                command,
                cwd=self.path,
                writable=[self.root, self.scratch],
                readable=bwrap.needed_host_paths(self._git_common_dir),
                # The worktree's .git file stays as harness made it (see Worktree).
                read_only=[self.root / ".git"],
                network=network,
            )
        return run_process(
            argv, cwd=self.path, env=full_env, timeout_s=timeout_s, log_path=log_path
        )

    def read(self, relpath: str) -> str:
        return resolve_inside(self.path, relpath).read_text(encoding="utf-8", errors="replace")

    def write(self, relpath: str, content: str) -> None:
        target = resolve_inside(self.path, relpath, writing=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")

    def teardown(self) -> None:
        """Commit anything uncommitted (work is never thrown away), then remove the worktree."""
        if self.root.exists():
            self.worktree.commit_all("harness: work in progress at teardown")
            self.repository.remove_worktree(self.root)
        shutil.rmtree(self.scratch, ignore_errors=True)
        for parent in (self.root.parent, self.scratch.parent):
            with contextlib.suppress(OSError):  # still holds another task's sandbox
                parent.rmdir()
