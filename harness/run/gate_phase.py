"""One phase of a task's gates: the policy's gates (integration gates with their services), then
the spec's acceptance commands, run in the task's sandbox with its environment recorded as
validating, each passing gate compared with its run on the base commit (harness.gates.
base_compare); on an attempt, a failure's problems labelled pre-existing where the base commit
fails the same way.

Every phase, an attempt's as much as verification, starts from a clean checkout of the
committed tree (the attempt committed everything not ignored, so only ignored files go), and
its records name that tree's hash: the evidence is about exactly the commit. So verification
reuses the last attempt's runs when they are of the tree it would judge (harness.gates.reuse).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from harness.config.policy import GateConfig
from harness.config.spec import Spec
from harness.gates.record import GateRecord, GateRun, Phase
from harness.gates.reuse import VerifyReuse, reusable
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
    reused: VerifyReuse | None = None
    """Verification that ran no gate: the last attempt's runs were of the same clean tree."""


def run_gate_phase(
    ctx: RunContext,
    spec: Spec,
    *,
    phase: Phase,
    attempt: int,
    deadline: float,
    earlier: Sequence[GateRecord] = (),
) -> PhaseResult:
    """`earlier`: the task's gate records so far, which verification may reuse."""
    config, policy = ctx.config, ctx.config.policy
    sandbox = ctx.live.sandboxes.get(spec)
    worktree = sandbox.worktree
    worktree.reset_to()  # exactly the committed tree: nothing uncommitted, untracked or ignored
    tree, clean = worktree.tree(), not worktree.has_changes()
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
    if phase == "verify" and (reuse := _reuse(ctx, spec, earlier, attempt, tree, to_run)):
        return PhaseResult(GateRun(), [], 0.0, reused=reuse)
    ctx.live.sandboxes.mark(spec.id, "validating")
    runner.prepare = ctx.services.caches.seeding(spec, sandbox, runner.prepare)  # base's caches
    runner.prepare = ctx.services.setup.ready(spec, sandbox).then(runner.prepare)  # deps installed
    run = runner.run_all(to_run, attempt=attempt, phase=phase)
    on_tree = {"tree": tree, "clean_checkout": clean}
    run.records = [record.model_copy(update=on_tree) for record in run.records]
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


def _reuse(
    ctx: RunContext,
    spec: Spec,
    earlier: Sequence[GateRecord],
    attempt: int,
    tree: str,
    to_run: list[GateConfig],
) -> VerifyReuse | None:
    """The last attempt's runs as verification, unless policy forces a re-run or they are not
    of this tree (harness.gates.reuse); the decision and its reason go in the run's events."""
    found = reusable(earlier, attempt=attempt, tree=tree, gates=to_run)
    if ctx.config.policy.verify.rerun:
        found = "policy verify.rerun: true"
    if isinstance(found, VerifyReuse):
        ctx.services.ledger.event(spec.id, "verify", "reused", reason=found.line())
        return found
    ctx.services.ledger.event(spec.id, "verify", "rerun", reason=found)
    return None
