"""How a failing gate is classified before anyone is blamed for it, on the tiny project with
shell-command gates (a run takes a second or two): timeouts and kills from outside are
infrastructure (re-run once, then escalated, never charged to the agent), a missing tool is an
error, failures already on the base commit are labelled pre-existing, test failures that go
away on a re-run are flaky, and the fake-green guard stops changes that weaken the gates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    FINISH,
    WRITE_DONE,
    TinyProject,
    commit_files,
    escalation_problems,
    git,
    section,
    worktree_count,
)

# --- helpers ---------------------------------------------------------------------------------


def gate(name: str, command: str, kind: str = "test", timeout_s: float = 30) -> dict[str, Any]:
    return {"name": name, "kind": kind, "command": command, "timeout_s": timeout_s}


def records(task: dict[str, Any]) -> list[tuple[str, int, str, bool]]:
    """(phase, attempt, gate, passed) of each gate record in summary.json."""
    return [(g["phase"], g["attempt"], g["name"], g["passed"]) for g in task["gates"]]


def task_dir(tiny: TinyProject, spec_id: str) -> Path:
    return tiny.runs / "r1" / "tasks" / spec_id


def base_runs(tiny: TinyProject) -> list[Path]:
    """The gate runs on the untouched base commit (runs/<id>/base/<hash>/)."""
    base = tiny.runs / "r1" / "base"
    return sorted(base.iterdir()) if base.is_dir() else []


def front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n"), text
    data: dict[str, Any] = yaml.safe_load(text.split("---\n", 2)[1])
    return data


TWO_ATTEMPTS = [[WRITE_DONE, FINISH], [WRITE_DONE, FINISH]]
"""A replay that could make a second attempt: any that is made shows as `attempts: 2`."""


# --- infrastructure: timeouts and kills -------------------------------------------------------


def test_timeout_is_retried_once_then_escalated_as_infrastructure(tiny: TinyProject) -> None:
    tiny.write_policy(gates=[gate("slow", "sleep 30", timeout_s=1)])
    tiny.add_spec("slow", attempts=TWO_ATTEMPTS)
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("slow")
    assert task["outcome"] == "escalated"
    assert task["reason"].startswith("infrastructure: gate 'slow' timed out")
    assert "not charged to the agent" in task["reason"]
    # One attempt: the retry is a re-run of the gate, not another attempt by the agent. A kind
    # `test` gate that timed out is not re-run again as a flaky check: two runs, no more.
    assert task["attempts"] == 1
    assert not (task_dir(tiny, "slow") / "attempt-2.json").exists()
    assert records(task) == [("attempt", 1, "slow", False), ("attempt", 1, "slow", False)]
    assert [g["exit_code"] for g in task["gates"]] == [None, None]
    # Nothing to compare with base, and nothing the agent could be told to fix.
    assert base_runs(tiny) == []
    assert not list(task_dir(tiny, "slow").glob("feedback-*.md"))

    escalation = tiny.root / task["escalation"]
    record = escalation.read_text("utf-8")
    assert "| attempt | 1 | slow | `sleep 30` | timeout | FAIL |" in record
    assert "| attempt | 1 | slow (run 2) | `sleep 30` | timeout | FAIL |" in record
    [problem] = escalation_problems(escalation)
    assert problem["category"] == "infrastructure"
    assert problem["owner_action_required"] is True
    assert problem["gate"] == "slow" and "timed out" in problem["title"]
    assert "timeout_s" in problem["detail"]  # what a person can do about it


def test_gate_killed_by_sigkill_is_infrastructure(tiny: TinyProject) -> None:
    tiny.write_policy(gates=[gate("oom", "echo started; kill -9 $$")])
    tiny.add_spec("killed", attempts=TWO_ATTEMPTS)
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("killed")
    assert (task["outcome"], task["attempts"]) == ("escalated", 1)
    assert task["reason"].startswith("infrastructure: gate 'oom' was killed")
    assert records(task) == [("attempt", 1, "oom", False), ("attempt", 1, "oom", False)]
    assert base_runs(tiny) == []
    [problem] = escalation_problems(tiny.root / task["escalation"])
    assert problem["category"] == "infrastructure"
    assert problem["owner_action_required"] is True
    assert "killed" in problem["title"] and "started" in problem["detail"]


def test_gate_killed_once_passes_on_the_retry_and_is_not_charged(tiny: TinyProject) -> None:
    """The scratch dir ($TMPDIR) lives as long as the task: the marker survives the first run."""
    command = 'test -f "$TMPDIR/killed-once" || { touch "$TMPDIR/killed-once"; kill -9 $$; }'
    tiny.write_policy(gates=[gate("once", command)])
    tiny.add_spec("recovers", attempts=TWO_ATTEMPTS)
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("recovers")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    assert records(task) == [
        ("attempt", 1, "once", False),
        ("attempt", 1, "once", True),
        ("verify", 1, "once", True),
    ]
    assert [g["exit_code"] for g in task["gates"]] == [137, 0, 0]
    assert not list(task_dir(tiny, "recovers").glob("feedback-*.md"))


def test_missing_tool_is_an_error_naming_it_and_is_not_retried(tiny: TinyProject) -> None:
    tiny.write_policy(gates=[gate("tool", "no-such-tool-xyz --check")])
    tiny.add_spec("needs-tool", attempts=TWO_ATTEMPTS)
    result = tiny.run()

    assert result.exit_code == 1, result.stderr
    task = tiny.task("needs-tool")
    assert (task["outcome"], task["attempts"]) == ("error", 1)
    assert "'no-such-tool-xyz' was not found" in task["reason"]
    assert "gate 'tool'" in task["reason"]
    # A missing tool stays missing: neither the infrastructure retry nor the flaky re-run.
    assert records(task) == [("attempt", 1, "tool", False)]
    assert task["gates"][0]["exit_code"] == 127
    assert base_runs(tiny) == []
    assert worktree_count(tiny.repo) == 1


# --- pre-existing failures: the same gate on the untouched base commit ------------------------

NO_TODO = gate("notodo", "! grep -rn TODO --include='*.txt' .", kind="lint")
LEGACY = "one\nTODO fix me\nthree\n"
ADD_TODO = {"tool": "write_file", "args": {"path": "new.txt", "content": "TODO from agent\n"}}
FIX_NEW = {"tool": "write_file", "args": {"path": "new.txt", "content": "done\n"}}
FIX_LEGACY = {"tool": "write_file", "args": {"path": "legacy.txt", "content": "one\nok\nthree\n"}}


def test_failure_already_on_base_is_labelled_pre_existing_and_must_still_pass(
    tiny: TinyProject,
) -> None:
    """legacy.txt fails the gate on base already; the agent adds new.txt, which fails it too.
    Both tasks share one base run of the gate; the task that leaves legacy.txt alone never
    passes, pre-existing or not."""
    commit_files(tiny.repo, {"legacy.txt": LEGACY}, "legacy")
    tiny.write_policy(gates=[gate("done", "test -f done.txt"), NO_TODO])
    tiny.add_spec("fixes", attempts=[[WRITE_DONE, ADD_TODO, FINISH], [FIX_NEW, FIX_LEGACY, FINISH]])
    tiny.add_spec("leaves", attempts=[[WRITE_DONE, ADD_TODO, FINISH], [FIX_NEW, FINISH]])
    result = tiny.run()
    assert result.exit_code == 0, result.stderr

    # One run on base per run and gate, in a detached worktree that is gone afterwards.
    [base] = base_runs(tiny)
    assert [p.name for p in base.iterdir()] == ["base-0-notodo.log"]  # tree, scratch removed
    assert "legacy.txt:2:TODO fix me" in (base / "base-0-notodo.log").read_text("utf-8")
    assert worktree_count(tiny.repo) == 1
    # Base runs are not task gate records.
    for spec_id in ("fixes", "leaves"):
        assert all(g["phase"] in ("attempt", "verify") for g in tiny.task(spec_id)["gates"])

    feedback = (task_dir(tiny, "leaves") / "feedback-1.md").read_text("utf-8")
    assert front_matter(feedback)["problems"] == 2
    headings = [line for line in feedback.splitlines() if line.startswith("### notodo: ")]
    [legacy] = [line for line in headings if "legacy.txt" in line]
    [new] = [line for line in headings if "new.txt" in line]
    assert "pre-existing on base" in legacy and "pre-existing" not in new
    assert "`legacy.txt:2` TODO fix me" in feedback and "`new.txt:1` TODO from agent" in feedback
    assert "Pre-existing failures (already failing on the base commit) must also pass." in feedback

    fixes = tiny.task("fixes")
    assert (fixes["outcome"], fixes["attempts"]) == ("verified", 2)
    pr = (tiny.root / fixes["pr"]).read_text("utf-8")
    assert "  - fixed: legacy.txt:2: TODO fix me" in section(pr, "Attempts")

    leaves = tiny.task("leaves")
    assert (leaves["outcome"], leaves["attempts"]) == ("escalated", 2)
    assert leaves["reason"].startswith("budget exhausted: gate 'notodo'")
    [problem] = escalation_problems(tiny.root / leaves["escalation"])
    assert problem["location"] == {"path": "legacy.txt", "line": 2}
    assert problem["pre_existing"] is True
    assert problem["category"] == "agent_fixable"
    record = (tiny.root / leaves["escalation"]).read_text("utf-8")
    assert "pre-existing: already failing on the base commit" in record


def test_check_base_false_runs_nothing_on_base(tiny: TinyProject) -> None:
    commit_files(tiny.repo, {"legacy.txt": LEGACY}, "legacy")
    tiny.write_policy(gates=[NO_TODO], feedback={"check_base": False})
    tiny.add_spec("leaves", attempts=[[WRITE_DONE, FINISH], [FIX_NEW, FINISH]])
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    assert tiny.task("leaves")["outcome"] == "escalated"
    assert base_runs(tiny) == []
    feedback = (task_dir(tiny, "leaves") / "feedback-1.md").read_text("utf-8")
    assert "legacy.txt:2" in feedback and "pre-existing" not in feedback


# --- flaky tests: a failing test gate is re-run once on the same tree -------------------------

FLAKY_ONCE = (
    'test -f "$TMPDIR/ran" || { touch "$TMPDIR/ran"; '
    "echo 'FAILED tests/test_x.py::test_flaky - boom'; exit 1; }"
)


def test_test_failing_only_on_its_first_run_is_flaky_and_does_not_block(
    tiny: TinyProject,
) -> None:
    tiny.write_policy(gates=[gate("tests", FLAKY_ONCE)])
    tiny.add_spec("flaky", attempts=TWO_ATTEMPTS)
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("flaky")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    assert records(task) == [
        ("attempt", 1, "tests", False),
        ("attempt", 1, "tests", True),
        ("verify", 1, "tests", True),
    ]
    assert not list(task_dir(tiny, "flaky").glob("feedback-*.md"))
    assert base_runs(tiny) == []  # the gate passed in the end: nothing to compare

    pr = (tiny.root / task["pr"]).read_text("utf-8")
    assert "| attempt | 1 | tests (run 2) |" in pr
    assert section(pr, "Flaky").strip().splitlines() == ["- `tests/test_x.py::test_flaky`: boom"]


def test_summary_numbers_the_runs_of_a_re_run_gate(tiny: TinyProject) -> None:
    """summary.json is what a user reads first: the re-run must be told apart from the first
    run there too (`"run": 2`), as it is in the records' gate tables."""
    tiny.write_policy(gates=[gate("tests", FLAKY_ONCE)])
    tiny.add_spec("flaky")
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    assert [g.get("run") for g in tiny.task("flaky")["gates"]] == [1, 2, 1]


def test_pr_record_says_an_attempt_whose_only_failure_was_flaky_passed(
    tiny: TinyProject,
) -> None:
    """The attempt was verified on its gates: the Attempts section must not say it failed."""
    tiny.write_policy(gates=[gate("tests", FLAKY_ONCE)])
    tiny.add_spec("flaky")
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    pr = (tiny.root / tiny.task("flaky")["pr"]).read_text("utf-8")
    assert section(pr, "Attempts").strip().splitlines() == ["- attempt 1: passed"]


def test_flaky_block_true_escalates_instead_of_verifying(tiny: TinyProject) -> None:
    """With `flaky.block`, a flaky test blocks verification. Flaky failures are not the agent's
    doing and are not charged to its attempts (ARCHITECTURE.md): the task escalates at once;
    it is not fed back as a failure for a second attempt (on which the flaky test would pass)."""
    tiny.write_policy(gates=[gate("tests", FLAKY_ONCE)], flaky={"reruns": 1, "block": True})
    tiny.add_spec("blocked", attempts=[[WRITE_DONE, FINISH], [FINISH]])
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("blocked")
    assert task["outcome"] == "escalated", task["reason"]
    assert task["attempts"] == 1, task["reason"]
    assert "flaky" in task["reason"]
    assert task["pr"] is None
    problems = escalation_problems(tiny.root / task["escalation"])
    assert [(p["test_id"], p["category"]) for p in problems] == [
        ("tests/test_x.py::test_flaky", "flaky")
    ]


FLAKY_TESTS = '''import tempfile
from pathlib import Path


def test_flaky() -> None:
    """Fails on the first run of the task's gates only: the marker lives in $TMPDIR."""
    marker = Path(tempfile.gettempdir()) / "flaky-marker"
    if not marker.exists():
        marker.touch()
        raise AssertionError("fails on its first run only")


def test_steady() -> None:
    assert 1 + 1 == 2
'''


def test_real_pytest_flaky_test_is_recorded_with_its_test_id(tiny: TinyProject) -> None:
    commit_files(tiny.repo, {"tests/test_flaky.py": FLAKY_TESTS}, "flaky test")
    tiny.write_policy(gates=[gate("tests", "pytest -q tests")])
    tiny.add_spec("pytest-flaky")
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("pytest-flaky")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    assert records(task) == [
        ("attempt", 1, "tests", False),
        ("attempt", 1, "tests", True),
        ("verify", 1, "tests", True),
    ]
    # The re-run runs the failed test alone (tests/test_gate_reuse.py); verification, all.
    assert [g["counts"] for g in task["gates"]] == [
        {"failed": 1, "passed": 1},
        {"passed": 1},
        {"passed": 2},
    ]
    pr = (tiny.root / task["pr"]).read_text("utf-8")
    assert section(pr, "Flaky").strip().splitlines() == [
        "- `tests/test_flaky.py::test_flaky`: AssertionError: fails on its first run only"
    ]
    # The steady test never failed, so it is not flaky.
    assert "test_steady" not in pr


def test_reruns_0_makes_a_first_run_failure_the_agents(tiny: TinyProject) -> None:
    tiny.write_policy(gates=[gate("tests", FLAKY_ONCE)], flaky={"reruns": 0})
    tiny.add_spec("strict", attempts=TWO_ATTEMPTS)
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("strict")
    assert (task["outcome"], task["attempts"]) == ("verified", 2)
    # Attempt 2's run, on the committed tree, is the verification (tests/test_gate_reuse.py).
    assert records(task) == [("attempt", 1, "tests", False), ("attempt", 2, "tests", True)]
    assert task["verify_reused"]["attempt"] == 2
    assert section((tiny.root / task["pr"]).read_text("utf-8"), "Flaky") == ""


# --- the fake-green guard ----------------------------------------------------------------------

TEST_FILE = "def test_one() -> None:\n    assert True\n\n\ndef test_two() -> None:\n    assert 1\n"
ONE_TEST = "def test_one() -> None:\n    assert True\n"
DROP_TEST = {"tool": "write_file", "args": {"path": "tests/test_x.py", "content": ONE_TEST}}
NOQA = {"tool": "write_file", "args": {"path": "code.py", "content": "import os  # noqa: F401\n"}}


@pytest.fixture
def guarded(tiny: TinyProject) -> TinyProject:
    """The tiny project with a test file and a Python module on base."""
    commit_files(tiny.repo, {"tests/test_x.py": TEST_FILE, "code.py": "import os\n"}, "tests")
    return tiny


def test_guard_blocks_a_deleted_test_function(guarded: TinyProject) -> None:
    guarded.add_spec("drop", attempts=[[WRITE_DONE, DROP_TEST, FINISH]])
    result = guarded.run()

    assert result.exit_code == 0, result.stderr
    task = guarded.task("drop")
    assert (task["outcome"], task["attempts"]) == ("escalated", 1)
    assert task["reason"].startswith("fake-green guard: 1 finding(s) (test_function_removed)")
    # The gates passed; the guard stopped it before verification.
    assert records(task) == [("attempt", 1, "done", True)]
    nodes = [node for node, event in guarded.events("drop") if event == "enter"]
    assert nodes[-4:] == ["gates", "guard", "escalate", "teardown"]
    [problem] = escalation_problems(guarded.root / task["escalation"])
    assert problem["code"] == "test_function_removed"
    assert problem["test_id"] == "tests/test_x.py::test_two"
    assert problem["location"] == {"path": "tests/test_x.py", "line": 5}
    assert problem["category"] == "policy"
    # The work is kept on the branch.
    assert git(guarded.repo, "show", f"{task['branch']}:tests/test_x.py") == ONE_TEST


def test_guard_flag_verifies_and_lists_the_finding(guarded: TinyProject) -> None:
    guarded.write_policy(guard={"action": "flag"})
    guarded.add_spec("drop", attempts=[[WRITE_DONE, DROP_TEST, FINISH]])
    result = guarded.run()

    assert result.exit_code == 0, result.stderr
    task = guarded.task("drop")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    pr = (guarded.root / task["pr"]).read_text("utf-8")
    flagged = section(pr, "Flagged by the fake-green guard").strip().splitlines()
    assert len(flagged) == 1, flagged
    assert flagged[0].startswith("- test_function_removed: test function test_two was removed")


def test_guard_allow_verifies_and_lists_nothing(guarded: TinyProject) -> None:
    guarded.write_policy(guard={"allow": ["test_function_removed"]})
    guarded.add_spec("drop", attempts=[[WRITE_DONE, DROP_TEST, FINISH]])
    result = guarded.run()

    assert result.exit_code == 0, result.stderr
    task = guarded.task("drop")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    pr = (guarded.root / task["pr"]).read_text("utf-8")
    assert "Flagged" not in pr and "test_function_removed" not in pr


def test_guard_blocks_an_added_noqa(guarded: TinyProject) -> None:
    guarded.add_spec("noqa", attempts=[[WRITE_DONE, NOQA, FINISH]])
    result = guarded.run()

    assert result.exit_code == 0, result.stderr
    task = guarded.task("noqa")
    assert task["outcome"] == "escalated"
    assert task["reason"].startswith("fake-green guard: 1 finding(s) (suppression_added)")
    [problem] = escalation_problems(guarded.root / task["escalation"])
    assert problem["code"] == "suppression_added"
    assert problem["location"] == {"path": "code.py", "line": 1}
    assert "# noqa: F401" in problem["detail"]


def test_guard_passes_a_change_that_weakens_nothing(guarded: TinyProject) -> None:
    extra = TEST_FILE + "\n\ndef test_three() -> None:\n    assert 3\n"
    add_test = {"tool": "write_file", "args": {"path": "tests/test_x.py", "content": extra}}
    edit = {
        "tool": "edit_file",
        "args": {"path": "code.py", "old": "import os", "new": "import sys"},
    }
    guarded.add_spec("fine", attempts=[[WRITE_DONE, add_test, edit, FINISH]])
    result = guarded.run()

    assert result.exit_code == 0, result.stderr
    task = guarded.task("fine")
    assert task["outcome"] == "verified", task["reason"]
    assert "Flagged" not in (guarded.root / task["pr"]).read_text("utf-8")
