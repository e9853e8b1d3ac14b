"""The local sandbox: one git worktree per task, every command run under bubblewrap."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config.spec import Spec
from harness.errors import InfrastructureError
from harness.git import GitRepository, Worktree
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.limits import DEFAULT_CONFINEMENT, Confinement, commit_check

if TYPE_CHECKING:
    from harness.sandbox.pool import Claimed


class WorktreeSandbox(ConfinedDirectory):
    """A worktree of the spec's repository on the task branch, plus a private scratch dir.

    The user's checkout is untouched: the worktree lives under the run directory, on its own
    branch (or detached, for a look at the base that keeps nothing).
    """

    def __init__(
        self,
        repository: GitRepository,
        root: Path,
        project: Path,
        scratch: Path,
        *,
        keeps_work: bool = True,
        confinement: Confinement = DEFAULT_CONFINEMENT,
        git_dir: Path | None = None,
    ) -> None:
        super().__init__(
            root,
            project,
            scratch,
            readable=[repository.common_dir()],
            # The worktree's .git file stays as harness made it (see Worktree).
            read_only=[root / ".git"],
            limits=confinement.limits,
            read_paths=confinement.read_paths,
        )
        self.repository = repository
        # A worktree just made is read as git made it; one found on disk later is known by the
        # repository's own record of it (`git_dir`), never by its .git file, which the agent's
        # tree holds.
        check = commit_check(confinement.limits)
        self.worktree = (
            Worktree(root, project, git_dir, check)
            if git_dir
            else Worktree.create(root, project, check)
        )
        self.keeps_work = keeps_work

    @classmethod
    def provision(
        cls,
        spec: Spec,
        branch: str | None,
        root: Path,
        scratch: Path,
        confinement: Confinement = DEFAULT_CONFINEMENT,
    ) -> WorktreeSandbox:
        """A new worktree at `root` on a new `branch` at the spec's base commit; with no branch,
        detached at the base (its work is not kept)."""
        repository = GitRepository(Path(spec.git_toplevel))
        root.parent.mkdir(parents=True, exist_ok=True)
        git_dir = repository.add_worktree(root, branch, spec.base_commit)
        scratch.mkdir(parents=True, exist_ok=True)
        keeps_work = branch is not None
        return cls(
            repository,
            root,
            root / spec.subdir,
            scratch,
            keeps_work=keeps_work,
            confinement=confinement,
            git_dir=git_dir,
        )

    @classmethod
    def claimed(
        cls,
        spec: Spec,
        root: Path,
        scratch: Path,
        claimed: Claimed,
        confinement: Confinement = DEFAULT_CONFINEMENT,
    ) -> WorktreeSandbox:
        """A sandbox pool's worktree, already moved to `root` and on the task branch
        (harness.sandbox.pool), known by the git dir the pool recorded when git made it."""
        scratch.mkdir(parents=True, exist_ok=True)
        return cls(
            claimed.repository,
            root,
            root / spec.subdir,
            scratch,
            confinement=confinement,
            git_dir=claimed.git_dir,
        )

    @classmethod
    def reattach(
        cls,
        spec: Spec,
        branch: str,
        root: Path,
        scratch: Path,
        confinement: Confinement = DEFAULT_CONFINEMENT,
    ) -> WorktreeSandbox:
        """A new worktree at `root` on the existing `branch`: its work so far, not the base."""
        repository = GitRepository(Path(spec.git_toplevel))
        root.parent.mkdir(parents=True, exist_ok=True)
        repository.attach_worktree(root, branch)
        scratch.mkdir(parents=True, exist_ok=True)
        return cls(repository, root, root / spec.subdir, scratch, confinement=confinement)

    @classmethod
    def adopt(
        cls, spec: Spec, root: Path, scratch: Path, confinement: Confinement = DEFAULT_CONFINEMENT
    ) -> WorktreeSandbox:
        """The worktree a crashed process left at `root`, taken over as it is."""
        scratch.mkdir(parents=True, exist_ok=True)
        repository = GitRepository(Path(spec.git_toplevel))
        git_dir = repository.worktree_git_dir(root)
        if git_dir is None:
            raise InfrastructureError(f"{root}: not a worktree of {repository.toplevel}")
        return cls(
            repository, root, root / spec.subdir, scratch, confinement=confinement, git_dir=git_dir
        )

    def teardown(self) -> None:
        """Commit anything uncommitted (work is never thrown away), then remove the worktree."""
        if self.root.exists():
            if self.keeps_work:
                self.worktree.commit_all("harness: work in progress at teardown")
            self.repository.remove_worktree(self.root)
        shutil.rmtree(self.scratch, ignore_errors=True)
        for parent in (self.root.parent, self.scratch.parent):
            with contextlib.suppress(OSError):  # still holds another task's sandbox
                parent.rmdir()
