"""Which claimed task of a night runs, and with what: the batch's lanes ask `admit` before a
task starts and tell `finished` when it ends (graphs/batch.py).

A task is skipped, with its reason, when the window is over, when a spec it waits for
(`after:`) did not end verified, or when its cost estimate does not fit in the budget left. An
admitted task runs with its reservation as its cost cap and the window's end as its wall-clock
cap, so it cannot outspend the night or outlast it; one still running at the window's end is
wrapped up (its work committed, escalated: "window ended").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from harness.config.policy import BudgetOverride, Policy
from harness.config.spec import Spec
from harness.night.budget import Estimate, NightBudget, p90
from harness.night.window import NightWindow
from harness.run.ledger import NightSummary, TaskResult
from harness.store import Store

WINDOW_ENDED = "window ended"


class Admission(Protocol):
    """What the batch asks before and after each task (graphs/batch.py)."""

    def admit(self, spec: Spec) -> Spec | str:
        """The spec to run (its budget capped), or why it is skipped."""
        ...

    def finished(self, spec: Spec, result: TaskResult) -> TaskResult:
        """The task's result as recorded (its reservation settled)."""
        ...

    def summary(self) -> NightSummary: ...


def window_end_reason(not_after: float | None, now: float | None = None) -> str | None:
    """Why a task's next step does not start: the window it runs in has ended (None: it may).
    The blueprint then escalates it, committing its work (graphs/node.py)."""
    if not_after is None or (now or time.time()) < not_after:
        return None
    at = datetime.fromtimestamp(not_after).astimezone().strftime("%H:%M")
    return f"{WINDOW_ENDED} at {at}: the task was wrapped up, its work committed on its branch"


def cost_estimator(store: Store, policy_path: str, policy: Policy) -> Callable[[Spec], Estimate]:
    """A task's cost estimate: $0 for the replay agent; else the p90 of earlier tasks' costs
    with this policy on this repository; else the policy's per-task cap."""

    def estimate(spec: Spec) -> Estimate:
        if policy.agent.kind == "replay":
            return Estimate(0.0, "the replay agent costs nothing")
        costs = store.task_costs(policy_path, spec.git_toplevel)
        if costs:
            return Estimate(round(p90(costs), 6), f"p90 of {len(costs)} earlier tasks")
        cap = (spec.budget.apply_to(policy.budget) if spec.budget else policy.budget).max_cost_usd
        if cap is not None:
            return Estimate(cap, "no history: the policy's budget.max_cost_usd")
        return Estimate(None, "no history and no budget.max_cost_usd")

    return estimate


@dataclass
class NightAdmission:
    window: NightWindow
    budget: NightBudget
    estimate: Callable[[Spec], Estimate]
    outcomes: Callable[[], dict[str, str]]
    """Finished tasks of the run: spec id → outcome."""
    stopping: Callable[[], bool]
    """The run was asked to stop (SIGINT, SIGTERM): stop waiting."""
    policy: Policy
    poll_s: float = 0.5

    def admit(self, spec: Spec) -> Spec | str:
        if self.window.over():
            return f"window: the night ended at {self._end()} before it started"
        waited = self._wait_for(spec)
        if waited is not None:
            return waited
        if self.window.over():  # it ended while the task waited
            return f"window: the night ended at {self._end()} before it started"
        reservation = self.budget.reserve(spec.id, self.estimate(spec))
        if isinstance(reservation, str):
            return reservation
        return self._capped(spec, reservation)

    def finished(self, spec: Spec, result: TaskResult) -> TaskResult:
        self.budget.settle(spec.id, result.usage.cost_usd)
        reason = result.reason or ""
        if (
            result.outcome == "escalated"
            and self.window.over()
            and not reason.startswith(WINDOW_ENDED)
        ):  # stopped by the window's end inside a step (its wall clock ran out with it)
            return result.model_copy(update={"reason": f"{WINDOW_ENDED} ({reason})"})
        return result

    def summary(self) -> NightSummary:
        return NightSummary(
            until=self.window.end.isoformat(timespec="seconds"),
            budget_usd=self.budget.cap_usd,
            spent_usd=round(self.budget.spent_usd, 6),
            reserved_usd=round(self.budget.reserved_usd, 6),
        )

    def _end(self) -> str:
        return self.window.end.strftime("%H:%M")

    def _wait_for(self, spec: Spec) -> str | None:
        """Wait until every spec `spec` waits for has ended; why it is skipped, if it is."""
        while True:
            done = self.outcomes()
            failed = [f"{dep} ended {done[dep]}" for dep in spec.after if dep in done]
            failed = [line for line in failed if not line.endswith(" verified")]
            if failed:
                return f"after: {', '.join(failed)}, not verified"
            if all(dep in done for dep in spec.after):
                return None
            if self.stopping() or self.window.over():
                pending = ", ".join(dep for dep in spec.after if dep not in done)
                return f"after: {pending} had not ended when the night did"
            time.sleep(self.poll_s)

    def _capped(self, spec: Spec, reservation: float) -> Spec:
        """The spec with its reservation as its cost cap and the window's end as its
        wall-clock cap."""
        budget = spec.budget.apply_to(self.policy.budget) if spec.budget else self.policy.budget
        caps = spec.budget.model_dump(exclude_none=True) if spec.budget else {}
        caps["wall_clock_s"] = min(budget.wall_clock_s, max(1.0, self.window.seconds_left()))
        if self.policy.agent.kind != "replay" and reservation > 0:
            caps["max_cost_usd"] = min(budget.max_cost_usd or reservation, reservation)
        return spec.model_copy(update={"budget": BudgetOverride(**caps)})
