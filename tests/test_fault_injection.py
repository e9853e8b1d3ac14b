"""Fault injection on the demo batch, against SQLite and a real PostgreSQL server: the real
`harness` CLI as a subprocess is killed -9 at node boundaries (HARNESS_FAILPOINTS) and resumed,
left to `harness gc`, stopped while it holds a lease, and given bad input.

Every batch runs a copy of the demo made fast (faults.make_fast_demo: the shop's tests as the
only policy gate, replays without the agent's own checks) whose four outcomes are checked once
per session against an uninterrupted run. The file takes about 2½ minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from faults import (
    ESCALATED,
    EXPECTED,
    VERIFIED,
    Demo,
    freeze,
    make_fast_demo,
    one_line_error,
    sandbox_processes,
    start_orphan,
    stop,
    wait_for,
)

RUN = "fi"

# --- the uninterrupted run, once per session -------------------------------------------------


@dataclass
class Baseline:
    demo: Demo
    run_id: str
    outcomes: dict[str, tuple[Any, ...]]


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """The demo batch, uninterrupted, on SQLite: what every recovered run must end with, on
    either backend (outcomes do not depend on the store)."""
    root = tmp_path_factory.mktemp("baseline")
    demo = make_fast_demo(root, f"sqlite:///{root / 'harness.db'}")
    ok(demo.run("base"))
    outcomes = demo.outcomes("base")
    assert {spec: outcome[:2] for spec, outcome in outcomes.items()} == EXPECTED
    return Baseline(demo, "base", outcomes)


# --- what every recovered run must show ------------------------------------------------------


def assert_ended_once(demo: Demo, run_id: str) -> None:
    """Every task done once, one summary entry each, one PR per verified task (file and
    publish key), one escalation per escalated task, every environment deleted once."""
    tasks = demo.tasks(run_id)
    assert sorted(tasks) == sorted(EXPECTED)
    assert all(t.status == "done" and t.result is not None for t in tasks.values()), tasks
    listed = [t["spec_id"] for t in demo.summary(run_id)["tasks"]]
    assert sorted(listed) == sorted(EXPECTED), listed
    run_dir = demo.runs / run_id
    assert sorted(p.name for p in (run_dir / "prs").iterdir()) == [f"{s}.md" for s in VERIFIED]
    escalations = sorted(p.name for p in (run_dir / "escalations").iterdir())
    assert escalations == [f"{s}.md" for s in ESCALATED]
    with demo.store() as store:
        for spec in EXPECTED:
            # Keyed by run, task and attempt (the demo's tasks make at most 2 attempts).
            keys = [
                f"{run_id}/{spec}/{kind}/{n}" for kind in ("publish", "escalate") for n in range(4)
            ]
            effects = [store.get_effect(key) for key in keys]
            found = [(e.kind, e.status) for e in effects if e is not None]
            kind = "publish" if spec in VERIFIED else "escalate"
            assert found == [(kind, "done")], (spec, found)
        for env in store.envs(run_id=run_id):
            assert env.status == "deleted", env
            steps = [e["to"] for e in store.env_events(env.env_id)]
            assert steps.count("deleted") == 1, (env.env_id, steps)


def assert_clean(demo: Demo, run_id: str) -> None:
    """No worktree but the main one, none on disk, no sandbox process of the run."""
    assert demo.worktrees() == [str(demo.repo)]
    worktrees = demo.runs / run_id / "worktrees"
    assert not worktrees.exists() or not any(worktrees.iterdir())
    wait_for(lambda: not sandbox_processes(demo.runs / run_id), "sandbox processes to end", 10)


def records_on_disk(demo: Demo, run_id: str) -> dict[str, tuple[int, int]]:
    """PR and escalation records by name: (inode, mtime in ns). Records are written by rename,
    so a record written again has another inode."""
    run_dir = demo.runs / run_id
    paths = [*run_dir.glob("prs/*.md"), *run_dir.glob("escalations/*.md")]
    return {f"{p.parent.name}/{p.name}": (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def crashed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stdout, result.stderr)


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)


def one_store(backend: str) -> pytest.MarkDecorator:
    """A whole-run test on one store, not both: each such run costs ~5-15 s, the suite has a
    10-minute budget, and what differs between the stores (claims, leases, effects, env
    records) is tested on both in test_store.py. Multi-worker cases run on PostgreSQL (the
    store for workers on many hosts), single-worker ones on SQLite (the default)."""
    return pytest.mark.parametrize("store_url", [backend], indirect=True)


# --- 1. kill -9 at node boundaries, then resume ----------------------------------------------


# Every point on SQLite; on PostgreSQL the two that matter most (an agent's half-done work, and
# a PR written but not yet in the saved state): each point is a whole demo batch (~9 s), and
# all of them on both backends would add a minute to the suite.
POINTS = [
    "provision.after@fix-pagination",
    "agent.during@add-bulk-discount",
    "gates.during@fix-pagination",
    "verify.before@add-bulk-discount",
    "publish.after@fix-pagination",
    "escalate.after@round-tax-per-line",
]
POSTGRES_POINTS = ["agent.during@add-bulk-discount", "publish.after@fix-pagination"]


@pytest.mark.parametrize(
    ("store_url", "point"),
    [("sqlite", p) for p in POINTS] + [("postgres", p) for p in POSTGRES_POINTS],
    indirect=["store_url"],
)
def test_kill_at_node_boundary_then_resume(
    store_url: str, point: str, baseline: Baseline, tmp_path: Path
) -> None:
    demo = make_fast_demo(tmp_path, store_url)
    crashed(demo.run(RUN, failpoints=point))
    node, spec = point.split(".")[0], point.split("@")[1]
    assert any(
        (e["spec_id"], e["node"], e["event"]) == (spec, node, "enter") for e in demo.events(RUN)
    )
    assert not (demo.runs / RUN / "summary.json").exists()
    before = demo.tasks(RUN)
    assert before[spec].status == "claimed"
    done_before = {s: t for s, t in before.items() if t.status == "done"}
    records = records_on_disk(demo, RUN)
    written = {"publish.after": "prs", "escalate.after": "escalations"}.get(point.split("@")[0])
    if written:  # the record was written and the state not saved: the case idempotency is for
        assert f"{written}/{spec}.md" in records

    resumed = demo.resume(RUN)
    ok(resumed)
    assert f"{len(done_before)} of 4 tasks already done" in resumed.stdout

    assert_ended_once(demo, RUN)
    assert demo.outcomes(RUN) == baseline.outcomes
    # PR and escalation records written before the crash are never written again.
    assert {k: v for k, v in records_on_disk(demo, RUN).items() if k in records} == records
    after = demo.tasks(RUN)
    assert after[spec].claims == 2
    for done in done_before.values():  # finished before the crash: not touched again
        assert after[done.spec_id].claims == 1
        assert after[done.spec_id].result == done.result
    resumed_events = [e for e in demo.events(RUN) if (e["node"], e["event"]) == ("task", "resumed")]
    assert spec in {e["spec_id"] for e in resumed_events}
    assert_clean(demo, RUN)


def test_resume_after_the_worktree_was_lost_remakes_it_on_the_task_branch(
    baseline: Baseline, tmp_path: Path
) -> None:
    """The record says ready but the worktree is gone (a disk wiped, a person's rm -rf): the
    sandbox is made anew on the task branch, which holds attempt 1, never from the base."""
    demo = make_fast_demo(tmp_path, f"sqlite:///{tmp_path / 'harness.db'}")
    crashed(demo.run(RUN, failpoints="gates.during@fix-pagination"))
    worktree = demo.runs / RUN / "worktrees" / "fix-pagination"
    assert (worktree / ".git").is_file()
    subprocess.run(["rm", "-rf", str(worktree)], check=True)

    ok(demo.resume(RUN))
    assert demo.outcomes(RUN) == baseline.outcomes
    assert_ended_once(demo, RUN)
    events = [e for e in demo.events(RUN) if e["spec_id"] == "fix-pagination"]
    assert ("provision", "reattached") in {(e["node"], e["event"]) for e in events}
    # Attempt 1 ran once: it was committed on the branch before the crash, and reused.
    assert (
        sum((e["node"], e["event"], e.get("attempt")) == ("agent", "enter", 1) for e in events) == 1
    )
    with demo.store() as store:
        envs = sorted(
            (e for e in store.envs(run_id=RUN) if e.spec_id == "fix-pagination"),
            key=lambda e: e.env_id,
        )
        assert [e.status for e in envs] == ["deleted", "deleted"]
        lost = [(ev["from"], ev["to"]) for ev in store.env_events(envs[0].env_id)]
        assert ("validating", "failed") in lost or ("ready", "failed") in lost
        assert envs[0].artifacts.get("lost") == "worktree missing"
    assert_clean(demo, RUN)


# --- 2 and 3. gc after a crash: a dry run, then two gc runs at once --------------------------


@one_store("sqlite")
def test_gc_after_crash_two_at_once_leave_nothing(store_url: str, tmp_path: Path) -> None:
    # Retention over at once: gc may delete every branch of an environment it tears down.
    demo = make_fast_demo(tmp_path, store_url, ttl={"escalated": 0, "verified": 0})
    crashed(demo.run(RUN, failpoints="gates.during@fix-pagination"))
    scratch = (demo.runs / RUN / "scratch" / "fix-pagination").resolve()
    assert scratch.is_dir()
    orphan = start_orphan(scratch)  # a sandboxed command that outlived its worker
    try:
        with demo.store() as store:
            # The run's tasks' environments, and the entries of its sandbox pool (if its
            # refill had made any): gc reaps both.
            envs = [*store.envs(run_id=RUN, live=True), *store.envs(run_id=f"{RUN}:pool")]
            live = {env.env_id: env.status for env in envs if env.status != "deleted"}
        assert f"{RUN}/fix-pagination/1" in live
        worktrees, branches = demo.worktrees(), demo.branches()
        assert str(demo.runs.resolve() / RUN / "worktrees" / "fix-pagination") in worktrees
        wait_for(lambda: orphan.pid in sandbox_processes(demo.runs / RUN), "the orphan to start")

        dry = demo.harness("gc", "--dry-run")
        ok(dry)
        for env_id in live:
            assert re.search(rf"^teardown\s+{re.escape(env_id)}\s+\(orphaned", dry.stdout, re.M)
        actions = f"{len(live)} action" + ("" if len(live) == 1 else "s")
        assert f"gc: would take {actions}; nothing was removed" in dry.stdout, dry.stdout
        assert orphan.poll() is None
        assert (demo.worktrees(), demo.branches()) == (worktrees, branches)
        with demo.store() as store:
            envs = [*store.envs(run_id=RUN, live=True), *store.envs(run_id=f"{RUN}:pool")]
            assert {e.env_id: e.status for e in envs if e.status != "deleted"} == live

        gcs = [demo.start("gc"), demo.start("gc")]
        outputs = [gc.communicate(timeout=120) for gc in gcs]
        for gc, (out, err) in zip(gcs, outputs, strict=True):
            assert gc.returncode == 0, (out, err)
        assert orphan.wait(timeout=10) == -signal.SIGKILL
    finally:
        stop(orphan)

    torn_down = [
        line.split()[1]
        for out, _ in outputs
        for line in out.splitlines()
        if line.startswith("teardown") and not line.endswith("(not done)")
    ]
    assert sorted(torn_down) == sorted(live)  # each by one of the two gc runs, none by both
    with demo.store() as store:
        for env_id in live:
            steps = [(e["from"], e["to"]) for e in store.env_events(env_id)]
            assert [s for s in steps if s[1] == "tearing_down"] == [(live[env_id], "tearing_down")]
            assert steps[-1] == ("tearing_down", "deleted")
            assert [s for s in steps if s[1] == "deleted"] == [("tearing_down", "deleted")]
        assert all(env.status == "deleted" for env in store.envs(run_id=RUN))
    assert_clean(demo, RUN)
    assert demo.branches() == []
    assert demo.harness_refs() == []
    assert not list((demo.runs / RUN).glob("scratch/*"))


@one_store("sqlite")
def test_gc_beside_a_resumed_worker_leaves_the_sandbox_it_adopted(
    store_url: str, baseline: Baseline, tmp_path: Path
) -> None:
    demo = make_fast_demo(tmp_path, store_url)
    crashed(demo.run(RUN, failpoints="gates.during@fix-pagination"))
    env_id = f"{RUN}/fix-pagination/1"
    worker = demo.start("resume", RUN)
    try:
        wait_for(
            lambda: any(
                (e["node"], e["event"], e.get("env_id")) == ("provision", "adopted", env_id)
                for e in demo.events(RUN)
            ),
            "the resumed worker to adopt the crashed worker's sandbox",
        )
        freeze(worker, store_url)
        ok(demo.harness("gc"))  # the sandbox's owner is alive now, its lease fresh
        with demo.store() as store:
            env = store.get_env(env_id)
        assert env is not None and env.status in ("ready", "validating"), env
        assert (demo.runs / RUN / "worktrees" / "fix-pagination").is_dir()
        os.kill(worker.pid, signal.SIGCONT)
        out, err = worker.communicate(timeout=180)
    finally:
        stop(worker)
    assert worker.returncode == 0, (out, err)
    assert_ended_once(demo, RUN)
    assert demo.outcomes(RUN) == baseline.outcomes
    assert_clean(demo, RUN)


# --- 4. leases: a stopped worker's task is reclaimed; two workers share a run ----------------


def agent_entered(demo: Demo) -> str | None:
    return next(
        (e["spec_id"] for e in demo.events(RUN) if (e["node"], e["event"]) == ("agent", "enter")),
        None,
    )


@one_store("postgres")
def test_lapsed_lease_is_reclaimed_by_a_second_worker(
    store_url: str, baseline: Baseline, tmp_path: Path
) -> None:
    demo = make_fast_demo(tmp_path, store_url, store={"lease_s": 4})
    first = demo.start(*demo.run_args(RUN, "--concurrency", "1"))
    try:
        wait_for(lambda: agent_entered(demo) is not None, "worker 1 to start an agent")
        freeze(first, store_url)  # alive, holding its lease, and no heartbeats
        spec = agent_entered(demo)
        assert spec is not None
        stopped = demo.tasks(RUN)[spec]
        assert (stopped.status, stopped.claims) == ("claimed", 1)
        assert stopped.owner is not None and f":{first.pid}:" in stopped.owner

        second = demo.resume(RUN, "--concurrency", "2")
        ok(second)
        assert first.poll() is None  # worker 1 never got to finish anything
    finally:
        stop(first)
    assert first.returncode == -signal.SIGKILL

    assert_ended_once(demo, RUN)
    assert demo.outcomes(RUN) == baseline.outcomes
    tasks = demo.tasks(RUN)
    assert tasks[spec].claims == 2
    assert f":{first.pid}:" not in (tasks[spec].owner or "")
    # Taken over only once worker 1's lease had lapsed (its process was alive all along).
    resumed = [e for e in demo.events(RUN) if (e["spec_id"], e["node"]) == (spec, "task")]
    assert len(resumed) == 1
    assert datetime.fromisoformat(resumed[0]["ts"]).timestamp() >= (stopped.lease_expires_at or 0)
    assert all(t.claims == 1 for s, t in tasks.items() if s != spec)
    assert_clean(demo, RUN)


@one_store("postgres")
def test_two_workers_share_a_run_then_gc_keeps_its_branches(
    store_url: str, baseline: Baseline, tmp_path: Path
) -> None:
    demo = make_fast_demo(tmp_path, store_url)
    first = demo.start(*demo.run_args(RUN, "--concurrency", "1"))
    try:
        wait_for(lambda: bool(demo.events(RUN)), "worker 1 to record the run")
        second = demo.start("resume", RUN, "--concurrency", "1")
        outputs = [worker.communicate(timeout=180) for worker in (first, second)]
    finally:
        stop(first)
    for worker, (out, err) in zip((first, second), outputs, strict=True):
        assert worker.returncode == 0, (out, err)

    assert_ended_once(demo, RUN)
    assert demo.outcomes(RUN) == baseline.outcomes
    tasks = demo.tasks(RUN)
    assert all(t.claims == 1 for t in tasks.values()), tasks
    owners = {int((t.owner or "").split(":")[1]) for t in tasks.values()}
    assert owners == {first.pid, second.pid}
    assert_clean(demo, RUN)

    # gc after this normal run, default TTLs: every branch is kept, the escalated task's WIP
    # for 7 days (the verified ones' for 30).
    ok(demo.harness("gc"))
    provisioned = [spec for spec in EXPECTED if spec != "migrate-payment-provider"]
    assert demo.branches() == sorted(f"harness/{RUN}/{spec}" for spec in provisioned)
    with demo.store() as store:
        envs = {env.spec_id: env for env in store.envs(run_id=RUN)}
    assert sorted(envs) == sorted(provisioned)
    assert all(env.status == "deleted" for env in envs.values())
    escalated = envs["round-tax-per-line"]
    assert 6 * 86400 < escalated.expires_at - escalated.created_at < 8 * 86400


# --- 5. bad input --------------------------------------------------------------------------


def test_resume_of_an_unknown_run(store_url: str, tmp_path: Path) -> None:
    demo = make_fast_demo(tmp_path, store_url)
    result = demo.resume("nope")
    assert result.returncode == 2
    assert "'nope'" in one_line_error(result.stderr)


@one_store("sqlite")
def test_resume_after_the_policy_changed(store_url: str, tmp_path: Path) -> None:
    demo = make_fast_demo(tmp_path, store_url)
    one = ["specs/migrate-payment-provider.md"]  # one task, done in a moment
    crashed(demo.harness(*demo.run_args(RUN, specs=one), failpoints="triage.before"))
    policy = yaml.safe_load(demo.policy.read_text(encoding="utf-8"))
    policy["budget"]["max_attempts"] = 3
    demo.policy.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")

    refused = demo.resume(RUN)
    assert refused.returncode == 2
    line = one_line_error(refused.stderr)
    assert "budget.max_attempts: 2 → 3" in line and "--force" in line
    assert demo.tasks(RUN)["migrate-payment-provider"].status == "claimed"

    ok(demo.resume(RUN, "--force"))
    task = demo.summary(RUN)["tasks"]
    assert [(t["spec_id"], t["outcome"]) for t in task] == [
        ("migrate-payment-provider", "escalated")
    ]


@pytest.mark.parametrize("command", ["run", "resume", "gc"])
def test_a_store_that_does_not_connect(command: str, tmp_path: Path) -> None:
    url = "postgresql://127.0.0.1:1/x"
    demo = make_fast_demo(tmp_path, url)
    args = {"run": demo.run_args(RUN), "resume": ["resume", RUN], "gc": ["gc"]}[command]
    result = demo.harness(*args)
    assert result.returncode == 2
    assert "127.0.0.1:1" in one_line_error(result.stderr)
    assert not demo.runs.exists()
    assert demo.worktrees() == [str(demo.repo)]
    assert demo.branches() == []
