"""The per-task blueprint: every step of one task, from triage to teardown.

    triage ─► provision ─► agent ─► gates ──pass──► guard ─► verify ─► publish ─► teardown
                             ▲        │ fail, budget left      │ findings │ fail    │
                             └─ feedback ◄┘   no budget ──► escalate ◄──────────────┘
    tier 3 / no agent ─► escalate before any agent runs      │
                                                             ▼
                                                         teardown

Deterministic nodes decide; the agent node is the only place judgement is used. Any node that
raises ends the task as `error` and still goes through teardown, which always runs and commits
what is uncommitted before it removes the worktree.

Every node may run twice: a resumed task runs again the node a crash interrupted. The sandbox
is taken back (harness.sandbox.lifecycle), and the side effects (an attempt's commit, the PR
record, the escalation record) carry idempotency keys in the store, so they happen once.
"""

from __future__ import annotations

import json
import operator
import time
import traceback
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from harness import failpoints
from harness.agents import Agent, AttemptContext, AttemptRecord, Usage
from harness.agents.select import AgentUnavailable, select_agent
from harness.config.spec import Spec
from harness.feedback import Feedback, compact, render_for_agent
from harness.gates.fake_green import find_fake_green
from harness.gates.runner import GateRecord, GateRunner, acceptance_gates
from harness.integration.gate import IntegrationGates
from harness.problems import Problem, problem_type
from harness.publish.render import render_escalation, render_pr
from harness.redact import Redactor
from harness.run.context import LeaseLost, RunContext
from harness.run.ledger import write_atomic
from harness.sandbox import lifecycle
from harness.sandbox.local import WorktreeSandbox


class TaskState(TypedDict, total=False):
    spec: dict[str, Any]
    started_at: float
    """Wall-clock start (epoch seconds); the wall-clock budget counts from here."""
    attempt: int
    """Agent attempts started so far."""
    attempt_records: Annotated[list[dict[str, Any]], operator.add]
    gate_records: Annotated[list[dict[str, Any]], operator.add]
    gates_passed: bool
    problems: list[dict[str, Any]]
    """Why the task cannot go on as it is: the last failing gate's problems (classified), or
    the problem that stops it (budget, infrastructure, guard findings, no agent)."""
    feedback: dict[str, Any]
    """What the next attempt is told: the problems compacted (a harness.feedback.Feedback)."""
    fixed: dict[str, list[str]]
    """Per attempt number, the problems of the attempt before that this one made go away."""
    found: dict[str, list[str]]
    """Per attempt number, its problems in one line each (for escalation records)."""
    flaky: Annotated[list[dict[str, Any]], operator.add]
    """Tests that failed and then passed on a re-run."""
    flagged: list[dict[str, Any]]
    """Fake-green guard findings under `guard.action: flag`; listed in the PR record."""
    escalate_reason: str | None
    outcome: Literal["verified", "escalated", "error"] | None
    reason: str | None
    branch: str | None
    pr: str | None
    escalation: str | None
    agent_s: float
    gates_s: float
    usage: dict[str, Any]
    """Model usage summed over the task's attempts (a harness.agents.Usage)."""


Update = dict[str, Any]
NodeBody = Callable[[TaskState, RunContext], Update]


class TaskNode(Protocol):
    """A node as LangGraph calls it (it passes `config` because the parameter is named so)."""

    def __call__(self, state: TaskState, config: RunnableConfig) -> Update: ...


def _context(config: RunnableConfig) -> RunContext:
    ctx = config.get("configurable", {}).get("run")
    if not isinstance(ctx, RunContext):
        raise RuntimeError("the task graph needs configurable.run: a harness RunContext")
    return ctx


def node(name: str) -> Callable[[NodeBody], TaskNode]:
    """Records enter/exit events, and turns an exception into the task's `error` outcome."""

    def decorate(fn: NodeBody) -> TaskNode:
        # Not functools.wraps: LangGraph reads the signature (through __wrapped__) to decide
        # whether to pass `config`, and must see this wrapper's, not the node body's.
        def run(state: TaskState, config: RunnableConfig) -> Update:
            ctx = _context(config)
            spec_id = state["spec"]["id"]
            if spec_id in ctx.lost:
                # Another worker reclaimed the task: stop here, without touching its sandbox.
                raise LeaseLost(f"{spec_id}: this worker's lease was taken over")
            # The agent node starts the next attempt; every other node works on the current one.
            attempt = state.get("attempt", 0) + (1 if name == "agent" else 0)
            ctx.ledger.event(spec_id, name, "enter", attempt=attempt)
            failpoints.enter(name, spec_id)
            failpoints.hit(f"{name}.before")
            try:
                update = fn(state, ctx)
            except Exception as exc:
                log = ctx.task_dir(spec_id) / "error.log"
                write_atomic(log, traceback.format_exc())
                reason = f"{name} failed: {type(exc).__name__}: {exc} (traceback: {log})"
                update = {"outcome": "error", "reason": reason}
            outcome = {
                k: update[k] for k in ("outcome", "reason", "escalate_reason") if k in update
            }
            ctx.ledger.event(spec_id, name, "exit", **outcome)
            failpoints.hit(f"{name}.after")  # done, and LangGraph has not saved it yet
            return update

        run.__name__ = run.__qualname__ = name
        return run

    return decorate


def _spec(state: TaskState) -> Spec:
    return Spec.model_validate(state["spec"])


def _agent(ctx: RunContext, spec: Spec) -> Agent:
    if spec.id not in ctx.agents:
        ctx.agents[spec.id] = select_agent(ctx.agent_kind, spec, ctx.policy, ctx.fleet)
    return ctx.agents[spec.id]


def _sandbox(ctx: RunContext, spec: Spec) -> WorktreeSandbox:
    """The task's sandbox; a resumed task gets back the one its crashed worker had (adopted,
    or re-made on the task branch: see harness.sandbox.lifecycle)."""
    sandbox = ctx.sandboxes.get(spec.id)
    if sandbox is None:
        ttl = ctx.policy.ttl
        sandbox = lifecycle.acquire(
            ctx.store,
            ctx.ledger,
            spec,
            run_id=ctx.run_id,
            owner=ctx.worker,
            lease_s=ctx.policy.store.lease_s,
            branch=ctx.branch(spec.id),
            root=ctx.worktree_dir(spec.id),
            scratch=ctx.scratch_dir(spec.id),
            ttl_s=ttl.sandbox,
            retain_s={"verified": ttl.verified, "escalated": ttl.escalated},
        )
        ctx.keep_sandbox(spec.id, sandbox)
    assert isinstance(sandbox, WorktreeSandbox)
    return sandbox


def _deadline(ctx: RunContext, state: TaskState, spec: Spec) -> float:
    """The wall-clock budget's end as a monotonic time, for command timeouts."""
    remaining = state["started_at"] + ctx.budget(spec).wall_clock_s - time.time()
    return time.monotonic() + remaining


@node("triage")
def triage(state: TaskState, ctx: RunContext) -> Update:
    spec = _spec(state)
    if spec.tier == 3:
        return {"escalate_reason": "tier 3 (human-led): escalated before any agent runs"}
    try:
        _agent(ctx, spec)
    except AgentUnavailable as exc:
        problem = Problem(
            type=problem_type("agent-unavailable"),
            title="No agent can run this task",
            detail=str(exc),
            category="policy",
            retryable=False,
            owner_action_required=True,
        )
        return {"escalate_reason": f"no agent: {exc}", "problems": [problem.model_dump()]}
    return {}


@node("provision")
def provision(state: TaskState, ctx: RunContext) -> Update:
    spec = _spec(state)
    _sandbox(ctx, spec)
    return {"branch": ctx.branch(spec.id)}


@node("agent")
def agent(state: TaskState, ctx: RunContext) -> Update:
    spec = _spec(state)
    number = state.get("attempt", 0) + 1
    sandbox = _sandbox(ctx, spec)
    feedback = Feedback.model_validate(state["feedback"]) if state.get("feedback") else None
    runner = _agent(ctx, spec)
    spent = Usage.model_validate(state.get("usage", {}))
    context = AttemptContext(
        number=number,
        budget=ctx.budget(spec),
        spent=spent,
        deadline=_deadline(ctx, state, spec),
        log_dir=ctx.task_dir(spec.id) / "agent" / f"attempt-{number}",
        trajectory=ctx.task_dir(spec.id) / "trajectory.jsonl",
    )
    saved = ctx.task_dir(spec.id) / f"attempt-{number}.json"
    key = ctx.effect_key(spec.id, "commit", number)
    if _committed(ctx, sandbox, key) and saved.exists():
        # A resumed task whose attempt was done and committed before the crash: not paid for
        # twice. (Its record was redacted on disk; what follows needs no secrets.)
        record = AttemptRecord.model_validate_json(saved.read_text(encoding="utf-8"))
        ctx.ledger.event(spec.id, "agent", "reused", attempt=number)
    else:
        record = runner.attempt(spec, sandbox, feedback, context)
        # Tool results quote files, which may hold secrets: the record on disk is redacted.
        redacted = Redactor.from_environment().value(record.model_dump(mode="json"))
        write_atomic(saved, json.dumps(redacted, indent=2))
        # Every attempt's work is committed at once: nothing the agent did (or was paid for)
        # is lost. The key in the message makes the commit recognisable after a crash.
        ctx.store.begin_effect(key, "commit")
        message = f"harness: attempt {number} by the {runner.name} agent\n\n{KEY_TRAILER}{key}"
        sha = sandbox.worktree.commit_all(message)
        ctx.store.finish_effect(key, {"sha": sha})
    update: Update = {
        "attempt": number,
        "attempt_records": [record.model_dump()],
        "agent_s": state.get("agent_s", 0.0) + record.duration_s,
        "usage": (spent + record.usage).model_dump(),
    }
    why = STOP_REASONS.get(record.stop_reason)
    if why is not None:
        detail = record.error or f"{ctx.budget(spec).max_steps} tool calls"
        update["escalate_reason"] = f"{why} on attempt {number}: {detail}"
        if record.problem is not None:
            update["problems"] = [record.problem.model_dump()]
    return update


KEY_TRAILER = "Harness-Key: "


def _committed(ctx: RunContext, sandbox: WorktreeSandbox, key: str) -> bool:
    """Whether the commit with idempotency key `key` was made (recorded, or found at HEAD
    when a crash came between the commit and its record)."""
    effect = ctx.store.get_effect(key)
    if effect is not None and effect.status == "done":
        return True
    if effect is not None and f"{KEY_TRAILER}{key}" in sandbox.worktree.head_message():
        ctx.store.finish_effect(key, {"sha": sandbox.worktree.head()})
        return True
    return False


# Attempts that end this way escalate at once, whatever attempts are left.
STOP_REASONS = {
    "error": "agent error",
    "max_steps": "step budget exhausted",
    "budget": "budget exhausted",
    "infrastructure": "infrastructure failure (not charged to the agent)",
    "owner_action_required": "owner action required",
}


def _run_all_gates(
    state: TaskState, ctx: RunContext, phase: Literal["attempt", "verify"]
) -> Update:
    spec = _spec(state)
    attempt = state.get("attempt", 0)
    integration = IntegrationGates(
        ctx.services,
        spec,
        _sandbox(ctx, spec),
        ctx.policy.integration,
        run_id=ctx.run_id,
        run_dir=ctx.run_dir,
        log_dir=ctx.task_dir(spec.id) / "services",
    )
    runner = GateRunner(
        _sandbox(ctx, spec),
        log_dir=ctx.task_dir(spec.id) / "gates",
        instance=f"runs/{ctx.run_id}/{spec.id}",
        infrastructure=ctx.policy.infrastructure,
        flaky=ctx.policy.flaky,
        deadline=_deadline(ctx, state, spec),
        prepare=integration.prepare,
    )
    to_run = [*integration.gates(ctx.policy.gates), *acceptance_gates(spec.acceptance)]
    run = runner.run_all(to_run, attempt=attempt, phase=phase)
    update: Update = {
        "gate_records": [r.model_dump() for r in run.records],
        "gates_s": state.get("gates_s", 0.0) + sum(r.duration_s for r in run.records),
        "gates_passed": run.passed,
        "flaky": [p.model_dump() for p in run.flaky],
    }
    previous = [Problem.model_validate(p) for p in state.get("problems", [])]
    if run.failed is None:
        if phase == "attempt" and previous:
            update["fixed"] = {**state.get("fixed", {}), str(attempt): _one_liners(previous)}
        return update
    failed = run.failed
    problems = run.problems
    # An integration gate on the bare base would run without its services: it proves nothing.
    checkable = not (run.infrastructure or run.flaky_blocked or failed.kind == "integration")
    if checkable and phase == "attempt" and ctx.policy.feedback.check_base:
        gate = next(g for g in to_run if g.name == failed.name)
        started = time.monotonic()
        problems = ctx.base_failures.label(spec, gate, problems)
        # Gate time too (the gate ran on the base), not harness overhead.
        update["gates_s"] += time.monotonic() - started
    feedback = compact(
        problems, previous=previous, max_tokens=ctx.policy.feedback.max_tokens, attempt=attempt
    )
    update |= {"problems": [p.model_dump() for p in problems], "feedback": feedback.model_dump()}
    if phase == "attempt":
        update["found"] = {**state.get("found", {}), str(attempt): _one_liners(problems)}
        if feedback.fixed:
            fixed = _one_liners(feedback.fixed)
            update["fixed"] = {**state.get("fixed", {}), str(attempt): fixed}
    if failed.tool_missing:
        update |= {
            "outcome": "error",
            "reason": f"gate {failed.name!r} could not run: {failed.missing_tool!r} was not "
            "found in the sandbox (install it, or fix the gate's command)",
        }
    elif run.flaky_blocked:
        update["escalate_reason"] = (
            f"flaky: gate {failed.name!r} failed, then passed on a re-run of the same tree, "
            "and policy (flaky.block) does not accept flaky tests"
        )
    elif run.infrastructure:
        what = "timed out" if failed.timed_out else "was killed (out of memory?)"
        what = f"{what} on every try"
        if failed.setup_failure:
            what = f"could not be set up: {failed.setup_failure}"
        update["escalate_reason"] = (
            f"infrastructure: gate {failed.name!r} {what} "
            "(not charged to the agent; a person must act)"
        )
    elif phase == "verify":
        update["escalate_reason"] = (
            f"verification failed: gate {failed.name!r} failed on the committed tree"
        )
    elif attempt >= ctx.budget(spec).max_attempts:
        update["escalate_reason"] = (
            f"budget exhausted: gate {failed.name!r} still failing after {attempt} attempts"
        )
    elif time.time() - state["started_at"] > ctx.budget(spec).wall_clock_s:
        update["escalate_reason"] = "wall-clock budget exhausted"
    return update


def _one_liners(problems: list[Problem]) -> list[str]:
    def line(problem: Problem) -> str:
        where = problem.test_id or (str(problem.location) if problem.location else problem.gate)
        first = problem.detail.strip().splitlines()[0][:120] if problem.detail.strip() else ""
        # pytest's message already starts with the exception name that is the code.
        code = f" {problem.code}" if problem.code and not first.startswith(problem.code) else ""
        return f"{where}{code}: {first}"

    return [line(problem) for problem in problems]


@node("gates")
def gates(state: TaskState, ctx: RunContext) -> Update:
    return _validating(state, ctx, "attempt")


def _validating(state: TaskState, ctx: RunContext, phase: Literal["attempt", "verify"]) -> Update:
    """Gates run with the environment recorded as validating."""
    spec_id = state["spec"]["id"]
    lifecycle.mark(ctx.store, spec_id, ctx.run_id, "validating")
    update = _run_all_gates(state, ctx, phase)
    lifecycle.mark(ctx.store, spec_id, ctx.run_id, "ready")
    return update


@node("feedback")
def feedback(state: TaskState, ctx: RunContext) -> Update:
    """Save what the next attempt will be told, so a reviewer can see exactly that."""
    spec = _spec(state)
    attempt = state.get("attempt", 0)
    told = render_for_agent(Feedback.model_validate(state["feedback"]), attempt)
    write_atomic(ctx.task_dir(spec.id) / f"feedback-{attempt}.md", told + "\n")
    return {}


@node("guard")
def guard(state: TaskState, ctx: RunContext) -> Update:
    """What the diff itself may not do: touch protected paths, or make the gates pass by
    deleting, skipping or silencing what they check (the fake-green guard)."""
    spec = _spec(state)
    rules = ctx.policy.guard
    worktree = _sandbox(ctx, spec).worktree
    protected_paths = ctx.policy.publish.protected_paths
    protected = worktree.changed_files(spec.base_commit, protected_paths, from_top=True)
    if protected_paths and protected:
        return {"escalate_reason": f"touches protected paths: {', '.join(protected)}"}
    found = find_fake_green(worktree.root, spec.base_commit, git_dir=worktree.git_dir)
    findings = [finding for finding in found if finding.code not in rules.allow]
    if not findings:
        return {"flagged": []}
    if rules.action == "flag":
        return {"flagged": [f.model_dump() for f in findings]}
    kinds = sorted({f.code or "finding" for f in findings})
    return {
        "escalate_reason": f"fake-green guard: {len(findings)} finding(s) ({', '.join(kinds)}); "
        "the gates passed, but the change weakened what they check",
        "problems": [f.model_dump() for f in findings],
    }


@node("verify")
def verify(state: TaskState, ctx: RunContext) -> Update:
    """All gates again on exactly the committed tree: the agent's word is never the verdict."""
    _sandbox(ctx, _spec(state)).worktree.reset_to()
    return _validating(state, ctx, "verify")


@node("publish")
def publish(state: TaskState, ctx: RunContext) -> Update:
    spec = _spec(state)
    worktree = _sandbox(ctx, spec).worktree
    changed = worktree.changed_files(spec.base_commit)
    if not changed:
        return {"escalate_reason": "no changes: the gates pass but there is nothing to publish"}
    if spec.tier not in ctx.policy.publish.auto_pr_tiers:
        return {
            "escalate_reason": f"verified, but tier {spec.tier} is not in "
            "publish.auto_pr_tiers: a human reviews the branch"
        }
    key = ctx.effect_key(spec.id, "publish", state.get("attempt", 0))
    effect = ctx.store.begin_effect(key, "publish")
    if effect.status == "done":  # published before a crash: never a second PR
        return {"outcome": "verified", "pr": effect.value["pr"]}
    expected = set(worktree.changed_files(spec.base_commit, spec.paths)) if spec.paths else None
    path = ctx.run_dir / "prs" / f"{spec.id}.md"
    text = render_pr(
        spec,
        run_id=ctx.run_id,
        agent=_agent(ctx, spec).name,
        branch=state["branch"] or "",
        gates=_gate_records(state),
        attempts=state.get("attempt", 0),
        diffstat=worktree.diffstat(spec.base_commit),
        files=changed,
        unexpected_files=[f for f in changed if expected is not None and f not in expected],
        fixed=state.get("fixed", {}),
        flaky=[Problem.model_validate(p) for p in state.get("flaky", [])],
        flagged=[Problem.model_validate(p) for p in state.get("flagged", [])],
    )
    write_atomic(path, text)
    ctx.store.finish_effect(key, {"pr": ctx.relative(path)})
    return {"outcome": "verified", "pr": ctx.relative(path)}


@node("escalate")
def escalate(state: TaskState, ctx: RunContext) -> Update:
    spec = _spec(state)
    reason = state.get("escalate_reason") or "escalated"
    key = ctx.effect_key(spec.id, "escalate", state.get("attempt", 0))
    effect = ctx.store.begin_effect(key, "escalate")
    if effect.status == "done":  # escalated before a crash: one escalation record
        return {"outcome": "escalated", "reason": reason, "escalation": effect.value["path"]}
    if state.get("branch"):  # provisioned: the work in progress goes on the branch
        _sandbox(ctx, spec).worktree.commit_all(f"harness: work in progress, escalated: {reason}")
    path = ctx.run_dir / "escalations" / f"{spec.id}.md"
    text = render_escalation(
        spec,
        run_id=ctx.run_id,
        agent=ctx.agents[spec.id].name if spec.id in ctx.agents else ctx.agent_kind,
        branch=state.get("branch"),
        reason=reason,
        gates=_gate_records(state),
        attempts=state.get("attempt", 0),
        found=state.get("found", {}),
        problems=[Problem.model_validate(p) for p in state.get("problems", [])],
    )
    write_atomic(path, text)
    ctx.store.finish_effect(key, {"path": ctx.relative(path)})
    return {"outcome": "escalated", "reason": reason, "escalation": ctx.relative(path)}


@node("teardown")
def teardown(state: TaskState, ctx: RunContext) -> Update:
    spec_id = state["spec"]["id"]
    ctx.agents.pop(spec_id, None)
    ctx.services.release(spec_id)  # the task's sandboxed services; the baseline keeps running
    sandbox = ctx.release_sandbox(spec_id)
    assert sandbox is None or isinstance(sandbox, WorktreeSandbox)
    # The branch outlives the sandbox: a verified task's as its PR's head, any other's as the
    # work in progress a person picks up. gc deletes it when this retention ends.
    ttl = ctx.policy.ttl
    retain = ttl.verified if state.get("outcome") == "verified" else ttl.escalated
    for env in lifecycle.task_envs(ctx.store, ctx.run_id, spec_id):
        if env.status != "deleted":
            lifecycle.teardown(
                ctx.store,
                env,
                owner=ctx.worker,
                lease_s=ctx.policy.store.lease_s,
                retain_s=retain,
                sandbox=sandbox,
            )
            sandbox = None
    if sandbox is not None:  # not recorded (a sandbox made outside the store)
        sandbox.teardown()
    if state.get("outcome") is None:
        return {"outcome": "error", "reason": "the task ended without an outcome"}
    return {}


def _gate_records(state: TaskState) -> list[GateRecord]:
    return [GateRecord.model_validate(r) for r in state.get("gate_records", [])]


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
    for name, fn in [
        ("triage", triage),
        ("provision", provision),
        ("agent", agent),
        ("gates", gates),
        ("feedback", feedback),
        ("guard", guard),
        ("verify", verify),
        ("publish", publish),
        ("escalate", escalate),
        ("teardown", teardown),
    ]:
        graph.add_node(name, fn)
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
    return graph.compile(checkpointer=checkpointer)
