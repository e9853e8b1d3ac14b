"""The Agent protocol and the records an attempt leaves. One file per backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from harness.config.policy import Budget
from harness.config.spec import Spec
from harness.feedback import Feedback
from harness.problems import Problem
from harness.sandbox import Sandbox

StopReason = Literal[
    "finished",  # the agent called finish (or ended its turn)
    "max_steps",  # the step budget ran out
    "script_exhausted",  # a replay attempt ran out of steps without finish
    "budget",  # tokens, cost (task or run) or wall clock ran out
    "infrastructure",  # the model API stayed unavailable; not the agent's fault
    "owner_action_required",  # a person must act: bad key, unknown model, refused request
    "error",  # anything else that stopped the attempt
    "refused",  # policy refused what it made (files over the size cap): not committed
]


class Usage(BaseModel):
    """Model usage and its cost; summed per attempt, per task and per run."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    @property
    def all_input_tokens(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


class ToolCall(BaseModel):
    tool: str
    args: dict[str, Any]
    ok: bool
    result: str
    """What the tool returned (capped); a tool error's message when `ok` is false."""
    duration_s: float


class AttemptRecord(BaseModel):
    number: int
    agent: str
    stop_reason: StopReason
    summary: str | None = None
    """The agent's own account from `finish`; informative only, never the verdict."""
    error: str | None = None
    problem: Problem | None = None
    """Why the attempt stopped early, as a problem (budget, infrastructure, owner action)."""
    steps: list[ToolCall] = []
    usage: Usage = Usage()
    duration_s: float = 0.0
    egress_refused: list[str] = []
    """Connections the agent's egress proxy refused during the attempt ("CONNECT evil.com:443")."""


@dataclass(frozen=True)
class AttemptContext:
    """What one attempt may use: its number, the task's budget and what earlier attempts spent."""

    number: int
    budget: Budget
    spent: Usage
    """This task's usage on earlier attempts; budgets are per task, not per attempt."""
    deadline: float
    """time.monotonic() at which the task's wall-clock budget ends."""
    log_dir: Path
    """Where this attempt's logs go."""
    trajectory: Path
    """The task's trajectory.jsonl: a model-backed agent appends one line per call."""
    stopping: Callable[[], bool] = lambda: False
    """True once the run is stopping and the attempt's grace period is over (SIGINT, SIGTERM):
    a model-backed agent makes no further call. What it did is discarded and done again."""


class Agent(Protocol):
    name: str
    """Shown in the summary and the records, e.g. "replay"."""

    def attempt(
        self, spec: Spec, sandbox: Sandbox, feedback: Feedback | None, context: AttemptContext
    ) -> AttemptRecord:
        """Make one attempt at the spec in the sandbox. `feedback` is None on attempt 1: later,
        what the harness measured on the attempt before."""
        ...
