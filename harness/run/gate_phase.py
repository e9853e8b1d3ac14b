"""One phase of a task's gates: the policy's gates (integration gates with their services), then
the spec's acceptance commands, run in the task's sandbox with its environment recorded as
validating, each passing gate compared with its run on the base commit (harness.gates.
base_compare); on an attempt, a failure's problems labelled pre-existing where the base commit
fails the same way."""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness.config.spec import Spec
from harness.gates.record import GateRun, Phase
from harness.gates.runner import GateRunner, acceptance_gates
from harness.integration.gate import IntegrationGates
from harness.problems import Problem
from harness.run.context import RunContext


@dataclass(frozen=True)
class PhaseResult:
    run: GateRun
    problems: list[Problem]
    """The failing gate's problems, labelled (empty when every gate passed)."""
    gates_s: float
    """Gate time, with the base commit's runs (to compare with, and to label problems)."""


def run_gate_phase(
    ctx: RunContext,
    spec: Spec,
    *,
    phase: Phase,
    attempt: int,
    deadline: float,
) -> PhaseResult:
    config, policy = ctx.config, ctx.config.policy
    sandbox = ctx.live.sandboxes.get(spec)
    integration = IntegrationGates(
        ctx.services.integration,
        spec,
        sandbox,
        policy.integration,
        run_id=config.run_id,
        run_dir=config.run_dir,
        log_dir=config.task_dir(spec.id) / "services",
    )
    runner = GateRunner(
        sandbox,
        log_dir=config.task_dir(spec.id) / "gates",
        instance=f"runs/{config.run_id}/{spec.id}",
        infrastructure=policy.infrastructure,
        flaky=policy.flaky,
        deadline=deadline,
        prepare=integration.prepare,
        against_base=ctx.services.preexisting.against(spec, policy.guard, sandbox),
    )
    to_run = [*integration.gates(policy.gates), *acceptance_gates(spec.acceptance)]
    ctx.live.sandboxes.mark(spec.id, "validating")
    run = runner.run_all(to_run, attempt=attempt, phase=phase)
    ctx.live.sandboxes.mark(spec.id, "ready")
    gates_s = sum(record.duration_s for record in run.records) + runner.compare_s
    problems, failed = run.problems, run.failed
    # An integration gate on the bare base would run without its services: it proves nothing.
    if (
        failed is not None
        and phase == "attempt"
        and policy.feedback.check_base
        and not (run.infrastructure or run.flaky_blocked or failed.kind == "integration")
    ):
        gate = next(g for g in to_run if g.name == failed.name)
        started = time.monotonic()
        problems = ctx.services.preexisting.label(spec, gate, problems)
        gates_s += time.monotonic() - started  # gate time too (it ran on the base)
    return PhaseResult(run, problems, gates_s)
