"""The per-task blueprint: every step of one task, from triage to teardown.

    triage ─► provision ─► agent ─► gates ──pass──► guard ─► verify ─► publish ─► teardown
                             ▲        │ fail, budget left      │ findings │ fail    │
                             └─ feedback ◄┘   no budget ──► escalate ◄──────────────┘
    tier 3 ─► escalate before any agent runs                 │
                                                             ▼
                                                         teardown

Deterministic nodes decide; the agent node is the only place judgement is used. An agent that
cannot run (no key, no CLI, no replay, a crash at its start) ends the task as `error`, for a
person to fix the set-up; so does any node that raises. Both still go through teardown, which
always runs and commits what is uncommitted before it removes the worktree.

Every node may run twice: a resumed task runs again the node a crash interrupted. The sandbox
is taken back (harness.sandbox.lifecycle), and the side effects (an attempt's commit, the PR,
the escalation) happen once (harness.run.effects).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs.node import Update, node
from harness.agents import Usage
from harness.agents.select import AgentUnavailable, agent_unavailable
from harness.config.spec import Spec
from harness.feedback import Feedback, compact, render_for_agent
from harness.gates.diff_review import review_diff
from harness.gates.record import GateRecord, Phase
from harness.gates.reuse import VerifyReuse
from harness.gates.verdict import judge
from harness.problems import Problem, one_liners
from harness.publish import Escalation, Evidence, PublishRefused, PullRequest, refusal
from harness.run.attempt import could_not_run, make_attempt, stop_escalation
from harness.run.context import RunContext
from harness.run.gate_phase import PhaseResult, run_gate_phase
from harness.run.ledger import write_atomic


class TaskState(TypedDict, total=False):
    spec: Spec
    started_at: float
    """Wall-clock start (epoch seconds); the wall-clock budget counts from here."""
    attempt: int
    """Agent attempts started so far."""
    gate_records: Annotated[list[GateRecord], operator.add]
    gates_passed: bool
    problems: list[Problem]
    """Why the task cannot go on as it is: the last failing gate's problems (classified), or
    the problem that stops it (budget, infrastructure, guard findings, no agent)."""
    feedback: Feedback
    """What the next attempt is told: the last failing gate's problems, compacted."""
    fixed: dict[str, list[str]]
    """Per attempt number, the problems of the attempt before that this one made go away."""
    found: dict[str, list[str]]
    """Per attempt number, its problems in one line each (for escalation records)."""
    flaky: Annotated[list[Problem], operator.add]
    """Tests that failed and then passed on a re-run."""
    flagged: list[Problem]
    """Fake-green guard findings under `guard.action: flag`; listed in the PR record."""
    verify_reused: VerifyReuse | None
    """Verification ran no gate: the last attempt's runs were of exactly the committed tree."""
    escalate_reason: str | None
    cancelled: bool
    """A fleet sibling was verified first (`--first-verified`): this one stopped."""
    outcome: Literal["verified", "escalated", "error", "cancelled"] | None
    reason: str | None
    branch: str | None
    pr: str | None
    escalation: str | None
    agent_s: float
    gates_s: float
    usage: Usage
    """Model usage summed over the task's attempts."""


# What the state holds besides plain values: the checkpointer revives these, and nothing else
# it finds in the store (harness.store.sql.checkpoint_serializer).
STATE_MODELS = (Spec, Problem, Feedback, GateRecord, Usage, VerifyReuse)


@node("triage")
def triage(state: TaskState, ctx: RunContext) -> Update:
    spec = state["spec"]
    if spec.tier == 3:
        return {"escalate_reason": "tier 3 (human-led): escalated before any agent runs"}
    try:
        ctx.live.agent(spec)
    except AgentUnavailable as exc:  # the set-up is broken: an error a person must fix
        why = f"owner_action_required: no agent: {exc}"
        return {"outcome": "error", "reason": why, "problems": [agent_unavailable(exc)]}
    return {}


@node("provision")
def provision(state: TaskState, ctx: RunContext) -> Update:
    spec = state["spec"]
    ctx.live.sandboxes.get(spec)
    return {"branch": ctx.config.branch(spec.id)}


@node("agent")
def agent(state: TaskState, ctx: RunContext) -> Update:
    spec, number, spent = state["spec"], state.get("attempt", 0) + 1, state.get("usage", Usage())
    feedback = state.get("feedback")
    record = make_attempt(ctx, spec, number, feedback, spent=spent, deadline=_deadline(ctx, state))
    update: Update = {
        "attempt": number,
        "agent_s": state.get("agent_s", 0.0) + record.duration_s,
        "usage": spent + record.usage,
    }
    if (why := could_not_run(record)) is not None:
        update |= {"outcome": "error", "reason": why}
        update |= {"problems": [record.problem]} if record.problem is not None else {}
    elif (why := stop_escalation(record, ctx.config.budget(spec).max_steps)) is not None:
        update["escalate_reason"] = why
        update |= {"problems": [record.problem]} if record.problem is not None else {}
    return update


@node("gates")
def gates(state: TaskState, ctx: RunContext) -> Update:
    """The gates on the attempt's work; on a failure its problems, one line each, are what the
    attempt found (escalation records list them)."""
    attempt = state["attempt"]
    result = _gate_phase(state, ctx, "attempt")
    update = _gates_ran(state, result)
    if result.run.passed and state.get("problems"):  # what the attempt before failed on
        update["fixed"] = {**state.get("fixed", {}), str(attempt): one_liners(state["problems"])}
    elif not result.run.passed:
        update["found"] = {**state.get("found", {}), str(attempt): one_liners(result.problems)}
    return update | _verdict(state, ctx, result, "attempt")


@node("feedback")
def feedback(state: TaskState, ctx: RunContext) -> Update:
    """What the next attempt is told: the failing gate's problems compacted, each marked new
    or still failing against what the attempt before was told; saved for reviewers too."""
    spec, attempt = state["spec"], state["attempt"]
    told = state.get("feedback")
    compacted = compact(
        state["problems"],
        previous=told.problems if told else None,
        max_tokens=ctx.config.policy.feedback.max_tokens,
        attempt=attempt,
    )
    text = render_for_agent(compacted, attempt)
    write_atomic(ctx.config.task_dir(spec.id) / f"feedback-{attempt}.md", text + "\n")
    update: Update = {"feedback": compacted}
    if compacted.fixed:
        update["fixed"] = {**state.get("fixed", {}), str(attempt): one_liners(compacted.fixed)}
    return update


@node("guard")
def guard(state: TaskState, ctx: RunContext) -> Update:
    """What the diff itself may not do, whatever the gates say (harness.gates.diff_review)."""
    spec, policy = state["spec"], ctx.config.policy
    review = review_diff(ctx.live.sandboxes.get(spec).worktree, spec, policy.guard, policy.publish)
    if review.refusal is None:
        return {"flagged": review.flagged}
    return {"escalate_reason": review.refusal} | (
        {"problems": review.problems} if review.problems else {}
    )


@node("verify")
def verify(state: TaskState, ctx: RunContext) -> Update:
    """All gates again on exactly the committed tree: the agent's word is never the verdict.
    When the last attempt's gates all passed on a clean checkout of this very tree, their runs
    are the verification (harness.gates.reuse), and the PR record says so."""
    result = _gate_phase(state, ctx, "verify")
    update = _gates_ran(state, result) | _verdict(state, ctx, result, "verify")
    return update | {"verify_reused": result.reused}


@node("publish")
def publish(state: TaskState, ctx: RunContext) -> Update:
    spec = state["spec"]
    worktree = ctx.live.sandboxes.get(spec).worktree
    if (why := refusal(spec, worktree, ctx.config.policy.publish)) is not None:
        return {"escalate_reason": why}
    pr = PullRequest.of(spec, worktree, _evidence(state, ctx))
    key = ctx.config.effect_key(spec.id, "publish", pr.evidence.attempts)
    try:  # a forge refusing it (a protected branch, a missing permission): a person acts
        done = ctx.services.effects.once(
            key, "publish", lambda: {"pr": ctx.services.publisher.open_pr(pr)}
        )
    except PublishRefused as refused:
        return {"escalate_reason": f"verified, but not published: {refused}"}
    return {"outcome": "verified", "pr": done["pr"]}


@node("escalate")
def escalate(state: TaskState, ctx: RunContext) -> Update:
    spec, reason = state["spec"], state.get("escalate_reason") or "escalated"
    escalation = Escalation(spec, _evidence(state, ctx), reason)

    def record() -> dict[str, Any]:
        if escalation.evidence.branch:  # provisioned: the work in progress goes on the branch
            worktree = ctx.live.sandboxes.get(spec).worktree
            worktree.commit_all(f"harness: work in progress, escalated: {reason}")
        return {"path": ctx.services.publisher.escalate(escalation)}

    key = ctx.config.effect_key(spec.id, "escalate", escalation.evidence.attempts)
    done = ctx.services.effects.once(key, "escalate", record)
    outcome = "cancelled" if state.get("cancelled") else "escalated"
    return {"outcome": outcome, "reason": reason, "escalation": done["path"]}


@node("teardown")
def teardown(state: TaskState, ctx: RunContext) -> Update:
    spec_id = state["spec"].id
    ctx.live.forget(spec_id)
    ctx.services.integration.release(spec_id)  # its forks; the baseline keeps running
    ctx.live.sandboxes.release(spec_id, verified=state.get("outcome") == "verified")
    if state.get("outcome") is None:
        return {"outcome": "error", "reason": "the task ended without an outcome"}
    return {}


def _evidence(state: TaskState, ctx: RunContext) -> Evidence:
    return Evidence(
        run_id=ctx.config.run_id,
        agent=ctx.config.policy.agent.kind,
        branch=state.get("branch"),
        gates=state.get("gate_records", []),
        attempts=state.get("attempt", 0),
        fixed=state.get("fixed", {}),
        found=state.get("found", {}),
        flaky=state.get("flaky", []),
        flagged=state.get("flagged", []),
        problems=state.get("problems", []),
        verify_reused=state.get("verify_reused"),
        usage=state.get("usage"),
        agent_s=state.get("agent_s", 0.0),
        gates_s=state.get("gates_s", 0.0),
    )


def _deadline(ctx: RunContext, state: TaskState) -> float:
    """The wall-clock budget's end as a monotonic time, for command timeouts."""
    wall_clock_s = ctx.config.budget(state["spec"]).wall_clock_s
    return time.monotonic() + state["started_at"] + wall_clock_s - time.time()


def _gate_phase(state: TaskState, ctx: RunContext, phase: Phase) -> PhaseResult:
    attempt, deadline, earlier = (
        state.get("attempt", 0),
        _deadline(ctx, state),
        state.get("gate_records", []),
    )
    return run_gate_phase(
        ctx, state["spec"], phase=phase, attempt=attempt, deadline=deadline, earlier=earlier
    )


def _gates_ran(state: TaskState, result: PhaseResult) -> Update:
    update: Update = {
        "gate_records": result.run.records,
        "gates_s": state.get("gates_s", 0.0) + result.gates_s,
        "gates_passed": result.run.passed,
        "flaky": result.run.flaky,
    }
    return update if result.run.passed else update | {"problems": result.problems}


def _verdict(state: TaskState, ctx: RunContext, result: PhaseResult, phase: Phase) -> Update:
    verdict = judge(
        result.run,
        phase=phase,
        attempt=state.get("attempt", 0),
        budget=ctx.config.budget(state["spec"]),
        elapsed_s=time.time() - state["started_at"],
    )
    if verdict.action == "error":
        return {"outcome": "error", "reason": verdict.reason}
    return {"escalate_reason": verdict.reason} if verdict.action == "escalate" else {}


def _next(default: str) -> Callable[[TaskState], str]:
    """Route to teardown on error, to escalate when a node asked for it, else to `default`."""

    def route(state: TaskState) -> str:
        if state.get("outcome") == "error":
            return "teardown"
        if state.get("escalate_reason"):
            return "escalate"
        return default

    return route


def _after_gates(state: TaskState) -> str:
    return _next("guard" if state.get("gates_passed") else "feedback")(state)


TaskGraph = CompiledStateGraph[TaskState, None, TaskState, TaskState]


def build_task_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> TaskGraph:
    """The blueprint, checkpointed after every node when given a checkpointer."""
    graph = StateGraph(TaskState)
    for step in (triage, provision, agent, gates, feedback, guard, verify, publish, escalate):
        graph.add_node(step.__name__, step)
    graph.add_node("teardown", teardown)
    graph.add_edge(START, "triage")
    graph.add_conditional_edges("triage", _next("provision"), ["provision", "escalate", "teardown"])
    graph.add_conditional_edges("provision", _next("agent"), ["agent", "escalate", "teardown"])
    graph.add_conditional_edges("agent", _next("gates"), ["gates", "escalate", "teardown"])
    graph.add_conditional_edges(
        "gates", _after_gates, ["guard", "feedback", "escalate", "teardown"]
    )
    graph.add_edge("feedback", "agent")
    graph.add_conditional_edges("guard", _next("verify"), ["verify", "escalate", "teardown"])
    graph.add_conditional_edges("verify", _next("publish"), ["publish", "escalate", "teardown"])
    graph.add_conditional_edges("publish", _next("teardown"), ["teardown", "escalate"])
    graph.add_edge("escalate", "teardown")
    graph.add_edge("teardown", END)
    if checkpointer is not None:
        checkpointer = checkpointer.with_allowlist(
            [(model.__module__, model.__name__) for model in STATE_MODELS]
        )
    return graph.compile(checkpointer=checkpointer)
