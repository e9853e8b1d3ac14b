"""Chooses the Agent backend for a task from the policy (or the --agent override)."""

from __future__ import annotations

import os

from harness.agents import Agent
from harness.agents.fleet import Fleet
from harness.agents.replay import ReplayAgent, load_replay
from harness.config.policy import AgentKind, Policy
from harness.config.spec import Spec
from harness.errors import InputError


class AgentUnavailable(Exception):
    """No agent can run this task; the task escalates before any agent runs, with this reason."""


def select_agent(kind: AgentKind, spec: Spec, policy: Policy, fleet: Fleet) -> Agent:
    if kind == "replay":
        try:
            return ReplayAgent(load_replay(spec))
        except InputError as exc:
            raise AgentUnavailable(str(exc)) from None
    # Imported on use: the SDK and its HTTP stack are only needed by runs that call a model.
    if kind == "command":
        from harness.agents.command import CommandAgent

        return CommandAgent(policy.agent, policy.gates)
    from harness.agents.anthropic import API_KEY_VARIABLE, AnthropicAgent

    if not os.environ.get(API_KEY_VARIABLE):
        raise AgentUnavailable(
            f"{API_KEY_VARIABLE} is not set: set it to use the anthropic agent "
            "(ANTHROPIC_BASE_URL selects another Anthropic-compatible endpoint), "
            "or run with --agent replay"
        )
    assert policy.agent.model is not None  # Policy.check_agent ran before the run started
    return AnthropicAgent(policy.agent, policy.prices[policy.agent.model], fleet, policy.gates)
