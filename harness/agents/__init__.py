"""The Agent protocol and the records an attempt leaves. One file per backend."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel

from harness.problems import Problem
from harness.sandbox import Sandbox
from harness.spec import Spec

StopReason = Literal["finished", "max_steps", "script_exhausted", "error"]


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
    steps: list[ToolCall] = []
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    duration_s: float = 0.0


class Agent(Protocol):
    name: str
    """Shown in the summary and the records, e.g. "replay"."""

    def attempt(
        self, spec: Spec, sandbox: Sandbox, feedback: list[Problem], number: int
    ) -> AttemptRecord:
        """Make one attempt at the spec in the sandbox. `feedback` is empty on attempt 1."""
        ...
