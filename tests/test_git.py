"""harness.git: git on the host runs nothing a task's tree supplies, and its reads.

Each threat test first shows plain git running the agent's program from the same setup, so a
pass means harness's options stopped it, not that the setup never triggered it.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from helpers import IDENTITY, git, init_repo

from harness.errors import InfrastructureError
from harness.git import GitRepository, Worktree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("x = 1\n")
    (root / "README.md").write_text("readme\n")
    return init_repo(root)


def worktree(repo: Path, tmp_path: Path, branch: str = "task") -> Worktree:
    root = tmp_path / "wt"
    GitRepository(repo).add_worktree(root, branch, git(repo, "rev-parse", "HEAD").strip())
    return Worktree.create(root, root)


def plant(path: Path, marker: Path) -> None:
    """An executable the agent wrote, which leaves `marker` behind when it runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_hooks_under_a_relative_hooks_path_in_the_tree_do_not_run(
    repo: Path, tmp_path: Path
) -> None:
    git(repo, "config", "core.hooksPath", ".githooks")  # as husky sets it: relative to the tree
    tree = worktree(repo, tmp_path)
    marker = tmp_path / "ran-on-host"
    for hook in ("prepare-commit-msg", "post-commit", "reference-transaction"):
        plant(tree.root / ".githooks" / hook, marker)
    (tree.root / "pkg" / "a.py").write_text("x = 2\n")

    assert tree.commit_all("work") is not None
    tree.keep_uncommitted("refs/harness/kept")
    assert not marker.exists(), "a hook written in the worktree ran on the host"

    git(tree.root, *IDENTITY, "commit", "-q", "--allow-empty", "-m", "plain git")
    assert marker.exists()  # the control: plain git runs it


def test_an_fsmonitor_relative_to_the_tree_does_not_run(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "core.fsmonitor", "./fsmonitor.sh")  # git runs it in the work tree
    tree = worktree(repo, tmp_path)
    marker = tmp_path / "ran-on-host"
    plant(tree.root / "fsmonitor.sh", marker)

    assert tree.has_changes()
    tree.commit_all("work")
    assert not marker.exists(), "an fsmonitor written in the worktree ran on the host"

    git(tree.root, "status", "--porcelain")
    assert marker.exists()  # the control


def test_worktree_reads_commits_through_the_recorded_git_dir(repo: Path, tmp_path: Path) -> None:
    tree = worktree(repo, tmp_path)
    base = tree.head()
    (tree.root / "pkg" / "a.py").rename(tree.root / "pkg" / "b.py")
    (tree.root / "pkg" / "c.py").write_text("y = 1\nz = 2\n")
    (tree.root / "README.md").unlink()
    head = tree.commit_all("work")
    assert head is not None
    (tree.root / ".git").write_text(f"gitdir: {repo / '.git'}\n")  # forged: main, at base

    assert tree.resolve("HEAD") == head and tree.resolve(base[:10]) == base
    assert sorted(tree.file_changes(base, head), key=str) == sorted(
        [("README.md", None), (None, "pkg/c.py"), ("pkg/a.py", "pkg/b.py")], key=str
    )
    assert tree.changed_lines(base, head, ["pkg/c.py"]) == ([], [(1, "y = 1"), (2, "z = 2")])
    assert tree.read_file(head, "pkg/c.py") == "y = 1\nz = 2\n"
    assert tree.read_file(head, "README.md") is None
    with pytest.raises(InfrastructureError, match=r"^git rev-parse .*no-such-ref"):
        tree.resolve("no-such-ref")


def test_repository_reads_a_file_at_a_commit_and_lists_files(repo: Path, tmp_path: Path) -> None:
    repository = GitRepository(repo)
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "pkg" / "a.py").write_text("x = 3\n")
    (repo / "pkg" / "new.py").write_text("")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "pkg" / "debug.log").write_text("")

    assert repository.read_file(first, "pkg/a.py") == "x = 1\n"
    assert repository.read_file(first, "pkg/new.py") is None
    assert sorted(repository.listed_files(repo / "pkg") or []) == [Path("a.py"), Path("new.py")]
    outside = tmp_path / "plain"
    outside.mkdir()
    assert GitRepository.listed_files(outside) is None
