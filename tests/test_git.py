"""harness.git: git on the host runs nothing a task's tree supplies, and its reads.

Each threat test first shows plain git running the agent's program from the same setup, so a
pass means harness's options stopped it, not that the setup never triggered it.
"""

from __future__ import annotations

import stat
import subprocess
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


def nested_repository(tree: Worktree, marker: Path, config: dict[str, str]) -> Path:
    """A repository the agent made inside its worktree, with a commit and its own config (which
    the agent writes: git trusts a repository's own .git/config)."""
    nested = tree.root / "vendor" / "nested"
    nested.mkdir(parents=True)
    plant(tree.root / "tool.sh", marker)
    (nested / ".gitattributes").write_text("* filter=sneaky\n")
    (nested / "f.txt").write_text("one\n")
    git(nested, "init", "-q")
    git(nested, "config", "filter.sneaky.clean", "cat")
    git(nested, "add", "-A")
    git(nested, *IDENTITY, "commit", "-q", "-m", "nested")
    for key, value in config.items():
        git(nested, "config", key, value)
    return nested


@pytest.mark.parametrize(
    "program",
    ["core.fsmonitor", "filter.sneaky.clean", "filter.sneaky.process"],
)
def test_a_nested_repositorys_own_config_runs_nothing_on_the_host(
    repo: Path, tmp_path: Path, program: str
) -> None:
    tree = worktree(repo, tmp_path)
    marker = tmp_path / "ran-on-host"
    tool = str(tree.root / "tool.sh")
    nested = nested_repository(tree, marker, {program: tool})
    (tree.root / "pkg" / "a.py").write_text("x = 2\n")

    base = tree.head()
    head = tree.commit_all("work")  # records the nested repository as a gitlink
    assert head is not None
    (nested / "f.txt").touch()  # stat-dirty: git status in there would have to re-read it
    assert not tree.has_changes()  # a nested repository's own state is not harness's to read
    (tree.root / "pkg" / "a.py").write_text("x = 3\n")
    assert tree.commit_all("again") is not None
    tree.diffstat(base)
    tree.file_changes(base, head)
    tree.keep_uncommitted("refs/harness/kept")
    assert not marker.exists(), f"a nested repository's {program} ran on the host"

    (nested / "f.txt").touch()
    # The control: plain git runs it (a process filter that speaks no protocol fails after).
    subprocess.run(["git", "status", "--porcelain"], cwd=tree.root, capture_output=True)
    if program == "core.fsmonitor":  # harness's own -c reaches git's recursion, too
        subprocess.run(["git", "status", "--porcelain"], cwd=nested, capture_output=True)
    assert marker.exists()


def test_a_filter_the_users_config_defines_does_not_run_on_the_agents_files(
    repo: Path, tmp_path: Path
) -> None:
    # The user's config names a filter by a path relative to the work tree (as the fsmonitor
    # above); the agent's .gitattributes applies it to its files and writes the program.
    git(repo, "config", "filter.tidy.clean", "./tidy.sh")
    tree = worktree(repo, tmp_path)
    marker = tmp_path / "ran-on-host"
    plant(tree.root / "tidy.sh", marker)
    (tree.root / ".gitattributes").write_text("*.py filter=tidy\n")
    (tree.root / "pkg" / "a.py").write_text("x = 2\n")

    assert tree.commit_all("work") is not None
    assert not marker.exists(), "a filter the agent applied ran on the host"
    assert tree.read_file(tree.head(), "pkg/a.py") == "x = 2\n"

    (tree.root / "pkg" / "a.py").write_text("x = 3\n")
    git(tree.root, "add", "-A")
    assert marker.exists()  # the control


def test_reattaching_a_task_branch_runs_no_filter_the_agent_committed(
    repo: Path, tmp_path: Path
) -> None:
    # A resumed task checks its branch out again: the agent's committed .gitattributes apply
    # a filter the user's config names by a path relative to the tree, and the agent's commit
    # holds that program, checked out before the file it filters.
    git(repo, "config", "filter.tidy.smudge", "./tidy.sh")
    tree = worktree(repo, tmp_path)
    marker = tmp_path / "ran-on-host"
    plant(tree.root / "tidy.sh", marker)
    (tree.root / ".gitattributes").write_text("zz.py filter=tidy\n")
    (tree.root / "zz.py").write_text("x = 2\n")
    tree.commit_all("work")
    GitRepository(repo).remove_worktree(tree.root)

    GitRepository(repo).attach_worktree(tmp_path / "again", "task")
    assert (tmp_path / "again" / "zz.py").read_text() == "x = 2\n"
    assert not marker.exists(), "a filter the agent applied ran on the host at checkout"

    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "plain"), "task")
    assert marker.exists()  # the control
