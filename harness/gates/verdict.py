"""The verdict on one phase's gate run: pass, retry with feedback, escalate with a reason, or
error. A pure function of what harness measured, so every branch has a unit test.

Order matters: what no attempt can fix is decided first (a tool missing from the sandbox is
the task's error; flaky tests policy refuses and infrastructure that failed on every try are
escalated, never charged to the agent), then the phase (a verify failure is never retried),
then the budgets (attempts, then wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.config.policy import Budget
from harness.gates.record import GateRun, Phase

Action = Literal["pass", "retry", "escalate", "error"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str | None = None
    """Why the task escalates or errs (None on pass and retry)."""


def judge(run: GateRun, *, phase: Phase, attempt: int, budget: Budget, elapsed_s: float) -> Verdict:
    """`run`'s verdict, on attempt number `attempt`, `elapsed_s` into the task's wall clock."""
    failed = run.failed
    if failed is None:
        return Verdict("pass")
    if failed.tool_missing:
        return Verdict(
            "error",
            f"gate {failed.name!r} could not run: {failed.missing_tool!r} was not found in the "
            "sandbox (install it, or fix the gate's command)",
        )
    if run.flaky_blocked:
        return Verdict(
            "escalate",
            f"flaky: gate {failed.name!r} failed, then passed on a re-run of the same tree, "
            "and policy (flaky.block) does not accept flaky tests",
        )
    if run.infrastructure:
        what = "timed out" if failed.timed_out else "was killed (out of memory?)"
        what = f"{what} on every try"
        if failed.setup_failure:
            what = f"could not be set up: {failed.setup_failure}"
        return Verdict(
            "escalate",
            f"infrastructure: gate {failed.name!r} {what} "
            "(not charged to the agent; a person must act)",
        )
    if phase == "verify":
        return Verdict(
            "escalate", f"verification failed: gate {failed.name!r} failed on the committed tree"
        )
    if attempt >= budget.max_attempts:
        return Verdict(
            "escalate",
            f"budget exhausted: gate {failed.name!r} still failing after {attempt} attempts",
        )
    if elapsed_s > budget.wall_clock_s:
        return Verdict("escalate", "wall-clock budget exhausted")
    return Verdict("retry")
