"""The end of a fleet run: every variant measured (diff, held-out checks on the verified ones),
ranked per spec, and summary.json's tasks given `rank` and `rank_reason`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from harness.config.spec import Spec
from harness.fleet.evidence import branch_head, diff_size, run_holdout
from harness.fleet.ranking import DiffSize, Evidence, TieBreaker, rank
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


def rank_run(
    run_dir: Path,
    specs: list[Spec],
    confinement: Confinement,
    judge_for: Callable[[str], TieBreaker | None] | None = None,
) -> RunSummary:
    """Rank the run's variants, per spec, and write the ranks into its summary.json;
    `judge_for(spec id)`: that fleet's tie-break judge, if it has one."""
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
    ranks: dict[str, dict[str, object]] = {}
    for fleet_id, fleet in fleets.items():
        for ranked in rank(fleet, judge_for(fleet_id) if judge_for else None):
            vote = ranked.vote
            ranks[ranked.evidence.task.spec_id] = {
                "rank": ranked.place,
                "rank_reason": ranked.why,
                "judge": None
                if vote is None
                else {"model": vote.model, "vote": vote.preferred, "why": vote.why},
            }
    tasks = [
        task.model_copy(update=ranks[task.spec_id]) if task.spec_id in ranks else task
        for task in summary.tasks
    ]
    summary = summary.model_copy(update={"tasks": sorted(tasks, key=lambda t: t.rank or 0)})
    write_atomic(path, summary.model_dump_json(indent=2) + "\n")
    return summary
