"""Chooses the Agent backend for a task from the policy (or the --agent override)."""

from __future__ import annotations

from pathlib import Path

from harness.agents import Agent
from harness.agents.replay import ReplayAgent, load_replay
from harness.errors import InputError
from harness.policy import AgentKind, Budget
from harness.spec import Spec


class AgentUnavailable(Exception):
    """No agent can run this task; the task escalates before any agent runs, with this reason."""


def select_agent(kind: AgentKind, spec: Spec, budget: Budget, log_dir: Path) -> Agent:
    if kind == "replay":
        try:
            script = load_replay(spec)
        except InputError as exc:
            raise AgentUnavailable(str(exc)) from None
        return ReplayAgent(script, budget.max_steps, budget.wall_clock_s, log_dir)
    raise AgentUnavailable(
        f"agent backend {kind!r} is not available in this version of harness; "
        "run with --agent replay, or set `agent: {kind: replay}` in the policy"
    )
