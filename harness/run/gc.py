"""`harness gc`: tear down what no live worker owns, and what has outlived its TTL.

Three sweeps, each idempotent and safe to run beside workers and other gc runs:
1. live environments that expired, or whose owner's lease lapsed (an orphan of a crashed
   worker): torn down under the teardown lock, committing their work in progress first;
2. deleted environments past their retention: the task branch and any recovered-work refs
   are deleted (an escalation's WIP branch lives until then);
3. what is on disk with no live record: worktrees and scratch directories under runs/, and
   sandbox processes still running in them; a finished or dead run's integration services;
4. Kubernetes sandboxes of runs no worker is running any more (by their labels); the
   Kubernetes backend (an optional extra) is imported only for a run whose policy used it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config.policy import parse_policy
from harness.errors import InfrastructureError, InputError
from harness.git import GitRepository
from harness.integration.kubernetes import require_kubernetes
from harness.sandbox import lifecycle
from harness.store import EnvRecord, Store, owner_is_gone

# How long gc may hold a teardown lock before another gc may take it over.
LOCK_S = 300.0


@dataclass(frozen=True)
class Action:
    kind: str
    """teardown, delete-ref, remove-dir, kill or kubernetes."""
    target: str
    why: str
    done: bool
    """False on a dry run, or when another holder was already doing it."""


def collect(
    store: Store, runs_root: Path, *, owner: str, dry_run: bool, now: float | None = None
) -> list[Action]:
    actions = _orphans(store, owner, dry_run, time.time() if now is None else now)
    # The clock is read again: what the first sweep just tore down with no retention left
    # (ttl 0) is due now, not at the next gc.
    actions += _retained(store, dry_run, time.time() if now is None else now)
    return [*actions, *_on_disk(store, runs_root, dry_run), *_kubernetes(store, dry_run)]


def _why_reap(env: EnvRecord, now: float) -> str | None:
    if env.expires_at <= now:
        return "expired (ttl)"
    if env.lease_expires_at is not None and env.lease_expires_at <= now:
        return f"orphaned: owner {env.owner} let its lease lapse"
    if owner_is_gone(env.owner):
        return f"orphaned: owner {env.owner} is no longer running"
    return None


def _orphans(store: Store, owner: str, dry_run: bool, now: float) -> list[Action]:
    actions = []
    for env in store.envs(live=True):
        why = _why_reap(env, now)
        if why is None:
            continue
        done = False
        if not dry_run:
            retain = float(env.config.get("retain_s", {}).get("escalated", 0.0))
            done = lifecycle.teardown(
                store,
                env,
                owner=owner,
                lease_s=LOCK_S,
                retain_s=retain,
                still_due=lambda current: _why_reap(current, time.time()) is not None,
            )
        if not done and not dry_run:
            why += "; left alone: a worker holds it again, or another gc has it"
        actions.append(Action("teardown", env.env_id, why, done))
    return actions


def _kubernetes(store: Store, dry_run: bool) -> list[Action]:
    """Kubernetes sandboxes (forks, routes, Jobs) of runs no worker is running any more, found
    by their harness.dev/run label in the namespaces the run's policy allowlisted."""
    actions = []
    for run_id in sorted({env.run_id for env in store.envs()}):
        record = store.get_run(run_id)
        if record is None or _run_is_live(store, run_id):
            continue
        try:
            policy = parse_policy(record.policy_text, Path(record.policy_path))
            if policy.integration.backend != "kubernetes":
                continue
            require_kubernetes()
            from harness.integration.kubernetes.fork import reap

            lines = reap(policy.integration, run_id, dry_run=dry_run, source=record.policy_path)
        except (InputError, InfrastructureError) as exc:
            actions.append(Action("kubernetes", run_id, f"not reaped: {exc}", False))
            continue
        actions += [Action("kubernetes", line, f"run {run_id}", not dry_run) for line in lines]
    return actions


def _run_is_live(store: Store, run_id: str) -> bool:
    """Whether a worker holds one of the run's tasks now (a live, unlapsed lease)."""
    now = time.time()
    return any(
        task.status == "claimed"
        and (task.lease_expires_at or 0) > now
        and not owner_is_gone(task.owner)
        for task in store.tasks(run_id)
    )


def _retained(store: Store, dry_run: bool, now: float) -> list[Action]:
    envs = store.envs()
    # A branch outlives one environment when a resumed task re-made its sandbox on it: it is
    # kept while any environment naming it is live or still within its retention.
    kept = {
        (env.artifacts.get("repo"), env.artifacts.get("branch"))
        for env in envs
        if env.status != "deleted" or env.expires_at > now
    }
    actions = []
    for env in envs:
        repo, branch = env.artifacts.get("repo"), env.artifacts.get("branch")
        if env.status != "deleted" or env.expires_at > now or (repo, branch) in kept:
            continue
        if not repo or not branch or not Path(repo).is_dir():
            continue
        repository = GitRepository(Path(repo))
        refs = repository.refs(f"refs/heads/{branch}")
        refs += repository.refs(f"{lifecycle.RECOVERED_REFS}/{env.run_id}/{env.spec_id}/")
        for ref in refs:
            if not dry_run:
                repository.delete_ref(ref)
            actions.append(Action("delete-ref", f"{repo}: {ref}", "retention ended", not dry_run))
    return actions


def _on_disk(store: Store, runs_root: Path, dry_run: bool) -> list[Action]:
    live = store.envs(live=True)
    kept = {env.artifacts.get(name) for env in live for name in ("worktree", "scratch")}
    actions = []
    # (A sandbox pool's entries, under pool/, are recorded like task worktrees.)
    made = ("*/worktrees/*", "*/scratch/*", "*/pool/*")
    for path in sorted(path for pattern in made for path in runs_root.glob(pattern)):
        if str(path.resolve()) in kept:
            continue
        if path.parent.name == "scratch":
            for pid in [] if dry_run else lifecycle.kill_sandbox_processes(path.resolve()):
                actions.append(Action("kill", str(pid), f"sandbox process of {path}", True))
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
        actions.append(Action("remove-dir", str(path), "no live environment", not dry_run))
    for base in sorted(runs_root.glob("*/base")):
        # Gate runs on a base commit (harness.gates.preexisting) a crashed or interrupted
        # worker left: a detached worktree and its scratch, nothing worth keeping.
        if _run_is_live(store, base.parent.name):
            continue
        for pid in [] if dry_run else lifecycle.kill_sandbox_processes(base.resolve()):
            actions.append(Action("kill", str(pid), f"base-run process of {base}", True))
        for path in sorted([*base.glob("*/tree"), *base.glob("*/scratch")]):
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
            actions.append(
                Action("remove-dir", str(path), "its run has no live worker", not dry_run)
            )
    for services in sorted(runs_root.glob("*/services")):
        # Integration services (a baseline, tasks' sandboxed services) of a run no worker
        # is running any more: their processes, the baseline's worktree and the scratch
        # directories. Their logs stay with the run's other records.
        if _run_is_live(store, services.parent.name):
            continue
        for pid in [] if dry_run else lifecycle.kill_sandbox_processes(services.resolve()):
            actions.append(Action("kill", str(pid), f"service process of {services}", True))
        leftovers = [*services.glob("baseline-*/tree"), *services.glob("baseline-*/scratch")]
        for path in sorted([*leftovers, *services.glob("tasks/*")]):
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
            actions.append(
                Action("remove-dir", str(path), "its run has no live worker", not dry_run)
            )
    repos = {env.artifacts.get("repo") for env in store.envs()}
    for repo in sorted(r for r in repos if r and Path(r).is_dir()):
        if not dry_run:
            GitRepository(Path(repo)).prune_worktrees()
    return actions
