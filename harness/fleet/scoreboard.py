"""The end of a fleet run: every variant measured (diff, held-out checks on the verified ones),
ranked per spec, and summary.json's tasks given `rank` and `rank_reason`."""

from __future__ import annotations

import json
from pathlib import Path

from harness.config.spec import Spec
from harness.fleet.evidence import branch_head, diff_size, run_holdout
from harness.fleet.ranking import DiffSize, Evidence, rank
from harness.run.ledger import RunSummary, TaskResult, write_atomic
from harness.sandbox.limits import Confinement

HOLDOUT_TIMEOUT_S = 600.0


def measure(spec: Spec, task: TaskResult, run_dir: Path, confinement: Confinement) -> Evidence:
    head = branch_head(spec, task.branch) if task.branch else None
    if head is None:
        return Evidence(task=task, diff=DiffSize())
    evidence = Evidence(task=task, diff=diff_size(spec, head), holdout_total=len(spec.holdout))
    if task.outcome == "verified" and spec.holdout:
        workdir = run_dir / "holdout" / spec.id
        passed = run_holdout(spec, head, workdir, confinement, HOLDOUT_TIMEOUT_S)
        write_atomic(workdir / "results.json", json.dumps(passed) + "\n")
        evidence = Evidence(
            task=task,
            diff=evidence.diff,
            holdout_passed=sum(ok for _, ok in passed),
            holdout_total=len(passed),
        )
    return evidence


def rank_run(run_dir: Path, specs: list[Spec], confinement: Confinement) -> RunSummary:
    """Rank the run's variants, per spec, and write the ranks into its summary.json."""
    path = run_dir / "summary.json"
    summary = RunSummary.model_validate_json(path.read_text(encoding="utf-8"))
    by_id = {spec.id: spec for spec in specs}
    fleets: dict[str, list[Evidence]] = {}
    for task in summary.tasks:
        spec = by_id.get(task.spec_id)
        if spec is not None and spec.variant is not None:
            fleets.setdefault(spec.fleet_spec_id, []).append(
                measure(spec, task, run_dir, confinement)
            )
    ranks: dict[str, tuple[int, str]] = {}
    for fleet in fleets.values():
        for evidence, place, why in rank(fleet):
            ranks[evidence.task.spec_id] = (place, why)
    tasks = [
        task.model_copy(update=dict(zip(("rank", "rank_reason"), ranks[task.spec_id], strict=True)))
        if task.spec_id in ranks
        else task
        for task in summary.tasks
    ]
    summary = summary.model_copy(update={"tasks": sorted(tasks, key=lambda t: t.rank or 0)})
    write_atomic(path, summary.model_dump_json(indent=2) + "\n")
    return summary
