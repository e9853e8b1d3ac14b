"""No gate run twice for nothing (issue 18, item 4).

- Verification reuses the last attempt's gate runs when they ran on a clean checkout of exactly
  the committed tree: no gate runs again, and the PR record and summary.json say so. A policy
  switch forces the re-run; a different tree, a dirty checkout, a failed run, other gates or an
  integration gate make verification run as before.
- A pytest gate's flaky re-run runs only the tests that failed (their node ids), and a failed
  test counts as flaky only when the re-run's own report shows it passed.

The task-level tests run the CLI on the tiny project with a shell gate that counts its own
executions in the task's scratch dir ($TMPDIR, which lives as long as the task) and prints the
count: the gate logs show how often the command really ran. The re-run tests drive GateRunner
in a real sandbox, whose tests append their names to a file in its scratch dir.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_task_graph
from helpers import FINISH, WRITE_DONE, TinyProject, git
from test_task_graph import Task, ok, repo, run_task  # noqa: F401 (repo, run_task: fixtures)

from harness.config.policy import FlakyConfig, GateConfig, parse_policy
from harness.errors import InputError
from harness.gates.record import GateRecord, GateRun
from harness.gates.reuse import VerifyReuse, reusable
from harness.gates.runner import GateRunner
from harness.sandbox.local import WorktreeSandbox

# Counts its runs in the task's scratch dir and prints the count, then checks the work.
COUNTED = (
    'n=$(( $(cat "$TMPDIR/gate-runs" 2>/dev/null || echo 0) + 1 )); echo $n > "$TMPDIR/gate-runs";'
    ' echo "gate execution $n"; test -f done.txt'
)
COUNTED_GATE = {"name": "done", "kind": "test", "command": COUNTED, "timeout_s": 30}


def executions(tiny: TinyProject, spec_id: str) -> dict[str, list[int]]:
    """Per gate log of the task, the executions of the gate command it printed."""
    logs = tiny.runs / "r1" / "tasks" / spec_id / "gates"
    return {
        log.name: [int(n) for n in re.findall(r"gate execution (\d+)", log.read_text("utf-8"))]
        for log in sorted(logs.glob("*.log"))
    }


def phases(task: dict[str, object]) -> list[tuple[str, int, bool]]:
    gates = task["gates"]
    assert isinstance(gates, list)
    return [(g["phase"], g["attempt"], g["passed"]) for g in gates]


# --- verification reuses the last attempt's runs on the same tree ------------------------------


def test_verified_on_attempt_one_runs_the_gate_once_and_the_record_says_reused(
    tiny: TinyProject,
) -> None:
    tiny.write_policy(gates=[COUNTED_GATE])
    tiny.add_spec("once")
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("once")
    assert task["outcome"] == "verified"
    assert executions(tiny, "once") == {"attempt-1-done.log": [1]}  # not run on verify
    assert phases(task) == [("attempt", 1, True)]
    tree = git(tiny.repo, "rev-parse", "harness/r1/once^{tree}").strip()
    assert task["verify_reused"] == {"attempt": 1, "tree": tree, "gates": ["done"]}
    pr = (tiny.root / task["pr"]).read_text("utf-8")
    assert f"- verify: reused attempt 1's gate runs on tree {tree[:12]} " in pr
    assert "all gates that ran passed again" not in pr and "passed again" not in pr
    assert ("verify", "reused") in tiny.events("once")


def test_verified_on_attempt_two_runs_the_gate_three_times_not_four(tiny: TinyProject) -> None:
    """Attempt 1 fails (the gate, then its flaky re-run), attempt 2 passes: that run is the
    verification. The attempt's gates start from a clean checkout of the commit."""
    tiny.write_policy(gates=[COUNTED_GATE])
    build = {"tool": "write_file", "args": {"path": "build/x", "content": "ignored\n"}}
    tiny.add_spec("twice", attempts=[[build, FINISH], [WRITE_DONE, FINISH]])
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("twice")
    assert (task["outcome"], task["attempts"]) == ("verified", 2)
    assert executions(tiny, "twice") == {
        "attempt-1-done-run2.log": [2],
        "attempt-1-done.log": [1],
        "attempt-2-done.log": [3],
    }
    assert task["verify_reused"]["attempt"] == 2
    tree = git(tiny.repo, "rev-parse", "harness/r1/twice^{tree}").strip()
    assert all(g["clean_checkout"] for g in task["gates"])
    assert task["gates"][-1]["tree"] == tree


def test_policy_verify_rerun_runs_every_gate_again(tiny: TinyProject) -> None:
    tiny.write_policy(gates=[COUNTED_GATE], verify={"rerun": True})
    tiny.add_spec("forced")
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("forced")
    assert task["outcome"] == "verified"
    assert executions(tiny, "forced") == {"attempt-1-done.log": [1], "verify-1-done.log": [2]}
    assert phases(task) == [("attempt", 1, True), ("verify", 1, True)]
    assert task["verify_reused"] is None
    pr = (tiny.root / task["pr"]).read_text("utf-8")
    assert "reused" not in pr
    assert "the 1 gate that ran passed again on the committed tree" in pr


def test_a_commit_after_the_attempts_gates_started_is_verified_again(
    run_task: Callable[..., Task],  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The blueprint with scripted gate results (tests/test_task_graph.py): a commit lands on
    the task's branch while the attempt's gate runs, so the committed tree is no longer the
    one the gate ran on, and verification runs the gate again on the new tree."""
    scripted = test_task_graph.ScriptedSandbox.run

    def run_then_commit(self: Any, command: str, timeout_s: float, *args: Any, **kw: Any) -> Any:
        done = scripted(self, command, timeout_s, *args, **kw)
        if len(self.commands) == 1:
            self.write("later.txt", "committed after the gate started\n")
            self.worktree.commit_all("a later commit")
        return done

    monkeypatch.setattr(test_task_graph.ScriptedSandbox, "run", run_then_commit)
    task = run_task([ok(), ok()])
    assert task.final["outcome"] == "verified"
    assert task.final["verify_reused"] is None
    assert len(task.sandboxes.sandbox.commands) == 2  # the attempt's run, and verification's
    [verify] = task.final["gate_records"]  # the last update's: verification's run
    assert verify.tree == task.sandboxes.sandbox.worktree.tree()
    events = (task.ctx.config.run_dir / "events.jsonl").read_text("utf-8").splitlines()
    [decision] = [e for e in map(json.loads, events) if e["node"] == "verify" and "reason" in e]
    assert decision["event"] == "rerun"
    assert decision["reason"].endswith(f", the committed tree is {verify.tree}")


# --- the decision, on records ------------------------------------------------------------------

TREE = "a" * 40
GATES = [
    GateConfig(name="lint", kind="lint", command="ruff check ."),
    GateConfig(name="tests", kind="test", command="pytest -q"),
]


def ran(name: str, kind: str, command: str, **changes: object) -> GateRecord:
    fields: dict[str, object] = {
        "name": name,
        "kind": kind,
        "command": command,
        "attempt": 2,
        "phase": "attempt",
        "exit_code": 0,
        "duration_s": 1.0,
        "passed": True,
        "tree": TREE,
        "clean_checkout": True,
    }
    return GateRecord.model_validate(fields | changes)


def attempt_two(**changes: object) -> list[GateRecord]:
    return [ran(g.name, g.kind, g.command, **changes) for g in GATES]


def test_the_last_attempts_clean_runs_of_the_same_tree_are_reused() -> None:
    older = ran("tests", "test", "pytest -q", attempt=1, passed=False, exit_code=1, tree="b" * 40)
    found = reusable([older, *attempt_two()], attempt=2, tree=TREE, gates=GATES)
    assert found == VerifyReuse(attempt=2, tree=TREE, gates=["lint", "tests"])


@pytest.mark.parametrize(
    ("records", "why"),
    [
        (attempt_two(tree="c" * 40), f"ran on tree {'c' * 40}, the committed tree is {TREE}"),
        (attempt_two(clean_checkout=False), "did not run on a clean checkout"),
        (
            [*attempt_two(), ran("tests", "test", "pytest -q", passed=False, exit_code=1, run=2)],
            "gate 'tests' failed a run on attempt 2 (exit 1)",
        ),
        (attempt_two()[:1], "the gates to run are not those that ran"),
        (
            [ran("lint", "lint", "ruff check ."), ran("tests", "test", "pytest -x")],
            "the gates to run are not those that ran",
        ),
        ([], "no gate ran on attempt 2"),
    ],
    ids=["tree-changed", "dirty", "failed-run", "gate-missing", "command-changed", "none"],
)
def test_anything_else_is_verified_again(records: list[GateRecord], why: str) -> None:
    found = reusable(records, attempt=2, tree=TREE, gates=GATES)
    assert isinstance(found, str) and why in found


def test_an_integration_gate_that_ran_is_verified_again() -> None:
    gates = [GateConfig(name="it", kind="integration", command="pytest it")]
    ran_it = [ran("it", "integration", "pytest it")]
    assert "services" in str(reusable(ran_it, attempt=2, tree=TREE, gates=gates))
    skipped = [ran("it", "integration", "pytest it", not_applicable="no service map")]
    assert isinstance(reusable(skipped, attempt=2, tree=TREE, gates=gates), VerifyReuse)


def test_verify_rerun_and_flaky_rerun_are_policy_fields_with_one_line_errors() -> None:
    gates = "gates: [{name: t, kind: test, command: pytest}]\n"
    policy = parse_policy(gates, Path("p.yaml"))
    assert (policy.verify.rerun, policy.flaky.rerun) == (False, "failed")
    assert parse_policy(gates + "verify: {rerun: true}", Path("p.yaml")).verify.rerun
    with pytest.raises(InputError) as bad:
        parse_policy(gates + "verify: {rerun: sometimes}", Path("p.yaml"))
    assert str(bad.value) == (
        "p.yaml: verify.rerun: Input should be a valid boolean (got 'sometimes')"
    )
    with pytest.raises(InputError) as bad:
        parse_policy(gates + "flaky: {rerun: some}", Path("p.yaml"))
    assert str(bad.value) == "p.yaml: flaky.rerun: Input should be 'failed' or 'all' (got 'some')"


# --- a flaky re-run runs only the failed tests -------------------------------------------------

RECORDING = """import os
from pathlib import Path

SCRATCH = Path(os.environ["TMPDIR"])


def ran(name: str) -> None:
    with (SCRATCH / "executed").open("a") as log:
        log.write(name + "\\n")
"""
FLAKY = """from recording import SCRATCH, ran


def test_steady_1() -> None:
    ran("steady_1")


def test_steady_2() -> None:
    ran("steady_2")


def test_flaky() -> None:
    ran("flaky")
    marker = SCRATCH / "flaky-failed-once"
    if not marker.exists():
        marker.touch()
        raise AssertionError("fails on its first run only")
"""
# Fails every time, and takes itself out of any run after the first: a re-run that passes
# without it proves nothing about it.
VANISHING = """from recording import SCRATCH, ran


def test_vanishing() -> None:
    ran("vanishing")
    (SCRATCH / "vanished").touch()
    raise AssertionError("always fails")
"""
CONFTEST = """from recording import SCRATCH


def pytest_collection_modifyitems(config, items):
    if (SCRATCH / "vanished").exists():
        items[:] = [item for item in items if item.name != "test_vanishing"]
"""
PYTEST_GATE = GateConfig(name="tests", kind="test", command="pytest -q -p no:anyio tests")


def run_tests(
    sandbox: WorktreeSandbox,
    tmp_path: Path,
    files: dict[str, str],
    gate: GateConfig = PYTEST_GATE,
    **flaky: object,
) -> tuple[GateRun, list[str]]:
    """The pytest gate run on `files` (and the recording helper) under tests/; the tests
    executed, in order, as they recorded themselves."""
    tests = sandbox.path / "tests"
    tests.mkdir()
    for name, text in {"recording.py": RECORDING, **files}.items():
        (tests / name).write_text(text, encoding="utf-8")
    runner = GateRunner(
        sandbox, log_dir=tmp_path / "logs", instance="t", flaky=FlakyConfig.model_validate(flaky)
    )
    run = runner.run_all([gate], attempt=1, phase="attempt")
    executed = (sandbox.scratch / "executed").read_text("utf-8").split()
    return run, executed


def test_a_flaky_rerun_runs_only_the_failed_tests(sandbox: WorktreeSandbox, tmp_path: Path) -> None:
    run, executed = run_tests(sandbox, tmp_path, {"test_flaky.py": FLAKY})

    assert run.passed
    assert sorted(executed[:3]) == ["flaky", "steady_1", "steady_2"]
    assert executed[3:] == ["flaky"]  # the re-run: the failed test alone
    first, again = run.records
    assert (first.passed, again.passed, again.run) == (False, True, 2)
    assert again.only_tests == ["tests/test_flaky.py::test_flaky"]
    assert again.counts == {"passed": 1}
    assert [(p.test_id, p.category) for p in run.flaky] == [
        ("tests/test_flaky.py::test_flaky", "flaky")
    ]


def test_flaky_rerun_all_reruns_the_whole_gate(sandbox: WorktreeSandbox, tmp_path: Path) -> None:
    run, executed = run_tests(sandbox, tmp_path, {"test_flaky.py": FLAKY}, rerun="all")

    assert run.passed
    assert sorted(executed[3:]) == ["flaky", "steady_1", "steady_2"]
    assert run.records[1].only_tests == []


def test_a_command_that_refuses_the_list_reruns_the_whole_gate(
    sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    """`-p no:cacheprovider` in the gate's own command: pytest refuses --last-failed (a usage
    error, no report), so the whole gate runs again, and the flaky test is still found."""
    gate = PYTEST_GATE.model_copy(update={"command": f"{PYTEST_GATE.command} -p no:cacheprovider"})
    run, executed = run_tests(sandbox, tmp_path, {"test_flaky.py": FLAKY}, gate=gate)

    assert run.passed
    assert [(r.run, r.exit_code, r.only_tests != []) for r in run.records] == [
        (1, 1, False),
        (2, 4, True),
        (3, 0, False),
    ]
    assert sorted(executed[3:]) == ["flaky", "steady_1", "steady_2"]
    assert [p.test_id for p in run.flaky] == ["tests/test_flaky.py::test_flaky"]


def test_a_failed_test_missing_from_the_rerun_stays_a_failure(
    sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    """test_flaky passes on the re-run; test_vanishing is left out of it by a conftest hook, so
    the re-run passes without it. Only test_flaky is flaky: nothing shows test_vanishing passed."""
    files = {"test_flaky.py": FLAKY, "test_vanishing.py": VANISHING, "conftest.py": CONFTEST}
    run, executed = run_tests(sandbox, tmp_path, files)

    assert executed.count("vanishing") == 1 and executed.count("flaky") == 2
    assert run.records[1].passed  # the re-run itself passed
    assert not run.passed
    assert [p.test_id for p in run.problems] == ["tests/test_vanishing.py::test_vanishing"]
    assert [p.test_id for p in run.flaky] == ["tests/test_flaky.py::test_flaky"]
