"""`harness gc` on what a crashed run's integration services leave: processes, the baseline's
worktree and scratch directories go; logs stay with the run's records."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from helpers import commit_files, git

from harness.run.gc import collect
from harness.sandbox.lifecycle import remove_worktree
from harness.store import EnvRecord, RunRecord, open_store, worker_id


def test_services_of_a_dead_run_are_reaped_and_their_logs_kept(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    services = runs / "r1" / "services"
    tree = services / "baseline-abc" / "tree"
    scratch = services / "baseline-abc" / "scratch" / "pricing"
    task_scratch = services / "tasks" / "fix-pricing" / "pricing"
    logs = services / "baseline-abc" / "logs" / "pricing.log"
    for directory in (tree, scratch, task_scratch, logs.parent):
        directory.mkdir(parents=True)
    logs.write_text("started\n", encoding="utf-8")
    # A service process that outlived its worker: known by the TMPDIR harness gave it.
    env = {**os.environ, "TMPDIR": str(scratch.resolve())}
    orphan = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    store = open_store(f"sqlite:///{tmp_path / 'harness.db'}")
    try:
        # The run's one task is held by a process that is gone: nobody runs it any more.
        store.create_run(
            RunRecord(
                run_id="r1", run_dir=str(runs / "r1"), policy_path="p", policy_text="gates: []"
            ),
            ["fix-pricing"],
        )
        # A pid above Linux's largest (2**22): no process can have it.
        gone_owner = f"{socket.gethostname()}:{2**22 + 12345}:dead"
        assert store.claim_task("r1", gone_owner, 600) is not None

        dry = collect(store, runs, owner=worker_id(), dry_run=True)
        assert {a.target for a in dry if a.kind == "remove-dir"} == {
            str(tree),
            str(scratch.parent),
            str(task_scratch.parent),
        }
        assert orphan.poll() is None and tree.exists()  # a dry run touches nothing

        actions = collect(store, runs, owner=worker_id(), dry_run=False)
        assert ("kill", str(orphan.pid)) in {(a.kind, a.target) for a in actions}
        deadline = time.monotonic() + 10
        while orphan.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orphan.poll() is not None
        assert not tree.exists() and not scratch.exists() and not task_scratch.exists()
        assert logs.read_text(encoding="utf-8") == "started\n"
        assert collect(store, runs, owner=worker_id(), dry_run=False) == []  # idempotent
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()
        store.close()


def test_services_of_a_live_run_are_left_alone(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    tree = runs / "r2" / "services" / "baseline-abc" / "tree"
    tree.mkdir(parents=True)
    store = open_store(f"sqlite:///{tmp_path / 'harness.db'}")
    try:
        store.create_run(
            RunRecord(
                run_id="r2", run_dir=str(runs / "r2"), policy_path="p", policy_text="gates: []"
            ),
            ["t"],
        )
        assert store.claim_task("r2", worker_id(), 600) is not None  # this process: alive
        assert collect(store, runs, owner=worker_id(), dry_run=False) == []
        assert tree.exists()
    finally:
        store.close()


def test_gc_commits_an_orphans_work_to_its_own_branch_when_worktree_names_repeat(
    tmp_path: Path,
) -> None:
    """Two runs with the same spec id share a worktree directory name, which git numbers in
    its own records (worktrees/t, worktrees/t1): the orphan's work must go to its branch."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit_files(repo, {"a.txt": "a\n"}, "base")
    first = (tmp_path / "runs" / "r1" / "worktrees" / "t").resolve()
    second = (tmp_path / "runs" / "r2" / "worktrees" / "t").resolve()
    for root, branch in ((first, "harness/r1/t"), (second, "harness/r2/t")):
        root.parent.mkdir(parents=True)
        git(repo, "worktree", "add", "-q", "-b", branch, str(root), "main")
    (second / "wip.txt").write_text("half done\n", encoding="utf-8")
    env = EnvRecord(
        env_id="r2/t/1",
        run_id="r2",
        spec_id="t",
        kind="worktree",
        expires_at=0,
        artifacts={"repo": str(repo), "branch": "harness/r2/t", "worktree": str(second)},
    )
    remove_worktree(env)
    assert not second.exists() and first.exists()
    assert git(repo, "show", "harness/r2/t:wip.txt") == "half done\n"
    assert git(repo, "rev-parse", "harness/r1/t") == git(repo, "rev-parse", "main")
    assert not (first / "wip.txt").exists()
    assert git(first, "status", "--porcelain") == ""
