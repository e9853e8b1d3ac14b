"""What all tasks of a run share when they call a model: the adaptive request limiter
(harness.agents.limiter) and the run's spend.

Fifty tasks on one API key must not stampede it: requests wait for a free slot, for the time
the server said, and for room in the rolling tokens-per-minute window, instead of failing on
429s; and the limit learns the server's real capacity.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from harness.agents import Usage
from harness.agents.limiter import (
    AdaptiveLimiter,
    LimiterState,
    MemoryLimiterState,
    limiter_key,
)
from harness.config.policy import Policy


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
    limiter: AdaptiveLimiter
    spend: RunSpend

    @classmethod
    def for_policy(
        cls, policy: Policy, state: LimiterState | None = None, holder_prefix: str = ""
    ) -> Fleet:
        """`state`: where the limiter's state lives; a run passes the store's, so that its
        workers share one limit (by default, this process alone)."""
        limits = policy.agent.rate_limit
        limiter = AdaptiveLimiter(
            state or MemoryLimiterState(),
            limits.max_concurrent_requests,
            limits.tokens_per_minute,
            holder_prefix=holder_prefix,
        )
        return cls(limiter, RunSpend(policy.run_budget.max_cost_usd))


def account_key(policy: Policy) -> str:
    """Who the run's model calls are billed to and limited as, for the shared limiter state:
    a hash of the credentials the agent is given (and the endpoint), never the credentials."""
    agent = policy.agent
    if agent.kind == "anthropic":
        from harness.agents.anthropic import API_KEY_VARIABLE, BASE_URL_VARIABLE

        names = [BASE_URL_VARIABLE, API_KEY_VARIABLE]
    else:  # a CLI agent is limited by the environment it is handed (its API key)
        names = sorted(agent.env)
    return limiter_key(agent.kind, *(f"{name}={os.environ.get(name, '')}" for name in names))
