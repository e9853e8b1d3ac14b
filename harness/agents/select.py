"""Chooses the Agent backend for a task from the policy (or the --agent override)."""

from __future__ import annotations

import os

from harness.agents import Agent
from harness.agents.fleet import Fleet
from harness.agents.replay import ReplayAgent, load_replay
from harness.config.policy import Policy
from harness.config.spec import Spec
from harness.errors import InputError
from harness.problems import Problem, problem_type


class AgentUnavailable(Exception):
    """No agent can run this task; the task ends in error before any agent runs, with this
    reason (owner_action_required: a person must fix the set-up)."""


def agent_unavailable(exc: AgentUnavailable) -> Problem:
    """The problem a task that ends for want of an agent records."""
    return Problem(
        type=problem_type("agent-unavailable"),
        title="No agent can run this task",
        detail=str(exc),
        category="policy",
        retryable=False,
        owner_action_required=True,
    )


def policy_for(spec: Spec, policy: Policy) -> Policy:
    """The policy with a fleet variant's agent kind or model, when it names one."""
    variant = spec.variant
    if variant is None or not (variant.agent or variant.model):
        return policy
    chosen: dict[str, str] = {"kind": variant.agent or policy.agent.kind}
    chosen |= {"model": variant.model} if variant.model else {}
    return policy.model_copy(update={"agent": policy.agent.model_copy(update=chosen)})


def select_agent(spec: Spec, policy: Policy, fleet: Fleet) -> Agent:
    """The policy's agent (the run's --agent already applied to it) for `spec`; a fleet
    variant's own agent kind or model, when it names one, instead."""
    policy = policy_for(spec, policy)
    kind = policy.agent.kind
    if kind == "replay":
        try:
            return ReplayAgent(load_replay(spec))
        except InputError as exc:
            raise AgentUnavailable(str(exc)) from None
    # Imported on use: the SDK and its HTTP stack are only needed by runs that call a model.
    if kind == "command":
        from harness.agents.command import CommandAgent

        return CommandAgent(policy.agent, policy.gates, fleet.limiter)
    from harness.agents.anthropic import API_KEY_VARIABLE, AnthropicAgent

    if not os.environ.get(API_KEY_VARIABLE):
        raise AgentUnavailable(
            f"{API_KEY_VARIABLE} is not set: set it to use the anthropic agent "
            "(ANTHROPIC_BASE_URL selects another Anthropic-compatible endpoint), "
            "or run with --agent replay"
        )
    assert policy.agent.model is not None  # Policy.check_agent ran before the run started
    return AnthropicAgent(policy.agent, policy.prices[policy.agent.model], fleet, policy.gates)
