"""Defer, don't drop: a task the model API cut short goes back to the store until a time, its
sandbox and checkpoint kept, and is never charged an attempt for it.

- Parked: its request's retries ran out. It is given back (pending, not before a short,
  jittered wait), its lane takes another task, and it is retried later in the same run; only
  when the run has nothing else to do does a lane wait for it.
- Deferred: the wait is longer than the run can give (a retry-after past `max_wait_s`, past
  the run's `not_after`, or the circuit breaker open). The run ends without it: outcome
  `deferred` with `retry_at`, and `harness resume` continues it from its checkpoint.
- Circuit breaker: when every model call of the run has failed for `agent.circuit_breaker_s`
  (an outage, a locked key), no new task starts (each is deferred unstarted) and running ones
  are deferred at their next call, instead of each burning its retries.

Both are one store state (pending with a not-before, harness.store.limiter_state): a parked
task the run never came back to is deferred.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from harness.agents import AttemptRecord
from harness.run.context import RunContext


class Deferred(RuntimeError):
    """The agent's attempt was cut by the model API: raised through the graph (not turned
    into an outcome), so no checkpoint records the agent node and the task's next claim runs
    the same attempt again (not charged: its number is not used up)."""

    def __init__(self, retry_at: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_at = retry_at
        self.reason = reason


def deferral_of(record: AttemptRecord) -> Deferred | None:
    """The attempt's deferral when the model API stopped it (a retryable infrastructure
    problem with a time to try again), else None."""
    problem = record.problem
    if record.stop_reason != "infrastructure" or problem is None or not problem.retryable:
        return None
    if problem.retry_after_s is None:
        return None
    return Deferred(time.time() + problem.retry_after_s, problem.detail)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


BREAKER_OPEN = "circuit breaker open"
"""How a task deferred by the breaker says so; the run prints `breaker_reason` once."""


def breaker_reason(ctx: RunContext) -> str | None:
    """Why no task may start (the run's calls have all failed for too long), or None."""
    limit = ctx.config.policy.agent.circuit_breaker_s
    failing = ctx.services.fleet.limiter.failing_for()
    if failing < limit:
        return None
    return (
        f"circuit breaker: every model call of the run has failed for {failing:.0f} s "
        f"(agent.circuit_breaker_s: {limit:g}); no new task starts and running ones are deferred"
    )


@dataclass(frozen=True)
class Parking:
    """Where a deferred task goes, and whether the run will wait for it."""

    retry_at: float
    reason: str
    in_run: bool
    """Due within what the run may still wait (max_wait_s, not_after): retried in this run."""

    @property
    def summary_reason(self) -> str:
        return f"deferred until {iso(self.retry_at)}: {self.reason}"


def why_not_started(earlier: dict[str, Any] | None) -> str:
    """What a task the breaker keeps from starting is deferred with: why it was parked
    before, if it was (its earlier result), else that it never started."""
    reason = str((earlier or {}).get("reason") or "")
    if not reason.startswith("deferred until "):
        return "not started"
    detail = reason.split(": ", 1)[-1]
    return detail.removeprefix(f"{BREAKER_OPEN}: ")


def horizon(ctx: RunContext) -> float:
    """The latest time the run waits until for a parked task: max_wait_s from now, and never
    past the run's `not_after` (a night's window end)."""
    latest = time.time() + ctx.config.policy.agent.retry.max_wait_s
    return latest if ctx.config.not_after is None else min(latest, ctx.config.not_after)


def parking_for(ctx: RunContext, deferred: Deferred) -> Parking:
    agent = ctx.config.policy.agent
    if breaker_reason(ctx) is not None:  # the run says why once (breaker_reason); each task:
        # Past what lanes wait for (max_wait_s), so that the run ends instead of taking it
        # back under a breaker that stays open while nothing calls.
        later = time.time() + max(agent.circuit_breaker_s, agent.retry.max_wait_s + 1)
        return Parking(max(deferred.retry_at, later), f"{BREAKER_OPEN}: {deferred.reason}", False)
    return Parking(deferred.retry_at, deferred.reason, in_run=deferred.retry_at <= horizon(ctx))


def wait_for_parked(ctx: RunContext) -> bool:
    """Nothing to claim: wait (up to a second) while a parked task falls due within what the
    run may wait; True to look again, False when the lane is done (nothing parked, or only
    tasks deferred past the horizon). With the breaker open a task that falls due is taken
    back only to be deferred, saying so."""
    parked = ctx.services.store.parked(ctx.config.run_id)
    if not parked:
        return False
    due = min(parked.values())
    if due > horizon(ctx):
        return False
    time.sleep(max(0.05, min(1.0, due - time.time())))
    return True
