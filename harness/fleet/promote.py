"""`harness promote`: one variant of a fleet becomes the spec's PR record
(runs/<run-id>/prs/<spec-id>.md), naming the variant, listing the other variants' results and
the tests other verified variants added that it lacks, for a human to salvage. When the
run's policy publishes on a forge, that record becomes the spec's PR there, through the same
desired state and reconciler a run uses (harness.publish.forge), the variant's branch as head.
The choice is kept in runs/<run-id>/promoted.json, so `harness publish` of a fleet run
publishes the promoted variant only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from harness.config.policy import PublishConfig
from harness.config.spec import Spec
from harness.errors import InputError
from harness.fleet.evidence import branch_head, changed_files
from harness.git import Remote
from harness.publish import PublishRefused
from harness.publish.forge import ForgeFactory, agent_summary, desired_pr
from harness.publish.reconcile import Outcome, converge
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
    promoted = promoted_variants(run_dir) | {spec_id: chosen.spec_id}
    write_atomic(run_dir / "promoted.json", json.dumps(promoted, indent=2) + "\n")
    return Promotion(path, chosen, draft, [name for name, _ in missing])


def promoted_variants(run_dir: Path) -> dict[str, str]:
    """Spec id → the variant's task id promoted for it (empty: none promoted yet)."""
    try:
        saved = json.loads((run_dir / "promoted.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {str(key): str(value) for key, value in saved.items()}


def publish_promoted(
    run_dir: Path,
    spec: Spec,
    variant: TaskResult,
    config: PublishConfig,
    forge_for: ForgeFactory,
    *,
    dry_run: bool = False,
) -> Outcome:
    """The promotion record (runs/<run>/prs/<spec>.md) as the spec's PR on the forge: the
    variant's branch its head, exactly the commit harness measured; a variant promoted without
    being verified (--force) is a draft, and its verdict says it was not verified.
    PublishRefused when there is nothing the forge could take."""
    fleet_id = spec.fleet_spec_id
    path = run_dir / "prs" / f"{fleet_id}.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise PublishRefused(
            f"its promotion record {path} is missing; run harness promote"
        ) from None
    if not variant.branch:
        raise PublishRefused(f"{variant.spec_id} ended {variant.outcome} without a branch")
    sha = Remote(Path(spec.git_toplevel), config.remote).branch_commit(variant.branch)
    if sha is None or sha == spec.base_commit:
        raise PublishRefused(f"{variant.spec_id}: branch {variant.branch} has no commit to publish")
    desired = desired_pr(
        spec,
        config,
        branch=variant.branch,
        sha=sha,
        record_text=text,
        record=_relative(path, run_dir),
        attempts=variant.attempts,
        agent_said=agent_summary(run_dir, variant.spec_id, variant.attempts),
    )
    desired = replace(desired, spec_id=fleet_id, title=text.partition("\n")[0].lstrip("# "))
    if variant.outcome != "verified":
        desired = replace(
            desired,
            draft=True,
            verdict="failure",
            summary=f"not verified ({variant.outcome}): promoted with --force, as a draft",
        )
    return converge(forge_for(spec), desired, dry_run=dry_run)


def _relative(path: Path, run_dir: Path) -> str:
    """As the run names its records: relative to the runs/ folder's parent."""
    try:
        return str(path.relative_to(run_dir.parent.parent))
    except ValueError:
        return str(path)


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
