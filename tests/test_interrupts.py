"""Stopping a run and starting it again: a crash inside the base-commit gate run, SIGINT and
SIGTERM at node boundaries (graceful: summary, `interrupted` tasks, exit 130/143), a signal
while a gate runs (its grace period over: the gate is cut and runs again on resume), and kill -9
at seeded random instants. Each is resumed and must end as an uninterrupted run did, nothing
lost, nothing done twice, no worktree or sandbox process left.

The real `harness` CLI runs as a subprocess (tests/faults.py); signals come from failpoints
(`<point>:SIGINT` makes the process signal itself at that exact point).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults import EXPECTED, TIMEOUT_S, Demo, make_fast_demo, sandbox_processes, wait_for

RUN = "ir"


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)


def assert_clean(demo: Demo, run_id: str) -> None:
    """No worktree but the main one (task or base run), none on disk, no sandbox process."""
    assert demo.worktrees() == [str(demo.repo)]
    run_dir = demo.runs / run_id
    assert not any(run_dir.glob("worktrees/*")), list(run_dir.glob("worktrees/*"))
    assert not any(run_dir.glob("base/*/tree")), list(run_dir.glob("base/*/tree"))
    wait_for(lambda: not sandbox_processes(run_dir), "sandbox processes to end", 10)


def assert_done_once(demo: Demo, run_id: str) -> None:
    """Every task done, one PR per verified task and one escalation per escalated one."""
    tasks = demo.tasks(run_id)
    assert all(t.status == "done" for t in tasks.values()), tasks
    run_dir = demo.runs / run_id
    outcomes = {spec: t.result["outcome"] for spec, t in tasks.items() if t.result}
    prs = sorted(p.stem for p in run_dir.glob("prs/*.md"))
    escalations = sorted(p.stem for p in run_dir.glob("escalations/*.md"))
    assert prs == sorted(s for s, o in outcomes.items() if o == "verified")
    assert escalations == sorted(s for s, o in outcomes.items() if o == "escalated")
    with demo.store() as store:
        for spec, outcome in outcomes.items():
            kind = {"verified": "publish", "escalated": "escalate"}[outcome]
            keys = [f"{run_id}/{spec}/{k}/{n}" for k in ("publish", "escalate") for n in range(4)]
            found = [(e.kind, e.status) for k in keys if (e := store.get_effect(k)) is not None]
            assert found == [(kind, "done")], (spec, found)


# --- a crash while the base-commit gate run has its worktree ---------------------------------

BASE_POLICY: dict[str, Any] = {"feedback": {"check_base": True}}
# fix-pagination with the base check on: provision, a failing attempt whose gate runs on the base
# (runs/<id>/base/<hash>/tree), feedback, a passing attempt compared with the base, guard,
# verify, publish; migrate-payment-provider escalates at triage. Every kind of directory,
# worktree and process harness makes, in a run of a few seconds.
BASE_SPECS = ["specs/fix-pagination.md", "specs/migrate-payment-provider.md"]


@dataclass
class BaseChecked:
    """The uninterrupted run of BASE_SPECS with the base check on."""

    outcomes: dict[str, tuple[Any, ...]]
    duration_s: float
    """From its first event to its end."""


def started(demo: Demo, run_id: str) -> bool:
    return (demo.runs / run_id / "events.jsonl").exists()


@pytest.fixture(scope="module")
def base_checked(tmp_path_factory: pytest.TempPathFactory) -> BaseChecked:
    root = tmp_path_factory.mktemp("base-checked")
    demo = make_fast_demo(root, f"sqlite:///{root / 'harness.db'}", **BASE_POLICY)
    process = demo.start(*demo.run_args("base", specs=BASE_SPECS))
    wait_for(lambda: started(demo, "base") or process.poll() is not None, "the run to start")
    began = time.monotonic()
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, (out, err)
    outcomes = demo.outcomes("base")
    assert outcomes["fix-pagination"][:2] == EXPECTED["fix-pagination"]
    return BaseChecked(outcomes, time.monotonic() - began)


def test_resume_after_a_crash_inside_the_base_run(
    base_checked: BaseChecked, tmp_path: Path
) -> None:
    """kill -9 while runs/<id>/base/<hash>/tree is checked out: resume used to fail with
    "git worktree add … already exists" and end the task in `error`; it now clears what the
    crashed run left there and runs the base again."""
    demo = make_fast_demo(tmp_path, f"sqlite:///{tmp_path / 'harness.db'}", **BASE_POLICY)
    crashed = demo.harness(
        *demo.run_args(RUN, specs=BASE_SPECS), failpoints="base.provisioned@fix-pagination"
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    left = list((demo.runs / RUN).glob("base/*/tree"))
    assert len(left) == 1 and (left[0] / ".git").is_file()
    assert str(left[0]) in demo.worktrees()

    resumed = demo.resume(RUN)
    ok(resumed)
    assert demo.outcomes(RUN) == base_checked.outcomes
    assert_done_once(demo, RUN)
    assert_clean(demo, RUN)


# --- SIGINT and SIGTERM at node boundaries ---------------------------------------------------

# Three of the demo's four specs go through every node: fix-pagination (provision, two agent
# attempts, gates failing then passing, feedback, guard, verify, publish), round-tax-per-line
# (escalated after two failing attempts) and migrate-payment-provider (tier 3: escalated at
# triage). add-bulk-discount adds no node they do not pass through.
SPECS = ["fix-pagination", "round-tax-per-line", "migrate-payment-provider"]
ONE = ["fix-pagination"]


def run_in_session(
    demo: Demo, run_id: str, failpoints: str, specs: list[str] = SPECS
) -> subprocess.CompletedProcess[str]:
    """`harness run` of `specs` in a process group of its own (see `in_session`)."""
    return in_session(
        demo, demo.run_args(run_id, specs=[f"specs/{s}.md" for s in specs]), failpoints
    )


def in_session(demo: Demo, args: list[str], failpoints: str) -> subprocess.CompletedProcess[str]:
    """`harness ARGS` leading its own process group, so a failpoint's signal goes to the whole
    group, as a terminal's Ctrl-C does (the sandbox's commands must not die of it)."""
    return subprocess.run(
        demo.argv(*args),
        cwd=demo.repo,
        env=demo.env(failpoints),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        start_new_session=True,
    )


@dataclass
class Uninterrupted:
    outcomes: dict[str, tuple[Any, ...]]
    exits: dict[str, Counter[str]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Uninterrupted:
    root = tmp_path_factory.mktemp("uninterrupted")
    demo = make_fast_demo(root, f"sqlite:///{root / 'harness.db'}")
    result = run_in_session(demo, "base", "")
    ok(result)
    outcomes = demo.outcomes("base")
    assert {spec: outcome[:2] for spec, outcome in outcomes.items()} == {
        spec: EXPECTED[spec] for spec in SPECS
    }
    return Uninterrupted(outcomes, node_exits(demo, "base"))


def signal_events(demo: Demo, run_id: str, spec: str) -> list[tuple[str, str, Any]]:
    return [
        (e["node"], e["event"], e.get("attempt"))
        for e in demo.events(run_id)
        if e["spec_id"] == spec
    ]


def assert_interrupted(
    demo: Demo,
    result: subprocess.CompletedProcess[str],
    signum: signal.Signals,
    spec: str,
    specs: list[str] = SPECS,
) -> dict[str, str]:
    """Exit 128 + the signal, said at once on stderr; a summary listing every task; the
    interrupted ones pending in the store (resumable), none in error; no process left."""
    assert result.returncode == 128 + signum, (result.returncode, result.stdout, result.stderr)
    assert f"interrupt: {signum.name}: no new task or step starts" in result.stderr
    assert f"harness resume {RUN}" in result.stdout
    summary = {t["spec_id"]: t["outcome"] for t in demo.summary(RUN)["tasks"]}
    assert sorted(summary) == sorted(specs), summary
    assert summary[spec] == "interrupted", summary
    assert "error" not in summary.values(), summary
    tasks = demo.tasks(RUN)
    for task_spec, outcome in summary.items():
        status = tasks[task_spec].status
        assert status == ("pending" if outcome == "interrupted" else "done"), (task_spec, status)
    assert not sandbox_processes(demo.runs / RUN)
    return summary


# Each node's boundary, before or after its body, SIGINT and SIGTERM in turn, as a chain: the
# run is interrupted at the first point, each resume at the next (a resume stops as gracefully
# as a run), and the last resume finishes it. One run's work plus a start per point, not a whole
# run per point. `teardown.after` is missing: the task is finished there.
CHAINS = {
    "fix-pagination": [
        ("triage.before@fix-pagination", signal.SIGINT),
        ("provision.after@fix-pagination", signal.SIGTERM),
        ("agent.before@fix-pagination", signal.SIGINT),
        ("agent.after@fix-pagination", signal.SIGTERM),
        ("gates.after@fix-pagination", signal.SIGINT),
        ("feedback.before@fix-pagination", signal.SIGTERM),
        ("guard.before@fix-pagination", signal.SIGINT),
        ("verify.after@fix-pagination", signal.SIGTERM),
        ("publish.after@fix-pagination", signal.SIGINT),
        ("teardown.before@fix-pagination", signal.SIGTERM),
    ],
    "escalations": [
        # migrate-payment-provider's two nodes come first: it is done in a moment.
        ("triage.before@migrate-payment-provider", signal.SIGTERM),
        ("escalate.before@migrate-payment-provider", signal.SIGINT),
        ("gates.before@round-tax-per-line", signal.SIGTERM),
        ("escalate.after@round-tax-per-line", signal.SIGINT),
    ],
}
CHAIN_SPECS = {
    "fix-pagination": ["fix-pagination"],
    "escalations": ["round-tax-per-line", "migrate-payment-provider"],
}


def node_exits(demo: Demo, run_id: str) -> dict[str, Counter[str]]:
    """Per task, how many times each node ran to its end."""
    exits: dict[str, Counter[str]] = {}
    for e in demo.events(run_id):
        if e["event"] == "exit":
            exits.setdefault(e["spec_id"], Counter())[e["node"]] += 1
    return exits


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_signals_at_node_boundaries_each_resumed(
    chain: str, uninterrupted: Uninterrupted, tmp_path: Path
) -> None:
    # No sandbox pool: the chains count on one task's nodes being done "in a moment" while
    # another's run, which a pool's background checkouts on a 2-core box can delay by seconds.
    store = f"sqlite:///{tmp_path / 'harness.db'}"
    demo = make_fast_demo(tmp_path, store, sandbox={"pool": {"size": 0}})
    specs = CHAIN_SPECS[chain]
    for number, (point, signum) in enumerate(CHAINS[chain]):
        spec = point.split("@")[1]
        node, when = point.split("@")[0].split(".")
        seen = len(signal_events(demo, RUN, spec))
        armed = f"{point}:{signum.name}"
        if number == 0:
            result = run_in_session(demo, RUN, armed, specs)
        else:
            result = in_session(demo, ["resume", RUN], armed)
        assert_interrupted(demo, result, signum, spec, specs)
        events = signal_events(demo, RUN, spec)[seen:]
        if when == "before":  # the node was entered, then stopped before its body ran
            assert events[-2:] == [
                (node, "interrupted", events[-2][2]),
                ("task", "interrupted", None),
            ]
        else:  # the node finished (and was kept); the next one was not started
            assert (node, "exit", None) in events, events
            assert events[-1] == ("task", "interrupted", None), events

    ok(demo.resume(RUN))
    assert demo.outcomes(RUN) == {spec: uninterrupted.outcomes[spec] for spec in specs}
    assert_done_once(demo, RUN)
    assert_clean(demo, RUN)
    # Each node ran to its end as often as in the uninterrupted run: none twice.
    expected = {spec: uninterrupted.exits[spec] for spec in specs}
    assert node_exits(demo, RUN) == expected


def test_a_gate_running_at_the_signal_finishes_in_its_grace_period(
    uninterrupted: Uninterrupted, tmp_path: Path
) -> None:
    """Ctrl-C (the whole process group) while fix-pagination's first gate runs: the gate is
    not killed by it, finishes, and is kept; resume does not run it again."""
    demo = make_fast_demo(tmp_path, f"sqlite:///{tmp_path / 'harness.db'}")
    result = run_in_session(demo, RUN, "gates.during@fix-pagination:SIGINT")
    assert_interrupted(demo, result, signal.SIGINT, "fix-pagination")
    events = signal_events(demo, RUN, "fix-pagination")
    # The gate finished (its node exited, with no outcome), and feedback never started.
    assert ("gates", "exit", None) in events and ("feedback", "interrupted", 1) in events, events

    ok(demo.resume(RUN))
    assert demo.outcomes(RUN) == uninterrupted.outcomes
    assert_done_once(demo, RUN)
    assert_clean(demo, RUN)
    gates_1 = [e for e in signal_events(demo, RUN, "fix-pagination") if e == ("gates", "enter", 1)]
    assert len(gates_1) == 1


def test_a_gate_still_running_when_the_grace_period_ends_is_cut_and_run_again(
    uninterrupted: Uninterrupted, tmp_path: Path
) -> None:
    demo = make_fast_demo(tmp_path, f"sqlite:///{tmp_path / 'harness.db'}", interrupt_grace_s=0)
    result = run_in_session(demo, RUN, "gates.during@fix-pagination:SIGTERM", ONE)
    assert_interrupted(demo, result, signal.SIGTERM, "fix-pagination", ONE)
    assert "grace period (0s) over" in result.stderr
    events = signal_events(demo, RUN, "fix-pagination")
    assert ("gates", "interrupted", 1) in events and ("gates", "exit", None) not in events, events

    ok(demo.resume(RUN))
    assert demo.outcomes(RUN) == {"fix-pagination": uninterrupted.outcomes["fix-pagination"]}
    assert_done_once(demo, RUN)
    assert_clean(demo, RUN)
    gates_1 = [e for e in signal_events(demo, RUN, "fix-pagination") if e == ("gates", "enter", 1)]
    assert len(gates_1) == 2  # cut short, then run again in full


def test_a_second_signal_stops_at_once(uninterrupted: Uninterrupted, tmp_path: Path) -> None:
    """The first SIGINT while a gate runs; the second when it has finished and before its
    step is saved: the process ends there, with no summary (as kill -9 would), and resumes."""
    demo = make_fast_demo(tmp_path, f"sqlite:///{tmp_path / 'harness.db'}")
    points = "gates.during@fix-pagination:SIGINT,gates.after@fix-pagination:SIGINT"
    result = run_in_session(demo, RUN, points, ONE)
    assert result.returncode == 130, (result.stdout, result.stderr)
    assert "interrupt: second SIGINT: stopping at once" in result.stderr
    assert not (demo.runs / RUN / "summary.json").exists()
    assert demo.tasks(RUN)["fix-pagination"].status == "claimed"

    ok(demo.resume(RUN))
    assert demo.outcomes(RUN) == {"fix-pagination": uninterrupted.outcomes["fix-pagination"]}
    assert_done_once(demo, RUN)
    assert_clean(demo, RUN)


# --- kill -9 at random instants ----------------------------------------------------------------

SEED = 13
INSTANTS = 20
SHARDS = 4
"""The 20 kills are cut into 4 tests of 5, so the suite's workers share them (one test of 20
was the suite's longest by far, and left a worker with nothing else to do)."""
PARALLEL = 3
"""Killed runs at once: each mostly waits on its sandboxed commands, so 3 share 2 cores well."""
FRACTIONS = sorted(random.Random(SEED).uniform(0, 1) for _ in range(INSTANTS))
"""Where in an uninterrupted run each kill falls; every shard takes every 4th one, so each
spreads over the whole run."""


def kill_then_resume(root: Path, instant: float) -> tuple[float, dict[str, tuple[Any, ...]]]:
    demo = make_fast_demo(root, f"sqlite:///{root / 'harness.db'}", **BASE_POLICY)
    process = demo.start(*demo.run_args(RUN, specs=BASE_SPECS))
    try:
        wait_for(lambda: started(demo, RUN) or process.poll() is not None, "the run to start")
        time.sleep(instant)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    resumed = demo.resume(RUN)
    assert resumed.returncode == 0, (instant, resumed.stdout, resumed.stderr)
    assert_done_once(demo, RUN)
    assert_clean(demo, RUN)
    return instant, demo.outcomes(RUN)


@pytest.mark.parametrize("shard", range(SHARDS))
def test_kill_at_random_instants_then_resume(
    base_checked: BaseChecked, tmp_path: Path, shard: int
) -> None:
    """kill -9 at 20 seeded random instants of a run (base check on), 5 per shard, each
    resumed: the same outcomes as the uninterrupted run, each record written once, no worktree
    or process left. The instants are printed (pytest -s, or with a failure's report)."""
    fractions = FRACTIONS[shard::SHARDS]
    instants = [round(f * base_checked.duration_s, 2) for f in fractions]
    print(f"seed {SEED}; run of {base_checked.duration_s:.1f}s; kill -9 after (s): {instants}")
    with ThreadPoolExecutor(PARALLEL) as pool:
        ended = list(
            pool.map(
                kill_then_resume, [tmp_path / f"kill-{i}" for i in range(len(instants))], instants
            )
        )
    for instant, outcomes in ended:
        assert outcomes == base_checked.outcomes, (f"killed after {instant}s", outcomes)
