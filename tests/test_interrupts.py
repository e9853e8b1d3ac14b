"""Stopping a run and starting it again: a crash inside the base-commit gate run, SIGINT and
SIGTERM at node boundaries (graceful: summary, `interrupted` tasks, exit 130/143), a signal
while a gate runs (its grace period over: the gate is cut and runs again on resume), and kill -9
at seeded random instants. Each is resumed and must end as an uninterrupted run did, nothing
lost, nothing done twice, no worktree or sandbox process left.

The real `harness` CLI runs as a subprocess (tests/faults.py); signals come from failpoints
(`<point>:SIGINT` makes the process signal itself at that exact point).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from faults import EXPECTED, Demo, make_fast_demo, sandbox_processes, wait_for

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
BASE_SPECS = ["specs/fix-pagination.md"]


def test_resume_after_a_crash_inside_the_base_run(tmp_path: Path) -> None:
    """kill -9 while runs/<id>/base/<hash>/tree is checked out: resume used to fail with
    "git worktree add … already exists" and end the task in `error`; it now clears what the
    crashed run left there and runs the base again."""
    plain = make_fast_demo(tmp_path / "plain", f"sqlite:///{tmp_path / 'plain.db'}", **BASE_POLICY)
    ok(plain.harness(*plain.run_args("base", specs=BASE_SPECS)))
    expected = plain.outcomes("base")
    assert expected["fix-pagination"][:2] == EXPECTED["fix-pagination"]

    demo = make_fast_demo(tmp_path / "crash", f"sqlite:///{tmp_path / 'crash.db'}", **BASE_POLICY)
    crashed = demo.harness(
        *demo.run_args(RUN, specs=BASE_SPECS), failpoints="base.provisioned@fix-pagination"
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    left = list((demo.runs / RUN).glob("base/*/tree"))
    assert len(left) == 1 and (left[0] / ".git").is_file()
    assert str(left[0]) in demo.worktrees()

    resumed = demo.resume(RUN)
    ok(resumed)
    assert demo.outcomes(RUN) == expected
    assert_done_once(demo, RUN)
    assert_clean(demo, RUN)
