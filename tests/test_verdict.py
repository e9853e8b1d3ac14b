"""harness.gates.verdict.judge: every branch, and the order in which they are decided."""

from __future__ import annotations

from typing import Any

import pytest

from harness.config.policy import Budget
from harness.gates.record import GateRecord, GateRun, Phase
from harness.gates.verdict import Verdict, judge

BUDGET = Budget(max_attempts=3, wall_clock_s=100)


def record(passed: bool = False, **fields: Any) -> GateRecord:
    base: dict[str, Any] = {
        "name": "tests",
        "kind": "test",
        "command": "pytest -q",
        "attempt": 1,
        "phase": "attempt",
        "exit_code": 0 if passed else 1,
        "duration_s": 0.5,
        "passed": passed,
    }
    return GateRecord(**(base | fields))


def failed_run(failure: GateRecord | None = None, **flags: Any) -> GateRun:
    failure = failure or record()
    return GateRun(records=[failure], failed=failure, **flags)


def verdict(
    run: GateRun, *, phase: Phase = "attempt", attempt: int = 1, elapsed_s: float = 1.0
) -> Verdict:
    return judge(run, phase=phase, attempt=attempt, budget=BUDGET, elapsed_s=elapsed_s)


def test_every_gate_passing_passes_even_past_every_budget() -> None:
    run = GateRun(records=[record(passed=True)])
    assert verdict(run, attempt=9, elapsed_s=1e6) == Verdict("pass")


def test_a_failure_with_attempts_and_time_left_is_retried() -> None:
    assert verdict(failed_run(), attempt=2, elapsed_s=99) == Verdict("retry")


def test_a_missing_tool_is_the_tasks_error() -> None:
    run = failed_run(record(exit_code=127, tool_missing=True, missing_tool="mypyy"))
    assert verdict(run) == Verdict(
        "error",
        "gate 'tests' could not run: 'mypyy' was not found in the sandbox (install it, or fix "
        "the gate's command)",
    )


def test_flaky_tests_policy_refuses_escalate() -> None:
    assert verdict(failed_run(flaky_blocked=True)) == Verdict(
        "escalate",
        "flaky: gate 'tests' failed, then passed on a re-run of the same tree, and policy "
        "(flaky.block) does not accept flaky tests",
    )


@pytest.mark.parametrize(
    ("fields", "what"),
    [
        ({"timed_out": True, "exit_code": None}, "timed out on every try"),
        ({"killed": True, "exit_code": -9}, "was killed (out of memory?) on every try"),
        (
            {"setup_failure": "pricing never answered"},
            "could not be set up: pricing never answered",
        ),
    ],
)
def test_infrastructure_escalates_without_charging_the_agent(
    fields: dict[str, Any], what: str
) -> None:
    # attempts are left: an infrastructure failure is not the agent's to retry
    assert verdict(failed_run(record(**fields)), attempt=1) == Verdict(
        "escalate",
        f"infrastructure: gate 'tests' {what} (not charged to the agent; a person must act)",
    )


def test_a_verify_failure_escalates_however_many_attempts_are_left() -> None:
    assert verdict(failed_run(), phase="verify", attempt=1) == Verdict(
        "escalate", "verification failed: gate 'tests' failed on the committed tree"
    )


def test_the_last_attempt_failing_exhausts_the_budget() -> None:
    assert verdict(failed_run(), attempt=3) == Verdict(
        "escalate", "budget exhausted: gate 'tests' still failing after 3 attempts"
    )


def test_past_the_wall_clock_escalates_with_attempts_left() -> None:
    assert verdict(failed_run(), attempt=1, elapsed_s=100.5) == Verdict(
        "escalate", "wall-clock budget exhausted"
    )


def test_what_no_attempt_can_fix_is_decided_before_the_budgets() -> None:
    missing = failed_run(record(tool_missing=True, missing_tool="x", exit_code=127))
    assert verdict(missing, phase="verify", attempt=3, elapsed_s=1e6).action == "error"
    infra = failed_run(record(timed_out=True, exit_code=None))
    assert str(verdict(infra, attempt=3, elapsed_s=1e6).reason).startswith("infrastructure:")
    # the attempt budget is named before the wall clock when both ran out
    both = verdict(failed_run(), attempt=3, elapsed_s=1e6)
    assert str(both.reason).startswith("budget exhausted")
