"""The tree review: a change adding a gitlink, a nested .git or a symlink out of the worktree is
refused with the finding named, through `review_diff` and through the real task graph; and
harness's own git on the host runs nothing the nested repository's config names meanwhile."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import IDENTITY, TinyProject, git, init_repo

# The task graph's scripted-sandbox harness; its fixtures are imported to be requested here.
from test_task_graph import AGENT_TO_VERIFIED, Step, Task, ok, repo, run_task  # noqa: F401

from harness.config.policy import GuardConfig, PublishConfig
from harness.config.spec import load_spec
from harness.gates.diff_review import review_diff
from harness.git import GitRepository, Worktree

ESCALATED_AT_GUARD = ["triage", "provision", "agent", "gates", "guard", "escalate", "teardown"]


def make_nested_repository(where: Path, marker: Path) -> None:
    """What an agent can do in its worktree: a repository with a commit, whose own config
    names a clean filter (a program it wrote) for every file: git trusts that config."""
    where.mkdir(parents=True)
    tool = where.parent / "tool.sh"
    tool.write_text(f"#!/bin/sh\ntouch {marker}\ncat\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    (where / ".gitattributes").write_text("* filter=sneaky\n")
    (where / "f.txt").write_text("one\n")
    git(where, "init", "-q")
    git(where, "config", "filter.sneaky.clean", "cat")
    git(where, "add", "-A")
    git(where, *IDENTITY, "commit", "-q", "-m", "nested")
    git(where, "config", "filter.sneaky.clean", str(tool))
    git(where, "config", "core.fsmonitor", str(tool))


@pytest.fixture
def worktree(tmp_path: Path) -> Worktree:
    main = tmp_path / "main"
    main.mkdir()
    (main / "app.py").write_text("x = 1\n")
    init_repo(main)
    root = tmp_path / "wt"
    GitRepository(main).add_worktree(root, "task", git(main, "rev-parse", "HEAD").strip())
    # The spec's base is the repository's HEAD when it loads: before any work.
    spec_path = tmp_path / "spec.md"
    front = {"id": "t", "title": "A task", "tier": 1, "repo": str(main)}
    spec_path.write_text(f"---\n{yaml.safe_dump(front)}---\nDo it.\n")
    return Worktree.create(root, root)


def review(tree: Worktree, **guard: object) -> tuple[str | None, list[str | None]]:
    spec = load_spec(tree.root.parent / "spec.md")
    found = review_diff(tree, spec, GuardConfig.model_validate(guard), PublishConfig())
    return found.refusal, [p.code for p in found.problems]


def test_a_committed_nested_repository_is_refused_and_runs_nothing(
    worktree: Worktree, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-on-host"
    make_nested_repository(worktree.root / "vendor" / "nested", marker)
    base = worktree.head()
    assert worktree.commit_all("work") is not None
    (worktree.root / "vendor" / "nested" / "f.txt").touch()
    worktree.has_changes()
    worktree.commit_all("again")

    refusal, codes = review(worktree)
    assert codes == ["gitlink_added"]
    assert refusal is not None and refusal.startswith("tree review: 1 finding(s) (gitlink_added)")
    assert worktree.entries_added(base, "HEAD")[0][0] == "160000"
    assert not marker.exists(), "the nested repository's own config ran on the host"


def test_a_symlink_out_of_the_worktree_is_refused_and_one_inside_is_not(
    worktree: Worktree,
) -> None:
    (worktree.root / "docs").mkdir()
    os.symlink("/etc/passwd", worktree.root / "passwd")
    os.symlink("../../outside", worktree.root / "docs" / "up")
    os.symlink("../app.py", worktree.root / "docs" / "app.py")  # inside: fine
    worktree.commit_all("links")

    refusal, codes = review(worktree)
    assert codes == ["symlink_outside", "symlink_outside"]
    assert refusal is not None and "symlink_outside" in refusal


def test_a_nested_git_path_in_the_tree_is_refused(worktree: Worktree) -> None:
    # git add refuses `.git` paths, but a tree object can name one (an agent that can run git
    # plumbing makes such a commit), and a checkout of it writes a nested repository's config.
    root = worktree.root
    blob = git_with_input(root, "[core]\n", "hash-object", "-w", "--stdin")
    dot_git = git_with_input(root, f"100644 blob {blob}\tconfig\n", "mktree")
    sub = git_with_input(root, f"040000 tree {dot_git}\t.git\n", "mktree")
    listing = git(root, "ls-tree", "HEAD") + f"040000 tree {sub}\tsub\n"
    top = git_with_input(root, listing, "mktree")
    commit = git(root, *IDENTITY, "commit-tree", top, "-p", "HEAD", "-m", "sneaky").strip()
    git(root, "update-ref", "HEAD", commit)

    _, codes = review(worktree)
    assert "nested_repository" in codes


def git_with_input(cwd: Path, text: str, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_guard_allow_lets_a_named_kind_through(worktree: Worktree) -> None:
    os.symlink("/etc/hostname", worktree.root / "host")
    worktree.commit_all("link")
    assert review(worktree, allow=["symlink_outside"]) == (None, [])


def test_flag_does_not_let_the_tree_review_through(worktree: Worktree) -> None:
    os.symlink("/etc/hostname", worktree.root / "host")
    worktree.commit_all("link")
    refusal, codes = review(worktree, action="flag")
    assert refusal is not None and codes == ["symlink_outside"]


def nested_repository_step(marker: Path) -> Step:
    return lambda sandbox: make_nested_repository(sandbox.path / "vendor" / "nested", marker)


def test_the_graph_escalates_a_nested_repository_and_the_host_runs_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run: Callable[..., Task] = request.getfixturevalue("run_task")
    marker = tmp_path / "ran-on-host"
    task = run([ok()], [([nested_repository_step(marker)], "finished")])
    assert task.path == ESCALATED_AT_GUARD
    assert task.final["reason"].startswith("tree review: 1 finding(s) (gitlink_added)")
    assert [p.code for p in task.final["problems"]] == ["gitlink_added"]
    assert not marker.exists(), "the nested repository's own config ran on the host"
    # The control: plain git in that worktree runs the agent's filter.
    nested = task.sandboxes.sandbox.path / "vendor" / "nested"
    (nested / "f.txt").touch()
    subprocess.run(["git", "status"], cwd=nested, capture_output=True)
    assert marker.exists()


def test_the_graph_verifies_a_symlink_once_policy_allows_it(request: pytest.FixtureRequest) -> None:
    run: Callable[..., Task] = request.getfixturevalue("run_task")
    link: Step = lambda sandbox: os.symlink("/etc/hostname", sandbox.path / "host")  # noqa: E731
    task = run([ok(), ok()], [([link], "finished")], guard={"allow": ["symlink_outside"]})
    assert task.path == ["triage", "provision", *AGENT_TO_VERIFIED]


@pytest.mark.parametrize("kind", ["file naming a missing directory", "directory with no commit"])
def test_a_nested_git_git_add_skips_is_still_found_on_disk(worktree: Worktree, kind: str) -> None:
    sub = worktree.root / "sub"
    sub.mkdir()
    if kind.startswith("file"):
        (sub / ".git").write_text("gitdir: /nonexistent\n")
    else:
        (sub / ".git").mkdir()
        (sub / ".git" / "config").write_text("[core]\n\tfsmonitor = /bin/false\n")
    (sub / "x.txt").write_text("x\n")
    worktree.commit_all("work")  # commits sub/x.txt, not the .git beside it

    refusal, codes = review(worktree)
    assert codes == ["nested_repository"]
    assert refusal is not None and "nested_repository" in refusal


# The issue's exploit, as a command agent in the real sandbox: a nested repository whose own
# config names the agent's program as its fsmonitor and as a clean filter for every file, the
# program writing a marker where only the host can (the sandbox sees that path read-only).
NESTED_EXPLOIT = (
    "printf '#!/bin/sh\\ntouch %s\\ncat\\n' > tool.sh && chmod +x tool.sh && "
    "mkdir -p vendor/nested && cd vendor/nested && git init -q && "
    "echo '* filter=sneaky' > .gitattributes && echo one > f.txt && "
    "git -c filter.sneaky.clean=cat add -A && "
    "git -c user.name=a -c user.email=a@a commit -qm n && "
    'git config core.fsmonitor "$PWD/../../tool.sh" && '
    'git config filter.sneaky.clean "$PWD/../../tool.sh" && '
    "cd ../.. && echo made > done.txt"
)


def test_the_issues_nested_repository_exploit_end_to_end(tiny: TinyProject, tmp_path: Path) -> None:
    marker = tmp_path / "host-only" / "ran-on-host"
    marker.parent.mkdir()
    command = ["sh", "-c", NESTED_EXPLOIT % marker]
    tiny.write_policy(agent={"kind": "command", "command": command})
    tiny.add_spec("nested", replay=False)
    result = tiny.run()

    assert not marker.exists(), "the agent's program ran on the host"
    assert result.exit_code == 0, result.stderr
    task = tiny.task("nested")
    assert task["outcome"] == "escalated"
    assert task["reason"].startswith("tree review: 1 finding(s) (gitlink_added)")
