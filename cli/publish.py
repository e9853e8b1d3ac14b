"""`harness publish RUN_ID [SPEC…]`: publish, or converge again, a finished run's tasks on
the forge (e.g. after a human read the morning report, or after a forge refused something).

Each task's desired state is made from the run's records as the run made it, and only the
difference from what the forge has is applied, so a task published already changes nothing.
Exit 0 when every task converged, 1 when any could not (one line each, why), 2 for bad input.
`--dry-run` prints the plan and makes no write (no push, no POST/PATCH/PUT/DELETE).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from cli.options import RunsDirOption, StoreOption, store_url
from cli.render import console, fail

if TYPE_CHECKING:
    from harness.config.policy import PublishConfig
    from harness.config.spec import Spec
    from harness.publish.reconcile import Outcome
    from harness.run.ledger import TaskResult


def publish(
    run_id: Annotated[str, typer.Argument(help="The run (its runs/ directory name).")],
    specs: Annotated[
        list[str] | None, typer.Argument(help="Spec ids to publish (default: every task).")
    ] = None,
    forge: Annotated[
        Literal["github", "gitlab"] | None,
        typer.Option(help="Publish on this forge (default: the run's publish.forge)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; write nothing.")] = False,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Publish a finished run's tasks on the forge, changing only what differs."""
    from harness.config.policy import parse_policy
    from harness.config.spec import Spec
    from harness.errors import InputError
    from harness.publish import PublishRefused
    from harness.publish.forge import desired_from_records, forge_factory, require_client
    from harness.publish.local import LocalPublisher
    from harness.publish.reconcile import converge
    from harness.run.ledger import TaskResult
    from harness.store import open_store, redact_url

    try:
        state = open_store(store_url(store, None, runs_dir))
        record = state.get_run(run_id)
        if record is None:
            raise InputError(
                f"publish: no run {run_id!r} in the store {redact_url(state.url)}; `harness runs` "
                "lists the runs, or pass --store if it used another store"
            )
        source = Path(record.policy_path)
        policy = parse_policy(record.policy_text, source)
        config = policy.publish.model_copy(update={"forge": forge or policy.publish.forge})
        if config.forge == "local":
            raise InputError(
                f"publish: run {run_id}'s policy publishes locally (publish.forge: local); "
                "pass --forge github, with publish.github set in the policy"
            )
        if config.forge == "github" and config.github is None:
            raise InputError(f"{source}: publish.github: required for --forge github")
        config.check_forge(source)
        require_client(config.forge)
        known = {spec["id"]: Spec.model_validate(spec) for spec in record.specs}
        fleets = {spec.fleet_spec_id for spec in known.values() if spec.variant is not None}
        unknown = [s for s in specs or [] if s not in known and s not in fleets]
        if unknown:
            raise InputError(
                f"publish: run {run_id} has no spec {', '.join(map(repr, unknown))}; "
                f"its specs: {', '.join([*fleets, *known])}"
            )
    except InputError as exc:
        raise fail(str(exc)) from None
    results = {
        task.spec_id: TaskResult.model_validate(task.result)
        for task in state.tasks(run_id)
        if task.result is not None
    }
    run_dir = Path(record.run_dir)
    local = LocalPublisher(run_dir, lambda path: _relative(path, run_dir))
    forge_for = forge_factory(config, source)
    if fleets:  # variants are candidates: only the promoted one is the spec's PR
        chosen = list(dict.fromkeys(s.split("/", 1)[0] for s in specs or list(known)))
        raise typer.Exit(
            _publish_fleet(run_id, run_dir, chosen, known, results, config, source, dry_run)
        )
    failed = 0
    for spec_id in specs or list(known):
        spec, result = known[spec_id], results.get(spec_id)
        if result is None:
            console().print(f"{spec_id}: not converged: the task has not finished")
            failed += 1
            continue
        desired = desired_from_records(
            spec,
            config,
            local,
            outcome=result.outcome,
            branch=result.branch,
            reason=result.reason,
            attempts=result.attempts,
        )
        if isinstance(desired, str):
            console().print(f"{spec_id}: {desired}")
            continue
        try:
            outcome = converge(forge_for(spec), desired, dry_run=dry_run)
        except PublishRefused as refused:
            console().print(f"{spec_id}: not converged: {refused}", soft_wrap=True)
            failed += 1
            continue
        failed += not _report(spec_id, outcome, dry_run)
    raise typer.Exit(1 if failed and not dry_run else 0)


def _report(spec_id: str, outcome: Outcome, dry_run: bool) -> bool:
    """What converging did (or would do), one line a step; False when it did not converge."""
    where = f" ({outcome.url})" if outcome.url else ""
    verb = "would" if dry_run else "did"
    for step in outcome.steps:
        console().print(f"{spec_id}: {verb} {step.detail}", soft_wrap=True)
    if outcome.stale is not None:
        console().print(f"{spec_id}: not converged: {outcome.stale}", soft_wrap=True)
        return False
    if not outcome.steps:
        console().print(f"{spec_id}: converged, nothing to change{where}", soft_wrap=True)
    else:
        console().print(f"{spec_id}: {'planned' if dry_run else 'converged'}{where}")
    return True


def _publish_fleet(
    run_id: str,
    run_dir: Path,
    fleet_ids: list[str],
    known: dict[str, Spec],
    results: dict[str, TaskResult],
    config: PublishConfig,
    source: Path,
    dry_run: bool,
) -> int:
    """A fleet run's specs: each one's promoted variant published as the spec's PR (as
    `harness promote` did), never the other variants; the exit code."""
    from harness.fleet.promote import promoted_variants, publish_promoted
    from harness.publish import PublishRefused
    from harness.publish.forge import forge_factory

    promoted = promoted_variants(run_dir)
    forge_for = forge_factory(config, source)
    failed = 0
    for fleet_id in fleet_ids:
        variant_id = promoted.get(fleet_id)
        result = results.get(variant_id or "")
        if variant_id is None or variant_id not in known or result is None:
            console().print(
                f"{fleet_id}: a fleet: use harness promote {run_id} {fleet_id} "
                "(no variant is promoted yet)",
                soft_wrap=True,
            )
            continue
        try:
            outcome = publish_promoted(
                run_dir, known[variant_id], result, config, forge_for, dry_run=dry_run
            )
        except PublishRefused as refused:
            console().print(f"{fleet_id}: not converged: {refused}", soft_wrap=True)
            failed += 1
            continue
        failed += not _report(fleet_id, outcome, dry_run)
    return 1 if failed and not dry_run else 0


def _relative(path: Path, run_dir: Path) -> str:
    """As the run named its records: relative to the runs/ folder's parent."""
    try:
        return str(path.relative_to(run_dir.parent.parent))
    except ValueError:
        return str(path)
