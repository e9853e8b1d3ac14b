"""How a blueprint node runs: with the run's context, its steps in the ledger, its failpoints,
and an exception turned into the task's `error` outcome (teardown still runs). A run that is
stopping (SIGINT, SIGTERM) starts no node, and keeps no node its grace period cut short: both
raise Interrupted, so no checkpoint records the node and a resume runs it."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig

from harness import failpoints, redact
from harness.night.admission import window_end_reason
from harness.run.context import Interrupted, LeaseLost, RunContext
from harness.run.ledger import write_atomic
from harness.run.parking import Deferred

State = TypeVar("State", bound=Mapping[str, Any])
NodeState = TypeVar("NodeState", bound=Mapping[str, Any], contravariant=True)
Update = dict[str, Any]

WINDOW_NODES = frozenset({"triage", "provision", "agent", "gates", "guard", "verify"})
"""Nodes that do not start once the run's window is over (RunConfig.not_after); the wrap-up
(publish, escalate, teardown) always runs."""


class Node(Protocol[NodeState]):
    """A node as LangGraph calls it (it passes `config` because the parameter is named so)."""

    __name__: str

    def __call__(self, state: NodeState, config: RunnableConfig) -> Update: ...


def run_context(config: RunnableConfig) -> RunContext:
    ctx = config.get("configurable", {}).get("run")
    if not isinstance(ctx, RunContext):
        raise RuntimeError("the task graph needs configurable.run: a harness RunContext")
    return ctx


def node(name: str) -> Callable[[Callable[[State, RunContext], Update]], Node[State]]:
    """Records enter/exit events, and turns an exception into the task's `error` outcome."""

    def decorate(body: Callable[[State, RunContext], Update]) -> Node[State]:
        # Not functools.wraps: LangGraph reads the signature (through __wrapped__) to decide
        # whether to pass `config`, and must see this wrapper's, not the node body's.
        def run(state: State, config: RunnableConfig) -> Update:
            ctx = run_context(config)
            spec_id = state["spec"].id
            if spec_id in ctx.live.lost:
                # Another worker reclaimed the task: stop here, without touching its sandbox.
                raise LeaseLost(f"{spec_id}: this worker's lease was taken over")
            # The agent node starts the next attempt; every other node works on the current one.
            attempt = state.get("attempt", 0) + (1 if name == "agent" else 0)
            ctx.services.ledger.event(spec_id, name, "enter", attempt=attempt)
            failpoints.enter(name, spec_id)
            failpoints.hit(f"{name}.before")
            stop = ctx.live.stop
            if stop.requested:
                ctx.services.ledger.event(spec_id, name, "interrupted", attempt=attempt)
                raise Interrupted(f"{spec_id}: stopping; {name} not started")
            cancel = ctx.live.cancelled.get(spec_id) if name in WINDOW_NODES else None
            if cancel is not None and not state.get("escalate_reason"):
                # A fleet sibling was verified: this one stops here (escalate commits its work).
                ctx.services.ledger.event(spec_id, name, "exit", escalate_reason=cancel)
                return {"escalate_reason": cancel, "cancelled": True}
            over = window_end_reason(ctx.config.not_after) if name in WINDOW_NODES else None
            if over is not None and not state.get("escalate_reason"):
                # A night's window is over: no more work, the task is wrapped up (escalate
                # commits its work on its branch).
                ctx.services.ledger.event(spec_id, name, "exit", escalate_reason=over)
                return {"escalate_reason": over}
            try:
                update = body(state, ctx)
            except Deferred:  # the model API cut the attempt: the task is parked, not ended
                ctx.services.ledger.event(spec_id, name, "deferred", attempt=attempt)
                raise
            except Exception as exc:
                if stop.requested:  # cut short by the interrupt (a killed command, say)
                    ctx.services.ledger.event(spec_id, name, "interrupted", attempt=attempt)
                    raise Interrupted(f"{spec_id}: {name} interrupted") from exc
                log = ctx.config.task_dir(spec_id) / "error.log"
                write_atomic(log, traceback.format_exc())
                # Exceptions quote what they failed on (a command's output, a file): redacted,
                # as everything written to the store is.
                reason = redact.current().text(
                    f"{name} failed: {type(exc).__name__}: {exc} (traceback: {log})"
                )
                update = {"outcome": "error", "reason": reason}
            if stop.forced:  # its commands were killed: what it measured is not its verdict
                ctx.services.ledger.event(spec_id, name, "interrupted", attempt=attempt)
                raise Interrupted(f"{spec_id}: {name} cut short at the end of the grace period")
            ended = {k: update[k] for k in ("outcome", "reason", "escalate_reason") if k in update}
            ctx.services.ledger.event(spec_id, name, "exit", **ended)
            failpoints.hit(f"{name}.after")  # done, and LangGraph has not saved it yet
            return update

        run.__name__ = run.__qualname__ = name
        return run

    return decorate
