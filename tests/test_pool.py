"""The sandbox pool (harness.sandbox.pool): a claimed sandbox is indistinguishable from a fresh
one, no two tasks get the same entry, a stale pool is never used, and a crash with a
half-filled pool leaves nothing behind after `harness gc`. Real git, a real SQLite store, real
worktrees on a tiny repository."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import IDENTITY, commit_files, git, make_tiny_repo, run_cli

from harness.config.policy import TTLConfig
from harness.config.spec import Spec, load_spec
from harness.run.ledger import RunLedger
from harness.sandbox.lifecycle import TaskSandboxes
from harness.sandbox.limits import DEFAULT_CONFINEMENT, SandboxPoolConfig
from harness.sandbox.pool import KIND, RUN_SUFFIX, Claimed, SandboxPool
from harness.store import Store, open_store, worker_id

RUN = "r1"
WAIT_S = 60.0  # how long a test waits for the background thread (a loaded CI box is slow)


@dataclass(frozen=True)
class Layout:
    runs: Path

    @property
    def run_id(self) -> str:
        return RUN

    def branch(self, spec_id: str) -> str:
        return f"harness/{RUN}/{spec_id}"

    def worktree_dir(self, spec_id: str) -> Path:
        return self.runs / RUN / "worktrees" / spec_id

    def scratch_dir(self, spec_id: str) -> Path:
        return self.runs / RUN / "scratch" / spec_id


@dataclass
class World:
    root: Path
    repo: Path
    runs: Path
    store: Store
    owner: str

    def pool(self, size: int = 2, *, keep_unknown: bool = False) -> SandboxPool:
        config = SandboxPoolConfig(size=size)
        home = self.runs / RUN / "pool"
        return SandboxPool(
            self.store,
            home,
            RUN,
            owner=self.owner,
            lease_s=60,
            config=config,
            keep_unknown=keep_unknown,
        )

    def sandboxes(self, pool: SandboxPool | None) -> TaskSandboxes:
        (self.runs / RUN).mkdir(parents=True, exist_ok=True)
        ledger = RunLedger(self.runs / RUN, RUN)
        return TaskSandboxes(
            self.store,
            ledger,
            Layout(self.runs),
            owner=self.owner,
            lease_s=60,
            ttl=TTLConfig(),
            confinement=DEFAULT_CONFINEMENT,
            pool=pool,
        )

    def spec(self, spec_id: str) -> Spec:
        specs = self.root / "specs"
        specs.mkdir(exist_ok=True)
        path = specs / f"{spec_id}.md"
        path.write_text(
            f"---\nid: {spec_id}\ntitle: t\ntier: 1\nrepo: ../repo/proj\n---\nNothing.\n",
            encoding="utf-8",
        )
        return load_spec(path)

    def entries(self, status: str | None = None) -> list[str]:
        """Pool records (env ids), live ones, or only those in `status`."""
        return [
            env.env_id
            for env in self.store.envs(run_id=RUN + RUN_SUFFIX, live=True)
            if env.kind == KIND and (status is None or env.status == status)
        ]

    def wait_ready(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.entries("ready")) < count:
            assert time.monotonic() < deadline, f"pool never had {count} ready entries"
            time.sleep(0.02)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    repo = make_tiny_repo(tmp_path / "repo")
    # What a checkout must reproduce exactly: nested files, an executable, a symlink, and the
    # ignore rules (a pool entry must carry no ignored or untracked file either).
    commit_files(
        repo,
        {"proj/pkg/mod.py": "X = 1\n", "proj/run.sh": "#!/bin/sh\necho hi\n"},
        "more files",
    )
    (repo / "proj" / "run.sh").chmod(0o755)
    (repo / "proj" / "link").symlink_to("pkg/mod.py")
    git(repo, "add", "--all")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x and link")
    store = open_store(f"sqlite:///{tmp_path / 'runs' / 'harness.db'}")
    try:
        yield World(tmp_path, repo, tmp_path / "runs", store, worker_id())
    finally:
        store.close()


def snapshot(root: Path) -> dict[str, object]:
    """Everything a task could tell apart about its worktree."""
    files = sorted(
        str(path.relative_to(root)) + ("@" if path.is_symlink() else "")
        for path in root.rglob("*")
        if path.name != ".git"
    )
    modes = {name: os.lstat(root / name.rstrip("@")).st_mode for name in files}
    status = git(root, "status", "--porcelain", "--ignored", "--untracked-files=all")
    return {
        "files": files,
        "modes": modes,
        "index": git(root, "ls-files", "-s"),
        "status": status,
        "head": git(root, "rev-parse", "HEAD"),
        "branch": git(root, "rev-parse", "--abbrev-ref", "HEAD").rsplit("/", 1)[0],
    }


def test_a_claimed_sandbox_is_the_same_as_a_fresh_one(world: World) -> None:
    pool = world.pool(size=1)
    pooled, fresh = world.sandboxes(pool), world.sandboxes(None)
    spec_a, spec_b = world.spec("a"), world.spec("b")
    try:
        pool.warm([(spec_a.git_toplevel, spec_a.base_commit)])
        world.wait_ready(1)
        entry = world.entries("ready")[0]
        claimed = pooled.get(spec_a)
        made = fresh.get(spec_b)
        # It came from the pool: its record is deleted, its worktree is the task's now.
        assert world.store.get_env(entry).status == "deleted"  # type: ignore[union-attr]
        assert world.store.get_env(entry).artifacts["claimed_as"] == str(claimed.root)  # type: ignore[union-attr]
        assert (
            claimed.worktree.branch() == "harness/r1/a" and made.worktree.branch() == "harness/r1/b"
        )
        assert snapshot(claimed.root) == snapshot(made.root)
        assert git(claimed.root, "status", "--porcelain", "--ignored") == ""
        # Harness's own view of it: the git dir the pool recorded, the task's branch at the base.
        assert claimed.worktree.head() == spec_a.base_commit
        assert (
            claimed.worktree.git_dir
            == Path(
                git(world.repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()
            )
            / "worktrees"
            / claimed.worktree.git_dir.name
        )
        # And it works as a task's sandbox: a commit lands on the task's branch.
        (claimed.root / "proj" / "new.txt").write_text("x\n", encoding="utf-8")
        sha = claimed.worktree.commit_all("work")
        assert git(world.repo, "rev-parse", "refs/heads/harness/r1/a").strip() == sha
    finally:
        pool.close()
        pooled.release("a", verified=False)
        fresh.release("b", verified=False)
    assert world.entries() == [] and not any((world.runs / RUN / "pool").glob("*"))
    assert len(git(world.repo, "worktree", "list").splitlines()) == 1


def test_concurrent_claims_never_share_an_entry(world: World) -> None:
    pool = world.pool(size=3)
    spec = world.spec("c")
    key = (spec.git_toplevel, spec.base_commit)
    try:
        pool.warm([key] * 3)
        world.wait_ready(3)
        start = threading.Barrier(6)
        got: dict[int, Claimed | None] = {}

        def claim(n: int) -> None:
            start.wait()
            root = world.runs / RUN / "worktrees" / f"t{n}"
            got[n] = pool.claim(*key, f"harness/r1/t{n}", root)

        threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        claimed = {n: got_n.git_dir for n, got_n in got.items() if got_n is not None}
        assert len(claimed) == 3 and len(set(claimed.values())) == 3
        for n in claimed:
            root = world.runs / RUN / "worktrees" / f"t{n}"
            assert git(root, "rev-parse", "--abbrev-ref", "HEAD").strip() == f"harness/r1/t{n}"
        assert world.entries() == []  # each record deleted once, none handed out twice
    finally:
        pool.close()


def test_a_stale_pool_is_never_used(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="harness.sandbox.pool")
    pool = world.pool(size=2, keep_unknown=True)  # as `harness serve` keeps it
    sandboxes = world.sandboxes(pool)
    old = world.spec("old")
    try:
        assert pool.claim(old.git_toplevel, old.base_commit, "x", world.root / "x") is None
        world.wait_ready(2)
        stale = set(world.entries())
        # The base moves (a new commit on the branch specs follow): the old entries go.
        commit_files(world.repo, {"proj/pkg/mod.py": "X = 2\n"}, "moved")
        moved = world.spec("moved")
        box = sandboxes.get(moved)
        assert box.worktree.head() == moved.base_commit != old.base_commit
        assert git(box.root, "status", "--porcelain", "--ignored") == ""
        assert (box.root / "proj" / "pkg" / "mod.py").read_text(encoding="utf-8") == "X = 2\n"
        assert stale.isdisjoint(world.entries())
        assert all(world.store.get_env(e).status == "deleted" for e in stale)  # type: ignore[union-attr]
        assert "stale entries dropped" in caplog.text
        # That base is rewritten away (amended, the task's branch gone, pruned): a claim on
        # the rewritten commit drops its entries, and the commit, then unreferenced, is pruned.
        world.wait_ready(2)
        sandboxes.release("moved", verified=False)
        git(world.repo, "branch", "-D", "harness/r1/moved")
        git(world.repo, *IDENTITY, "commit", "-q", "--amend", "-m", "rewritten")
        rewritten = git(world.repo, "rev-parse", "HEAD").strip()
        assert pool.claim(str(world.repo), rewritten, "y", world.root / "y") is None
        world.wait_ready(2)  # (git gc fails on a worktree git is adding at that moment)
        git(world.repo, "reflog", "expire", "--expire=now", "--all")
        git(world.repo, "gc", "-q", "--prune=now")
        assert (
            subprocess.run(
                ["git", "-C", str(world.repo), "cat-file", "-e", moved.base_commit]
            ).returncode
            != 0
        )
        # A task still asking for the gone base gets nothing from the pool, and one warning.
        for name in ("z1", "z2"):
            assert (
                pool.claim(moved.git_toplevel, moved.base_commit, name, world.root / name) is None
            )
        deadline = time.monotonic() + WAIT_S
        while "no more entries" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
        assert caplog.text.count("no more entries") == 1
        assert not any((world.root / name).exists() for name in ("y", "z1", "z2"))
    finally:
        sandboxes.release("moved", verified=False)
        pool.close()
    assert world.entries() == [] and not any((world.runs / RUN / "pool").glob("*"))


def test_a_pool_whose_repository_disappeared_is_dropped(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="harness.sandbox.pool")
    pool = world.pool(size=2)
    spec = world.spec("gone")
    key = (spec.git_toplevel, spec.base_commit)
    try:
        pool.warm([key] * 3)
        world.wait_ready(2)
        shutil.rmtree(world.repo)
        assert pool.claim(*key, "harness/r1/gone", world.runs / RUN / "worktrees" / "gone") is None
        assert "dropped" in caplog.text
    finally:
        pool.close()
    assert world.entries() == [] and not any((world.runs / RUN / "pool").glob("*"))


CHILD = """
import os, sys, time
from pathlib import Path
from harness.sandbox.limits import SandboxPoolConfig
from harness.sandbox.pool import SandboxPool
from harness.store import open_store, worker_id

store = open_store(sys.argv[1])
repo, base, home = sys.argv[2], sys.argv[3], Path(sys.argv[4])
pool = SandboxPool(store, home, "r1", owner=worker_id(), lease_s=600,
                   config=SandboxPoolConfig(size=3))
pool.warm([(repo, base)] * 2)
while sum(e.status == "ready" for e in store.envs(live=True)) < 2:
    time.sleep(0.02)
# The third entry is killed after git made its worktree, before its record says ready.
os.environ["HARNESS_FAILPOINTS"] = "pool.refill.made"
pool.warm([(repo, base)])
time.sleep(60)
"""


def test_a_crash_with_a_half_filled_pool_leaves_nothing_after_gc(world: World) -> None:
    url = f"sqlite:///{world.runs / 'harness.db'}"
    base = git(world.repo, "rev-parse", "HEAD").strip()
    home = world.runs / RUN / "pool"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(world.repo), base, str(home)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr  # killed by its failpoint
    statuses = sorted(env.status for env in world.store.envs(live=True))
    assert statuses == ["provisioning", "ready", "ready"]
    assert len(list(home.iterdir())) == 3
    assert len(git(world.repo, "worktree", "list").splitlines()) == 4

    done = run_cli(["gc", "--runs-dir", str(world.runs), "--store", url], cwd=world.root)
    assert done.exit_code == 0, done.stdout
    assert world.store.envs(live=True) == []
    assert not any(home.iterdir())
    assert len(git(world.repo, "worktree", "list").splitlines()) == 1


CLAIMING_CHILD = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from test_pool import Layout, World
from harness.store import open_store, worker_id

root = Path(sys.argv[1])
world = World(root, root / "repo", root / "runs", open_store(sys.argv[2]), worker_id())
pool = world.pool(size=1)
sandboxes = world.sandboxes(pool)
spec = world.spec(sys.argv[3])
pool.warm([(spec.git_toplevel, spec.base_commit)])
world.wait_ready(1)
# Killed once the entry is the task's worktree, before the task's branch exists.
os.environ["HARNESS_FAILPOINTS"] = "pool.claim.moved"
sandboxes.get(spec)
"""


def test_a_task_killed_mid_claim_resumes_on_a_fresh_sandbox(world: World) -> None:
    url = f"sqlite:///{world.runs / 'harness.db'}"
    tests = Path(__file__).parent
    child = subprocess.run(
        [sys.executable, "-c", CLAIMING_CHILD, str(world.root), url, "k", str(tests)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    # The entry is the task's worktree now, and the pool's directory holds nothing.
    assert (world.runs / RUN / "worktrees" / "k" / ".git").is_file()
    assert not any((world.runs / RUN / "pool").iterdir())
    # The resumed task (another process) gets a correct sandbox on its branch at the base.
    sandboxes = world.sandboxes(None)
    spec = world.spec("k")
    box = sandboxes.get(spec)
    assert box.worktree.branch() == "harness/r1/k" and box.worktree.head() == spec.base_commit
    assert git(box.root, "status", "--porcelain", "--ignored") == ""
    # gc reaps the dead process's pool record; only the task's worktree is left.
    collect = run_cli(["gc", "--runs-dir", str(world.runs), "--store", url], cwd=world.root)
    assert collect.exit_code == 0
    assert [env for env in world.store.envs(live=True) if env.kind == KIND] == []
    sandboxes.release("k", verified=False)
    assert len(git(world.repo, "worktree", "list").splitlines()) == 1


def test_a_resumed_runs_pool_reaps_its_crashed_predecessors_entries(world: World) -> None:
    url = f"sqlite:///{world.runs / 'harness.db'}"
    base = git(world.repo, "rev-parse", "HEAD").strip()
    home = world.runs / RUN / "pool"
    argv = [sys.executable, "-c", CHILD, url, str(world.repo), base, str(home)]
    assert subprocess.run(argv, capture_output=True, timeout=120, check=False).returncode == -9
    left = set(world.entries())
    assert len(left) == 3
    pool = world.pool(size=1)
    try:
        pool.warm([(str(world.repo), base)])
        deadline = time.monotonic() + WAIT_S
        while not left.isdisjoint(world.entries()):
            assert time.monotonic() < deadline, "the crashed process's entries were kept"
            time.sleep(0.02)
        world.wait_ready(1)
        assert len(list(home.iterdir())) == 1
    finally:
        pool.close()
    assert len(git(world.repo, "worktree", "list").splitlines()) == 1


def test_a_live_pool_renews_its_entries_leases(world: World) -> None:
    pool = SandboxPool(
        world.store,
        world.runs / RUN / "pool",
        RUN,
        owner=world.owner,
        lease_s=3,
        config=SandboxPoolConfig(size=1),
    )
    spec = world.spec("lease")
    try:
        pool.warm([(spec.git_toplevel, spec.base_commit)] * 2)
        world.wait_ready(1)
        entry = world.entries("ready")[0]
        first = world.store.get_env(entry).lease_expires_at  # type: ignore[union-attr]
        deadline = time.monotonic() + WAIT_S
        while world.store.get_env(entry).lease_expires_at == first:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the entry's lease was never renewed"
            time.sleep(0.1)
        # Only its owner renews it, and only while it lives.
        assert not world.store.renew_env_lease(entry, "someone-else", 3)
        assert world.store.renew_env_lease(entry, world.owner, 3)
    finally:
        pool.close()
    assert not world.store.renew_env_lease(entry, world.owner, 3)  # deleted
