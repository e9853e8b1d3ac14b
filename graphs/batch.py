"""The batch graph: fan specs out to the per-task blueprint, then reduce outcomes to a summary.

    START ─Send(spec) per spec─► task ─► summarize ─► END

Parallelism is bounded by `max_concurrency`, a top-level config key (not under
`configurable`): LangGraph runs at most that many task nodes at once.
"""

from __future__ import annotations

import operator
import time
import traceback
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from graphs.task import TaskState, build_task_graph
from harness.agents import Usage
from harness.ledger import GateSummary, RunSummary, TaskResult, utc_now, write_atomic
from harness.run import RunContext
from harness.spec import Spec

TASK_GRAPH = build_task_graph()


class BatchState(TypedDict, total=False):
    specs: list[dict[str, Any]]
    results: Annotated[list[dict[str, Any]], operator.add]


class TaskInput(TypedDict):
    spec: dict[str, Any]


def _context(config: RunnableConfig) -> RunContext:
    ctx = config.get("configurable", {}).get("run")
    assert isinstance(ctx, RunContext)
    return ctx


def fan_out(state: BatchState) -> list[Send]:
    return [Send("task", TaskInput(spec=spec)) for spec in state["specs"]]


def task(state: TaskInput, config: RunnableConfig) -> dict[str, Any]:
    ctx = _context(config)
    spec = Spec.model_validate(state["spec"])
    started = time.monotonic()
    initial: TaskState = {"spec": state["spec"], "started_at": time.time(), "attempt": 0}
    # Each attempt is at most agent → gates → feedback; the rest of the path is short.
    limit = 20 + 4 * ctx.budget(spec).max_attempts
    try:
        final: dict[str, Any] = TASK_GRAPH.invoke(
            initial, {"configurable": {"run": ctx}, "recursion_limit": limit}
        )
    except Exception as exc:  # the blueprint guards its nodes; this guards the batch from it
        write_atomic(ctx.task_dir(spec.id) / "error.log", traceback.format_exc())
        final = {**initial, "outcome": "error", "reason": f"task graph failed: {exc}"}
    result = TaskResult(
        spec_id=spec.id,
        title=spec.title,
        tier=spec.tier,
        outcome=final.get("outcome") or "error",
        reason=final.get("reason"),
        attempts=final.get("attempt", 0),
        agent=ctx.agent_kind,
        branch=final.get("branch"),
        pr=final.get("pr"),
        escalation=final.get("escalation"),
        gates=[GateSummary.model_validate(g) for g in final.get("gate_records", [])],
        duration_s=round(time.monotonic() - started, 3),
        agent_s=round(final.get("agent_s", 0.0), 3),
        gates_s=round(final.get("gates_s", 0.0), 3),
        usage=Usage.model_validate(final.get("usage", {})),
    )
    return {"results": [result.model_dump()]}


def summarize(state: BatchState, config: RunnableConfig) -> dict[str, Any]:
    ctx = _context(config)
    order = {spec["id"]: n for n, spec in enumerate(state["specs"])}
    tasks = sorted(
        (TaskResult.model_validate(r) for r in state.get("results", [])),
        key=lambda t: order[t.spec_id],
    )
    ctx.ledger.write_summary(
        RunSummary(
            run_id=ctx.run_id,
            started_at=ctx.started_at,
            finished_at=utc_now(),
            policy=str(ctx.policy_path),
            isolation="bubblewrap" if ctx.isolation.available else f"none: {ctx.isolation.reason}",
            tasks=tasks,
            usage=sum((task.usage for task in tasks), Usage()),
            input_errors=ctx.input_errors,
        )
    )
    return {}


def build_batch_graph() -> Any:
    graph = StateGraph(BatchState)
    graph.add_node("task", task)
    graph.add_node("summarize", summarize)
    graph.add_conditional_edges(START, fan_out, ["task"])
    graph.add_edge("task", "summarize")
    graph.add_edge("summarize", END)
    return graph.compile()


BATCH_GRAPH = build_batch_graph()


def run_batch(ctx: RunContext, specs: list[Spec]) -> list[TaskResult]:
    """Run every spec through the blueprint, at most `ctx.concurrency` at once."""
    final = BATCH_GRAPH.invoke(
        {"specs": [spec.model_dump() for spec in specs], "results": []},
        {"configurable": {"run": ctx}, "max_concurrency": ctx.concurrency},
    )
    return [TaskResult.model_validate(r) for r in final.get("results", [])]
