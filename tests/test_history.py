"""Watching a run: `harness runs` and `harness show` on a finished run and on one killed
(kill -9, by a failpoint) before its end; the live view's rows and a log's step lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import FINISH, REPO_ROOT, WRITE_DONE, CliResult, TinyProject, run_cli
from rich.console import Console

from cli.render import LiveView
from harness.run.ledger import RunLedger

FAIL_ONCE = [[FINISH], [WRITE_DONE, FINISH]]
"""A first attempt that leaves the gate failing, a second that passes: a two-attempt story."""


def cli(tiny: TinyProject, *args: str) -> CliResult:
    return run_cli([*args, "--runs-dir", str(tiny.runs)], cwd=tiny.root)


def finished_run(tiny: TinyProject) -> None:
    tiny.add_spec("twice", attempts=FAIL_ONCE)
    tiny.add_spec("human", tier=3)
    assert tiny.run().exit_code == 0


def stopped_run(tiny: TinyProject, run_id: str, signal: str = "") -> int:
    """`harness run` as a real process, stopped when `slow` enters its gates (SIGKILLed, or
    sent `signal`): `quick` (run first, alone) has ended, `slow` has not. Its exit code."""
    tiny.add_spec("quick")
    tiny.add_spec("slow")
    policy = tiny.write_policy(concurrency=1)
    argv = [sys.executable, "-m", "cli.main", "run", str(tiny.specs / "quick.md")]
    argv += [str(tiny.specs / "slow.md"), "--policy", str(policy), "--run-id", run_id]
    argv += ["--runs-dir", str(tiny.runs)]
    point = "gates.before@slow" + (f":{signal}" if signal else "")
    env = os.environ | {"HARNESS_FAILPOINTS": point, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(argv, cwd=tiny.root, env=env, capture_output=True, timeout=120)
    return done.returncode


def killed_run(tiny: TinyProject, run_id: str) -> None:
    """A run SIGKILLed mid-way: no summary is written."""
    assert stopped_run(tiny, run_id) == -9
    assert not (tiny.runs / run_id / "summary.json").exists()


# --- harness runs -----------------------------------------------------------------------------


def test_runs_lists_finished_and_killed_runs(tiny: TinyProject) -> None:
    finished_run(tiny)
    killed_run(tiny, "r2")
    (tiny.runs / "check-x").mkdir()  # harness check's logs: not a run
    result = cli(tiny, "runs")
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ r")]
    assert len(rows) == 2, result.stdout
    assert re.search(r"│ r1 .* │ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d │ finished", rows[0])
    assert "1 verified, 1 escalated" in rows[0] and "$0.00" in rows[0]
    assert "unfinished" in rows[1]
    assert "1 verified, 1 not ended" in rows[1]


def test_runs_with_no_runs_says_so(tiny: TinyProject) -> None:
    result = cli(tiny, "runs")
    assert result.exit_code == 0
    assert f"no runs in {tiny.runs}" in result.stdout


# --- harness show -----------------------------------------------------------------------------


def test_show_reprints_a_finished_runs_outcomes(tiny: TinyProject) -> None:
    finished_run(tiny)
    result = cli(tiny, "show", "r1")
    assert result.exit_code == 0, result.stderr
    assert "run r1: finished" in result.stdout
    assert "2 tasks" in result.stdout
    assert re.search(r"│ twice\s+│ verified\s+│ 2 ", result.stdout), result.stdout
    assert re.search(r"│ human\s+│ escalated\s+│ 0 ", result.stdout), result.stdout


def test_show_tells_a_tasks_story(tiny: TinyProject) -> None:
    finished_run(tiny)
    result = cli(tiny, "show", "r1", "twice")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "task twice (run r1): verified after 2 attempts (agent replay)" in out
    assert "cost $0.00 (0 model calls)" in out
    assert "attempt 1: agent replay, 1 step, finished" in out
    assert re.search(r"done\s+FAIL \(exit 1\)", out), out
    assert "problems fed back: " in out and "feedback-1.md" in out
    assert "attempt 2: agent replay, 2 steps, finished" in out
    # Attempt 2's gates ran on the committed tree: verification reused them.
    assert "verify: reused attempt 2's gate runs on tree " in out
    assert "PR record: " in out and "prs/twice.md" in out
    assert "branch: harness/r1/twice" in out


def test_show_on_a_killed_run(tiny: TinyProject) -> None:
    killed_run(tiny, "r2")
    result = cli(tiny, "show", "r2")
    assert result.exit_code == 0, result.stderr
    assert "run r2: unfinished" in result.stdout
    assert re.search(r"│ quick\s+│ verified", result.stdout), result.stdout
    assert "slow" in result.stdout and "not ended (last step: gates (attempt 1))" in result.stdout
    assert f"`harness resume r2 --runs-dir {tiny.runs}` continues it" in result.stdout
    story = cli(tiny, "show", "r2", "slow")
    assert story.exit_code == 0, story.stderr
    assert "task slow (run r2): not ended; last step: gates (attempt 1)" in story.stdout
    assert "steps so far: triage → provision → agent (attempt 1) → gates (attempt 1)" in (
        story.stdout
    )


def test_runs_and_show_on_an_interrupted_run(tiny: TinyProject) -> None:
    assert stopped_run(tiny, "r3", "SIGINT") == 130
    listing = cli(tiny, "runs")
    assert listing.exit_code == 0, listing.stderr
    assert re.search(r"│ r3 .* │ interrupted │ 1 verified, 1 interrupted", listing.stdout)
    shown = cli(tiny, "show", "r3")
    assert "run r3: interrupted" in shown.stdout
    assert re.search(r"│ slow\s+│ interrupted", shown.stdout), shown.stdout
    assert f"`harness resume r3 --runs-dir {tiny.runs}` continues it" in shown.stdout


def test_show_names_what_it_cannot_find(tiny: TinyProject) -> None:
    finished_run(tiny)
    missing_run = cli(tiny, "show", "nope")
    assert missing_run.exit_code == 2
    assert "no run 'nope'" in missing_run.stderr and "`harness runs`" in missing_run.stderr
    missing_task = cli(tiny, "show", "r1", "nope")
    assert missing_task.exit_code == 2
    assert "has no task 'nope'; its tasks: human, twice" in missing_task.stderr


# --- the live view and the step lines ---------------------------------------------------------


def test_live_view_shows_the_running_gate_and_its_last_output_line(tmp_path: Path) -> None:
    ledger = RunLedger(tmp_path, "r1")
    ledger.event("fix", "gates", "enter", attempt=2)
    ledger.event("done-one", "teardown", "exit", outcome="verified")
    view = LiveView(ledger, tmp_path)
    view()  # the view first sees the step now; logs older than that are not this step's
    log = tmp_path / "tasks" / "fix" / "gates" / "attempt-2-tests.log"
    log.parent.mkdir(parents=True)
    log.write_text("collected 40 items\n\ntests/test_x.py ....F...   [ 60%]\n", "utf-8")
    screen = Console(width=200, record=True)
    screen.print(view())
    ledger.close()
    lines = [line for line in screen.export_text().splitlines() if line.startswith("│")]
    rows = {line.split("│")[1].strip(): line for line in lines}
    assert "gates: tests" in rows["fix"]
    assert "tests/test_x.py ....F...   [ 60%]" in rows["fix"]
    assert re.search(r"│ 2\s+│ gates: tests", rows["fix"])
    assert re.search(r"\d+\.\ds \(\d+\.\ds\)", rows["fix"])
    assert "verified" in rows["done-one"]


def test_step_lines_carry_time_and_durations(tiny: TinyProject) -> None:
    tiny.add_spec("twice", attempts=FAIL_ONCE)
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if re.match(r"\d\d:.* twice ", line)]
    stamp = r"^\d\d:\d\d:\d\d  twice\s+"
    assert re.match(stamp + r"triage$", lines[0]), lines
    assert any(re.match(stamp + r"gates \(attempt 1\)  \[agent took \d+\.\ds\]$", x) for x in lines)
    assert re.match(stamp + r"done: verified in \d+\.\ds$", lines[-1]), lines
