"""`harness promote`: one variant of a fleet becomes the spec's PR record
(runs/<run-id>/prs/<spec-id>.md), naming the variant, listing the other variants' results and
the tests other verified variants added that it lacks, for a human to salvage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.config.spec import Spec
from harness.errors import InputError
from harness.fleet.evidence import branch_head, changed_files
from harness.run.ledger import RunSummary, TaskResult, write_atomic

TEST_FILE = re.compile(r"(^|/)(test_[^/]*\.py|[^/]*_test\.py)$")


@dataclass(frozen=True)
class Promotion:
    record: Path
    variant: TaskResult
    draft: bool
    missing_tests: list[str]


def choose(summary: RunSummary, spec_id: str, k: int | None, force: bool) -> TaskResult:
    """The variant to promote: `k`, else the top-ranked; an unverified one only with force."""
    variants = [t for t in summary.tasks if t.spec_id.startswith(f"{spec_id}/v")]
    if not variants:
        known = sorted({t.spec_id.split("/", 1)[0] for t in summary.tasks})
        raise InputError(
            f"promote: run {summary.run_id} has no fleet of {spec_id!r}; its specs: "
            f"{', '.join(known) or 'none'}"
        )
    if k is None:
        chosen = min(variants, key=lambda t: t.rank or len(variants) + 1)
    else:
        found = [t for t in variants if t.spec_id == f"{spec_id}/v{k}"]
        if not found:
            raise InputError(f"promote: --variant {k}: {spec_id} has v1 to v{len(variants)}")
        chosen = found[0]
    if chosen.outcome != "verified" and not force:
        raise InputError(
            f"promote: {chosen.spec_id} is {chosen.outcome}, not verified; --force publishes it "
            "as a draft"
        )
    return chosen


def promote(
    run_dir: Path, specs: list[Spec], spec_id: str, k: int | None, force: bool
) -> Promotion:
    summary = RunSummary.model_validate_json((run_dir / "summary.json").read_text("utf-8"))
    chosen = choose(summary, spec_id, k, force)
    by_id = {spec.id: spec for spec in specs}
    draft = chosen.outcome != "verified"
    missing = _missing_tests(by_id, summary, chosen)
    lines = [
        f"# {'[DRAFT] ' if draft else ''}{chosen.title}",
        "",
        f"Promoted variant **{chosen.spec_id}** of fleet run `{summary.run_id}` "
        f"({_named(chosen)}); rank {chosen.rank}: {chosen.rank_reason}.",
        "",
        f"- branch: `{chosen.branch}`",
        f"- outcome: {chosen.outcome}" + (" (published as a draft: --force)" if draft else ""),
        "",
        "## The other variants",
        "",
        "| variant | outcome | rank | reason |",
        "|---|---|---|---|",
    ]
    for task in summary.tasks:
        if task.spec_id.startswith(f"{spec_id}/v") and task.spec_id != chosen.spec_id:
            lines.append(f"| {task.spec_id} | {task.outcome} | {task.rank} | {task.rank_reason} |")
    lines += ["", "## Tests other verified variants added that this one lacks", ""]
    lines += [f"- `{name}` (on `{branch}`)" for name, branch in missing] or ["none"]
    own = chosen.pr or chosen.escalation
    if own:
        record = run_dir.parent / own
        if record.is_file():
            lines += ["", "## The variant's own record", "", record.read_text("utf-8")]
    path = run_dir / "prs" / f"{spec_id}.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return Promotion(path, chosen, draft, [name for name, _ in missing])


def _named(task: TaskResult) -> str:
    variant = task.variant or {}
    chosen = [f"{key} {variant[key]}" for key in ("agent", "model", "prompt") if variant.get(key)]
    return ", ".join(chosen) or f"the policy's agent, {task.agent}"


def _missing_tests(
    specs: dict[str, Spec], summary: RunSummary, chosen: TaskResult
) -> list[tuple[str, str]]:
    """(test file, branch) for each test file a verified sibling added that the chosen
    variant's change does not have."""
    spec = specs.get(chosen.spec_id)
    if spec is None:
        return []
    head = branch_head(spec, chosen.branch) if chosen.branch else None
    has = set(changed_files(spec, head)) if head else set()
    missing: list[tuple[str, str]] = []
    for task in summary.tasks:
        sibling = specs.get(task.spec_id)
        if task is chosen or sibling is None or task.outcome != "verified" or not task.branch:
            continue
        if sibling.fleet_spec_id != spec.fleet_spec_id:
            continue
        theirs = branch_head(sibling, task.branch)
        for name in changed_files(sibling, theirs, added_only=True) if theirs else []:
            if TEST_FILE.search(name) and name not in has and name not in dict(missing):
                missing.append((name, task.branch))
    return missing
