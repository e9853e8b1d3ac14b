"""What all tasks of a run share when they call a model: a request limiter and the run's spend.

Fifty tasks on one API key must not stampede it: requests wait here for a free slot and for
room in the rolling tokens-per-minute window, instead of failing on 429s.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.agents import Usage
from harness.config.policy import Policy

WINDOW_S = 60.0


class FleetLimiter:
    """At most `max_concurrent` requests in flight, and (when set) at most `tokens_per_minute`
    tokens used in the last minute when a request is admitted.

    The token check is on usage already reported, so one admitted request can overshoot the
    window by its own size; what it prevents is a run that keeps pushing past the limit.
    """

    def __init__(self, max_concurrent: int, tokens_per_minute: int | None) -> None:
        self.max_concurrent = max_concurrent
        self.tokens_per_minute = tokens_per_minute
        self._cond = threading.Condition()
        self._in_flight = 0
        self._window: deque[tuple[float, int]] = deque()
        self.peak_in_flight = 0
        self.waited_s = 0.0

    @contextmanager
    def slot(self) -> Iterator[None]:
        started = time.monotonic()
        with self._cond:
            while not self._admissible():
                self._cond.wait(timeout=self._next_expiry())
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            self.waited_s += time.monotonic() - started
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def record(self, tokens: int) -> None:
        with self._cond:
            self._window.append((time.monotonic(), tokens))

    def _admissible(self) -> bool:
        if self._in_flight >= self.max_concurrent:
            return False
        if self.tokens_per_minute is None:
            return True
        cutoff = time.monotonic() - WINDOW_S
        while self._window and self._window[0][0] < cutoff:
            self._window.popleft()
        return sum(tokens for _, tokens in self._window) < self.tokens_per_minute

    def _next_expiry(self) -> float:
        if not self._window:
            return 1.0
        return max(0.05, self._window[0][0] + WINDOW_S - time.monotonic())


@dataclass
class RunSpend:
    """Model usage of the whole run, against the run-wide cost cap."""

    max_cost_usd: float | None
    total: Usage = field(default_factory=Usage)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, usage: Usage) -> None:
        with self._lock:
            self.total = self.total + usage

    def exhausted(self) -> bool:
        return self.max_cost_usd is not None and self.total.cost_usd >= self.max_cost_usd


@dataclass
class Fleet:
    limiter: FleetLimiter
    spend: RunSpend

    @classmethod
    def for_policy(cls, policy: Policy) -> Fleet:
        limits = policy.agent.rate_limit
        return cls(
            FleetLimiter(limits.max_concurrent_requests, limits.tokens_per_minute),
            RunSpend(policy.run_budget.max_cost_usd),
        )
