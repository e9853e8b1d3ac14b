"""A task sandbox's whole lifecycle, in one place: acquired (new, adopted, or re-made on its
branch after a crash), marked around gate runs, and torn down once.

Every sandbox is a store record first: allocated with an owner, a lease and an expiry before
anything exists on disk, moved through checked statuses, and torn down once, under the
teardown lock, by its worker (`TaskSandboxes.release`) or by `harness gc` (`teardown`).

A resumed task gets its sandbox back by `TaskSandboxes.get`: the worktree a crashed process
left is adopted when the record says ready and the worktree is intact; otherwise a new worktree
is made on the task's branch, which holds every committed attempt. Nothing starts over from the
base while the branch exists, and half-done work found in an adopted worktree is kept on a ref
(refs/harness/recovered/...) before the interrupted node runs again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from harness.config.policy import TTLConfig
from harness.config.spec import Spec
from harness.errors import InfrastructureError
from harness.git import GitRepository, Worktree
from harness.run.ledger import RunLedger
from harness.sandbox import TaskSandbox
from harness.sandbox.limits import Confinement, SandboxLimits, commit_check
from harness.sandbox.local import WorktreeSandbox
from harness.sandbox.pool import SandboxPool
from harness.store import EnvRecord, EnvStatus, Store

KIND = "worktree"
RECOVERED_REFS = "refs/harness/recovered"


class TaskLayout(Protocol):
    """Where a run keeps each task's branch, worktree and scratch (a RunConfig)."""

    @property
    def run_id(self) -> str: ...

    def branch(self, spec_id: str) -> str: ...

    def worktree_dir(self, spec_id: str) -> Path: ...

    def scratch_dir(self, spec_id: str) -> Path: ...


class TaskSandboxes:
    """This worker's task sandboxes, one per task, each backed by its store record."""

    def __init__(
        self,
        store: Store,
        ledger: RunLedger,
        layout: TaskLayout,
        *,
        owner: str,
        lease_s: float,
        ttl: TTLConfig,
        confinement: Confinement,
        pool: SandboxPool | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.layout = layout
        self.owner = owner
        self.lease_s = lease_s
        self.ttl = ttl
        self.confinement = confinement
        self.pool = pool
        """Ready worktrees a new task at its base claims (harness.sandbox.pool), or None."""
        self._live: dict[str, TaskSandbox] = {}
        self._lock = threading.Lock()

    def get(self, spec: Spec) -> TaskSandbox:
        """The task's sandbox: the live one, else acquired (see the module's docstring)."""
        with self._lock:
            sandbox = self._live.get(spec.id)
        if sandbox is None:
            sandbox = self._acquire(spec)
            with self._lock:
                self._live[spec.id] = sandbox
        return sandbox

    def mark(self, spec_id: str, status: EnvStatus) -> None:
        """ready ⇄ validating around gate runs, on the task's live environment."""
        for env in task_envs(self.store, self.layout.run_id, spec_id):
            if env.status in ("ready", "validating") and env.status != status:
                self.store.transition(env.env_id, status)

    def release(self, spec_id: str, *, verified: bool) -> None:
        """Tear the task's sandbox down. Its branch outlives it (a verified task's as its PR's
        head, any other's as the work in progress a person picks up) for the retention
        period of its outcome; gc deletes it after that."""
        with self._lock:
            sandbox = self._live.pop(spec_id, None)
        retain = self.ttl.verified if verified else self.ttl.escalated
        for env in task_envs(self.store, self.layout.run_id, spec_id):
            if env.status != "deleted":
                teardown(
                    self.store,
                    env,
                    owner=self.owner,
                    lease_s=self.lease_s,
                    retain_s=retain,
                    sandbox=sandbox,
                )
                sandbox = None
        if sandbox is not None:  # not recorded (a sandbox made outside the store)
            sandbox.teardown()

    def _acquire(self, spec: Spec) -> WorktreeSandbox:
        """The task's sandbox: adopted, re-made on its branch, or provisioned new at the base."""
        store, ledger, owner, lease_s = self.store, self.ledger, self.owner, self.lease_s
        run_id, branch = self.layout.run_id, self.layout.branch(spec.id)
        root, scratch = self.layout.worktree_dir(spec.id), self.layout.scratch_dir(spec.id)
        retain_s = {"verified": self.ttl.verified, "escalated": self.ttl.escalated}
        envs = task_envs(store, run_id, spec.id)
        live = next((env for env in envs if env.status != "deleted"), None)
        if live is not None and live.status in ("ready", "validating"):
            # Under the teardown lock, so gc cannot start tearing it down while it is adopted
            # (and re-reads the record, renewed by then, before it would).
            if store.lock_teardown(live.env_id, owner, lease_s):
                try:
                    sandbox = _adopt(spec, live, root, scratch, self.confinement)
                    if sandbox is not None:
                        ref = f"{RECOVERED_REFS}/{run_id}/{spec.id}"
                        kept = sandbox.worktree.keep_uncommitted(ref)
                        if live.status == "validating":  # the gates a crash interrupted run again
                            store.transition(live.env_id, "ready")
                        ledger.event(spec.id, "provision", "adopted", env_id=live.env_id, kept=kept)
                        return sandbox
                    # Its worktree is gone or not to be trusted: the record says what happened.
                    lost = {"lost": "worktree missing"}
                    live = store.transition(live.env_id, "failed", artifacts=lost)
                finally:
                    store.unlock_teardown(live.env_id, owner)
            else:  # gc is tearing it down: let it finish (the work is committed to the branch)
                _wait_until_deleted(store, live.env_id, lease_s)
                live = None
        if live is not None and live.status in ("failed", "tearing_down"):
            # Its branch lives on in the environment made next, which protects it from gc.
            teardown(store, live, owner=owner, lease_s=lease_s, retain_s=0)
            live = None

        now = time.time()
        env = live or store.allocate_env(
            EnvRecord(
                env_id=f"{run_id}/{spec.id}/{len(envs) + 1}",
                run_id=run_id,
                spec_id=spec.id,
                kind=KIND,
                config={"base": spec.base_commit, "retain_s": retain_s},
                expires_at=now + self.ttl.sandbox,
                owner=owner,
                lease_expires_at=now + lease_s,
            )
        )
        artifacts = {
            "repo": spec.git_toplevel,
            "branch": branch,
            "worktree": str(root),
            "scratch": str(scratch),
        }
        if env.status == "allocating":
            store.transition(env.env_id, "provisioning", artifacts=artifacts)
        repository = GitRepository(Path(spec.git_toplevel))
        if repository.branch_exists(branch):
            # A resumed task (or a provision a crash interrupted): the branch is the work so far.
            sandbox = WorktreeSandbox.reattach(spec, branch, root, scratch, self.confinement)
            ledger.event(spec.id, "provision", "reattached", env_id=env.env_id, branch=branch)
        else:
            sandbox = self._new_at_base(spec, env, branch, root, scratch, first=not envs)
        store.transition(env.env_id, "ready")
        return sandbox

    def _new_at_base(
        self, spec: Spec, env: EnvRecord, branch: str, root: Path, scratch: Path, *, first: bool
    ) -> WorktreeSandbox:
        """A new task's sandbox at its base: a pool's ready worktree when one is (only for the
        task's first environment), else a fresh one."""
        claimed = None
        if self.pool is not None and first:
            claimed = self.pool.claim(spec.git_toplevel, spec.base_commit, branch, root)
        if claimed is not None:
            self.ledger.event(spec.id, "provision", "pooled", env_id=env.env_id)
            return WorktreeSandbox.claimed(spec, root, scratch, claimed, self.confinement)
        if root.exists():
            # A provision or pool claim that a crash interrupted before the branch existed: its
            # tree holds no work (nothing ran there), and git refuses to add over it.
            GitRepository(Path(spec.git_toplevel)).remove_worktree(root)
        return WorktreeSandbox.provision(spec, branch, root, scratch, self.confinement)

    def start_pool(self, specs: list[Spec]) -> None:
        """Fill the pool for the (repository, base) of each spec (the run's start)."""
        if self.pool is not None:
            self.pool.warm((spec.git_toplevel, spec.base_commit) for spec in specs)

    def stop_pool(self) -> None:
        """Remove the pool's entries (the run's end)."""
        if self.pool is not None:
            self.pool.close()


def task_envs(store: Store, run_id: str, spec_id: str) -> list[EnvRecord]:
    return [env for env in store.envs(run_id=run_id) if env.spec_id == spec_id]


def _wait_until_deleted(store: Store, env_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (env := store.get_env(env_id)) is not None and env.status != "deleted":
        if time.monotonic() > deadline:
            raise InfrastructureError(
                f"environment {env_id}: another process has been tearing it down for over "
                f"{timeout_s:g} s; run `harness gc`, then resume again"
            )
        time.sleep(0.2)


def _adopt(
    spec: Spec, env: EnvRecord, root: Path, scratch: Path, confinement: Confinement
) -> WorktreeSandbox | None:
    """The recorded worktree if it is intact: present, linked to the spec's repository, on
    the recorded branch. None otherwise."""
    if env.artifacts.get("worktree") != str(root) or not (root / ".git").is_file():
        return None
    try:
        sandbox = WorktreeSandbox.adopt(spec, root, scratch, confinement)
        common = sandbox.repository.common_dir()
        on_branch = sandbox.worktree.branch() == env.artifacts.get("branch")
    except InfrastructureError:
        return None
    if not sandbox.worktree.git_dir.is_relative_to(common / "worktrees") or not on_branch:
        return None
    return sandbox


def teardown(
    store: Store,
    env: EnvRecord,
    *,
    owner: str,
    lease_s: float,
    retain_s: float,
    sandbox: TaskSandbox | None = None,
    still_due: Callable[[EnvRecord], bool] | None = None,
) -> bool:
    """Tear `env` down once: under its teardown lock, killing processes its sandbox left
    running, committing work in progress, removing the worktree. The branch is retained for
    `retain_s` (expires_at), after which gc deletes it. False if another holder has the
    lock, it is already deleted, or `still_due` says the record, read again under the lock,
    no longer needs it (gc: a resumed worker took the environment over meanwhile)."""
    if not store.lock_teardown(env.env_id, owner, lease_s):
        return False
    try:
        current = store.get_env(env.env_id)
        if current is None or current.status == "deleted":
            return False
        if still_due is not None and not still_due(current):
            return False
        if current.status != "tearing_down":
            store.transition(env.env_id, "tearing_down")
        worktree = current.artifacts.get("worktree")
        scratch = current.artifacts.get("scratch")
        if scratch:
            kill_sandbox_processes(Path(scratch))
        if sandbox is not None:
            sandbox.teardown()
        elif worktree:
            remove_worktree(current)
        store.transition(env.env_id, "deleted", expires_at=time.time() + retain_s)
        return True
    finally:
        store.unlock_teardown(env.env_id, owner)


def remove_worktree(env: EnvRecord) -> None:
    """Without a sandbox object (gc, or a worker that did not make it): commit what the
    worktree holds, then remove it. Git is run with the repository's own record of the
    worktree, never one found inside it."""
    repo = env.artifacts.get("repo")
    root = Path(env.artifacts["worktree"])
    if repo and Path(repo).is_dir():
        repository = GitRepository(Path(repo))
        git_dir = repository.worktree_git_dir(root)
        if root.exists() and git_dir is not None and env.artifacts.get("branch"):
            with contextlib.suppress(InfrastructureError):
                # Policy's default size caps: gc does not know the run's policy.
                check = commit_check(SandboxLimits())
                worktree = Worktree(root, root, git_dir, check)
                worktree.commit_all("harness: work in progress at gc")
        repository.remove_worktree(root)
    scratch = env.artifacts.get("scratch")
    for path in (root, Path(scratch) if scratch else None):
        if path is not None and path.exists():
            shutil.rmtree(path, ignore_errors=True)


def clear_detached(repository: GitRepository, where: Path) -> None:
    """What a crashed or interrupted process left of a detached look at a base laid out as
    `where`/tree and `where`/scratch (a base run, an environment set-up): the commands still
    running in it killed, the worktree removed, the scratch dir removed, so it runs afresh."""
    if not where.exists():
        return
    kill_sandbox_processes((where / "scratch").resolve())
    repository.remove_worktree(where / "tree")
    shutil.rmtree(where / "scratch", ignore_errors=True)


def kill_sandbox_processes(scratch: Path) -> list[int]:
    """Kill every process a sandbox started that is still running: what a crashed worker's
    commands (or services) may have left behind. They are known by the environment harness
    gave them (TMPDIR is the sandbox's scratch directory, or one inside `scratch`), so nothing
    else on the host (a user's shell sitting in the worktree, say) is ever touched. Returns
    their pids."""
    marker = f"TMPDIR={scratch}".encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(var == marker or var.startswith(marker + b"/") for var in environ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed
