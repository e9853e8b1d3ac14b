"""A night's spending cap, kept by reserving each task's estimated cost when it is admitted.

A task is admitted only if its reservation fits in what is left: the cap minus what finished
tasks spent, minus what running tasks reserved, minus the finish-line allowance. When a task
finishes its reservation is replaced by what it really cost, so later admissions see the
money it did not use (or the overshoot it made). Each admitted task runs with its reservation
as its own cost cap, and the run's model calls stop at the night's cap (the run budget).

The finish-line allowance is held back from admission, never from a running task: it absorbs
the one model call a task may be inside of when it reaches its cap (a call in flight is
paid for). Publishing and escalating make no model calls, so the cap never stops them; a task
stopped by its cap still commits its work and escalates.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

FINISH_LINE_SHARE = 0.1
"""Of the night's budget, held back from admission (see the module docstring)."""


def p90(costs: list[float]) -> float:
    """The 90th percentile by nearest rank: a cost 9 in 10 earlier tasks stayed within."""
    ordered = sorted(costs)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Estimate:
    usd: float | None
    """None: nothing to go by (no history and no per-task cap): the task reserves all that
    is left, so it runs alone against the cap."""
    basis: str
    """Where the figure comes from, for the skip reason: "p90 of 12 earlier tasks", …"""


Estimator = Callable[[str], Estimate]


@dataclass
class NightBudget:
    cap_usd: float | None
    """None: no cap; every task is admitted."""
    allowance_usd: float = 0.0
    spent_usd: float = 0.0
    reserved: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, cap_usd: float | None) -> NightBudget:
        allowance = round(cap_usd * FINISH_LINE_SHARE, 6) if cap_usd else 0.0
        return cls(cap_usd, allowance)

    @property
    def reserved_usd(self) -> float:
        return sum(self.reserved.values())

    def left_usd(self) -> float:
        """What a new reservation may take now."""
        if self.cap_usd is None:
            return math.inf
        return self.cap_usd - self.allowance_usd - self.spent_usd - self.reserved_usd

    def reserve(self, spec_id: str, estimate: Estimate) -> float | str:
        """The task's reservation (its cost cap), or why it does not fit."""
        with self._lock:
            left = self.left_usd()
            wanted = left if estimate.usd is None else estimate.usd
            if self.cap_usd is None:
                self.reserved[spec_id] = wanted if math.isfinite(wanted) else 0.0
                return self.reserved[spec_id]
            if (estimate.usd is None and left <= 0) or wanted > left + 1e-9:
                return (
                    f"budget: its estimate ${wanted:.2f} ({estimate.basis}) does not fit in the "
                    f"${max(left, 0.0):.2f} left of the night's ${self.cap_usd:.2f} (spent "
                    f"${self.spent_usd:.2f}, reserved ${self.reserved_usd:.2f}, finish-line "
                    f"allowance ${self.allowance_usd:.2f})"
                )
            self.reserved[spec_id] = wanted
            return wanted

    def settle(self, spec_id: str, cost_usd: float) -> None:
        """The task finished: its reservation gives way to what it cost."""
        with self._lock:
            self.reserved.pop(spec_id, None)
            self.spent_usd += cost_usd
