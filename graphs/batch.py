"""The batch graph: lanes take tasks from the store until none is left, then the summary.

    START ─Send(lane), one per lane─► lane (claim a task, run the blueprint on it, repeat)
                                        ─► summarize ─► END

Parallelism is bounded by `max_concurrency`, a top-level config key (not under
`configurable`): LangGraph runs at most that many lanes at once.

A lane claims a task with a lease in the store, heartbeats it, and runs the per-task blueprint
as the task's own checkpointed LangGraph thread (`<run-id>/<spec-id>`). The same graph serves
`harness resume` and a second worker joining a run: a done task is never claimed again, and a
claimed one whose worker died continues from its last checkpoint (invoked with input None:
invoking with the original input would start the thread over). Checkpoints are written with
durability "sync": a node's result is saved before the next node starts, so no node's side
effects can run ahead of the record of what came before it.

A run asked to stop (SIGINT, SIGTERM: harness.run.interrupt) claims no more tasks; a task whose
node was not started or was cut short is given back to the store as `interrupted`, to continue
from its last checkpoint on resume.
"""

from __future__ import annotations

import signal
import time
import traceback
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from graphs.node import run_context
from graphs.task import TaskGraph, TaskState, build_task_graph
from harness import redact
from harness.agents import Usage
from harness.config.spec import Spec
from harness.night.admission import Admission
from harness.run.context import Interrupted, LeaseLost, RunContext
from harness.run.lease import LeaseKeeper
from harness.run.ledger import GateSummary, RunSummary, TaskResult, utc_now, write_atomic
from harness.run.parking import (
    Deferred,
    breaker_reason,
    iso,
    parking_for,
    wait_for_parked,
    why_not_started,
)
from harness.sandbox import bubblewrap as bwrap


class BatchState(TypedDict, total=False):
    specs: list[Spec]
    lanes: int
    results: list[TaskResult]
    """The summary's tasks: one per task of the run, in its order."""


class LaneInput(TypedDict):
    specs: list[Spec]


def fan_out(state: BatchState) -> list[Send]:
    return [Send("lane", LaneInput(specs=state["specs"])) for _ in range(state["lanes"])]


def lane(state: LaneInput, config: RunnableConfig) -> dict[str, Any]:
    ctx = run_context(config)
    graph: TaskGraph = config["configurable"]["task_graph"]
    specs = {spec.id: spec for spec in state["specs"]}
    store, worker = ctx.services.store, ctx.services.worker
    lease_s = ctx.config.policy.store.lease_s
    admission = _admission(config)
    while not ctx.live.stop.requested:
        claimed = store.claim_task(ctx.config.run_id, worker, lease_s)
        if claimed is not None and breaker_reason(ctx) is not None:  # no new task starts
            why = why_not_started(claimed.result)
            _park(ctx, specs[claimed.spec_id], {}, Deferred(time.time(), why))
        elif claimed is not None and admission is not None:  # a night: window, budget, after:
            admitted = admission.admit(specs[claimed.spec_id])
            if isinstance(admitted, str):
                _skip(ctx, specs[claimed.spec_id], admitted)
            else:
                run_task(ctx, graph, admitted, admission)
        elif claimed is not None:
            run_task(ctx, graph, specs[claimed.spec_id])
        elif _held_elsewhere(ctx):
            # Another worker holds a task: wait for it to finish, or for its lease to lapse
            # and the task to become ours to take over.
            time.sleep(min(lease_s / 4, 2.0))
        elif not wait_for_parked(ctx):  # a parked task due soon: waited for, else done
            return {}
    return {}


def _held_elsewhere(ctx: RunContext) -> bool:
    tasks = ctx.services.store.tasks(ctx.config.run_id)
    return any(task.status == "claimed" and task.owner != ctx.services.worker for task in tasks)


def run_task(
    ctx: RunContext, graph: TaskGraph, spec: Spec, admission: Admission | None = None
) -> None:
    """Run (or continue) one claimed task and record its result in the store, once."""
    config, services = ctx.config, ctx.services
    thread: RunnableConfig = {
        "configurable": {"run": ctx, "thread_id": f"{config.run_id}/{spec.id}"},
        # Each attempt is at most agent → gates → feedback; the rest of the path is short.
        "recursion_limit": 20 + 4 * config.budget(spec).max_attempts,
    }
    initial: TaskState = {"spec": spec, "started_at": time.time(), "attempt": 0}
    ctx.live.lost.discard(spec.id)  # claimed again after it was lost once: ours now
    keeper = LeaseKeeper(
        services.store,
        config.run_id,
        spec.id,
        services.worker,
        config.policy.store.lease_s,
        on_lost=lambda: ctx.live.lost.add(spec.id),
    )
    try:
        with keeper:
            saved = graph.get_state(thread)
            if not saved.values:
                final: dict[str, Any] = graph.invoke(initial, thread, durability="sync")
            elif saved.next or saved.tasks:
                # `next` leaves out a step's nodes whose writes were saved before the step's
                # own checkpoint was (LangGraph saves checkpoints in the background, so a kill
                # can come in between): they are still pending, and `tasks` has them.
                pending = [task.name for task in saved.tasks]
                services.ledger.event(spec.id, "task", "resumed", next=pending)
                final = graph.invoke(None, thread, durability="sync")
            else:  # it ran to the end; the crash came before its result was recorded
                final = dict(saved.values)
    except LeaseLost:
        return  # the task is another worker's now
    except Interrupted:
        _give_back(ctx, graph, thread, spec, initial)
        return
    except Deferred as deferred:  # the model API cut its attempt: not charged, tried later
        _park(ctx, spec, dict(graph.get_state(thread).values) or dict(initial), deferred)
        return
    except Exception as exc:  # the blueprint guards its nodes; this guards the batch from it
        write_atomic(config.task_dir(spec.id) / "error.log", traceback.format_exc())
        reason = redact.current().text(f"task graph failed: {exc}")
        final = {**initial, "outcome": "error", "reason": reason}
    result = _result(ctx, spec, final, initial)
    if admission is not None:
        result = admission.finished(spec, result)
    services.store.complete_task(config.run_id, spec.id, services.worker, result.model_dump())
    if result.outcome == "verified" and ctx.config.first_verified and spec.variant is not None:
        cancel_siblings(ctx, spec.id)


def cancel_siblings(ctx: RunContext, verified: str) -> None:
    """`harness fleet --first-verified`: every other unfinished variant of the spec the
    `verified` task (`<spec>/v<k>`) belongs to stops at its next step (graphs.node), its work
    committed, its outcome `cancelled`."""
    prefix = f"{verified.split('/', 1)[0]}/v"
    why = f"cancelled: {verified} was verified first (--first-verified)"
    for task in ctx.services.store.tasks(ctx.config.run_id):
        if task.spec_id.startswith(prefix) and task.spec_id != verified:
            ctx.live.cancelled.setdefault(task.spec_id, why)


def _skip(ctx: RunContext, spec: Spec, reason: str) -> None:
    """A claimed task a night does not run: done, `skipped`, with the reason."""
    ctx.services.ledger.event(spec.id, "task", "skipped", outcome="skipped", reason=reason)
    initial: TaskState = {"spec": spec, "started_at": time.time()}
    result = _result(ctx, spec, {"outcome": "skipped", "reason": reason}, initial)
    ctx.services.store.complete_task(
        ctx.config.run_id, spec.id, ctx.services.worker, result.model_dump()
    )


def _give_back(
    ctx: RunContext, graph: TaskGraph, thread: RunnableConfig, spec: Spec, initial: TaskState
) -> None:
    """The interrupted task back to the store, pending, with what it did so far as its
    `interrupted` result; its sandbox stays for the resume to take over."""
    services = ctx.services
    saved = dict(graph.get_state(thread).values) or dict(initial)
    signum = ctx.live.stop.signum
    by = signal.Signals(signum).name if signum is not None else "a stop request"
    reason = f"interrupted by {by}; `harness resume {ctx.config.run_id}` continues it"
    final = {**saved, "outcome": "interrupted", "reason": reason}
    services.ledger.event(spec.id, "task", "interrupted")
    result = _result(ctx, spec, final, initial)
    services.store.release_task(ctx.config.run_id, spec.id, services.worker, result.model_dump())


def _park(
    ctx: RunContext, spec: Spec, saved: dict[str, Any], deferred: Deferred, why: str = ""
) -> None:
    """The task back to the store until its retry time (harness.run.parking), with what it
    did so far as its `deferred` result; its sandbox and checkpoint stay."""
    parking = parking_for(ctx, deferred)
    reason = f"{why}: {parking.summary_reason}" if why else parking.summary_reason
    final = {**saved, "outcome": "deferred", "reason": reason, "retry_at": iso(parking.retry_at)}
    kind = "parked" if parking.in_run else "deferred"
    ctx.services.ledger.event(spec.id, "task", kind, retry_at=final["retry_at"], reason=reason)
    initial: TaskState = {"spec": spec, "started_at": saved.get("started_at", time.time())}
    result = _result(ctx, spec, final, initial).model_dump()
    ctx.services.store.park_task(
        ctx.config.run_id, spec.id, ctx.services.worker, result, parking.retry_at, reason
    )


def _result(ctx: RunContext, spec: Spec, final: dict[str, Any], initial: TaskState) -> TaskResult:
    config = ctx.config
    return TaskResult(
        spec_id=spec.id,
        title=spec.title,
        tier=spec.tier,
        outcome=final.get("outcome") or "error",
        reason=final.get("reason"),
        retry_at=final.get("retry_at"),
        attempts=final.get("attempt", 0),
        agent=config.policy.agent.kind,
        branch=final.get("branch"),
        pr=final.get("pr"),
        escalation=final.get("escalation"),
        gates=[GateSummary.model_validate(g.model_dump()) for g in final.get("gate_records", [])],
        duration_s=round(time.time() - final.get("started_at", initial["started_at"]), 3),
        agent_s=round(final.get("agent_s", 0.0), 3),
        gates_s=round(final.get("gates_s", 0.0), 3),
        usage=final.get("usage", Usage()),
        variant=spec.variant.model_dump() if spec.variant is not None else None,
        verify_reused=final.get("verify_reused"),
    )


def summarize(state: BatchState, config: RunnableConfig) -> dict[str, Any]:
    ctx = run_context(config)
    tasks, run, isolation = ctx.results(), ctx.config, ctx.services.isolation
    if ctx.live.stop.requested:  # tasks never started are unfinished too
        tasks = _with_unstarted(ctx, {spec.id: spec for spec in state["specs"]}, tasks)
    ctx.services.ledger.write_summary(
        RunSummary(
            run_id=run.run_id,
            started_at=run.started_at,
            finished_at=utc_now(),
            policy=str(run.policy_path),
            isolation="bubblewrap" if isolation.available else f"none: {isolation.reason}",
            hardening_gaps=list(bwrap.hardening_gaps()) if isolation.available else [],
            limits=run.policy.limits.model_dump(),
            read_paths=run.policy.sandbox.read_paths,
            tasks=tasks,
            usage=sum((task.usage for task in tasks), Usage()),
            input_errors=list(run.input_errors),
            night=admission.summary() if (admission := _admission(config)) else None,
        )
    )
    return {"results": tasks}


def _admission(config: RunnableConfig) -> Admission | None:
    admission: Admission | None = config["configurable"].get("admission")
    return admission


def _with_unstarted(
    ctx: RunContext, specs: dict[str, Spec], results: list[TaskResult]
) -> list[TaskResult]:
    """`results` and, in the run's order, an `interrupted` line for each task no worker has
    started (it is pending in the store: a resume takes it)."""
    known = {result.spec_id: result for result in results}
    lines = []
    for task in ctx.services.store.tasks(ctx.config.run_id):
        if task.spec_id in known:
            lines.append(known[task.spec_id])
        elif task.status == "pending" and task.spec_id in specs:
            reason = f"not started; `harness resume {ctx.config.run_id}` runs it"
            final = {"outcome": "interrupted", "reason": reason}
            initial: TaskState = {"spec": specs[task.spec_id], "started_at": time.time()}
            lines.append(_result(ctx, specs[task.spec_id], final, initial))
    return lines


def build_batch_graph() -> Any:
    graph = StateGraph(BatchState)
    graph.add_node("lane", lane)
    graph.add_node("summarize", summarize)
    graph.add_conditional_edges(START, fan_out, ["lane"])
    graph.add_edge("lane", "summarize")
    graph.add_edge("summarize", END)
    return graph.compile()


BATCH_GRAPH = build_batch_graph()


def run_batch(
    ctx: RunContext, specs: list[Spec], admission: Admission | None = None
) -> list[TaskResult]:
    """Run the run's unfinished tasks through the blueprint, at most the policy's concurrency
    at once; every task's steps are checkpointed in the store. With an `admission` (a night),
    each claimed task is first admitted or skipped (harness.night.admission)."""
    checkpointer: BaseCheckpointSaver[Any] = ctx.services.store.checkpointer()
    concurrency = ctx.config.policy.concurrency
    final = BATCH_GRAPH.invoke(
        {
            "specs": specs,
            "lanes": max(1, min(concurrency, len(specs))),
        },
        {
            "configurable": {
                "run": ctx,
                "task_graph": build_task_graph(checkpointer),
                "admission": admission,
            },
            "max_concurrency": concurrency,
        },
    )
    results: list[TaskResult] = final["results"]
    return results
