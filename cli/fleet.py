"""`harness fleet`: N variants of one spec as tasks of one run, then ranked on evidence
(harness.fleet) with the scoreboard printed and written to summary.json."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import PolicyOption, RunIdOption, RunsDirOption, StoreOption
from cli.render import OUTCOME_STYLE, console, escape, fail

if TYPE_CHECKING:
    from rich.table import Table

    from harness.config.policy import Policy
    from harness.config.spec import Spec
    from harness.run.context import RunContext
    from harness.run.ledger import RunSummary


def fleet(
    spec: Annotated[Path, typer.Argument(help="The spec file the variants attempt.")],
    n: Annotated[int, typer.Option("-n", help="How many variants.")] = 3,
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            help="KEY=V1,V2 (agent, model, prompt=FILE); variants are the product, cycled to N.",
        ),
    ] = None,
    first_verified: Annotated[
        bool,
        typer.Option(
            "--first-verified",
            help="Once one variant is verified, cancel the others (their work is committed).",
        ),
    ] = False,
    policy: PolicyOption = None,
    concurrency: Annotated[int | None, typer.Option(help="Variants at once.", min=1)] = None,
    run_id: RunIdOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Run N variants of one spec, rank them on what harness measured, print the scoreboard."""
    from cli.run import execute_run, run_exit_code, start_run
    from harness.agents.select import policy_for
    from harness.errors import InputError
    from harness.fleet.judge import check_judge
    from harness.fleet.variants import fleet_variants, parse_vary, variant_specs

    try:
        varied = parse_vary(vary or [])
        if n < 1:
            raise InputError(f"-n {n}: a fleet needs at least 1 variant, e.g. -n 3")
    except InputError as exc:
        raise fail(str(exc)) from None

    def arrange(loaded_policy: Policy, specs: list[Spec]) -> list[Spec]:
        if len(specs) != 1:
            raise InputError(f"{spec}: a fleet runs one spec; give one spec file")
        root = Path.cwd() if varied else Path(specs[0].source).parent
        tasks = variant_specs(specs[0], fleet_variants(specs[0], n, varied), root)
        for task in tasks:  # each variant's agent can run: a model priced, a command set
            chosen = policy_for(task, loaded_policy)
            chosen.check_agent(chosen.agent.kind, Path(f"{task.id} ({task.variant})"))
        check_judge(spec, tasks, loaded_policy)
        return tasks

    ctx, loaded = start_run(
        [spec],
        policy,
        concurrency,
        run_id,
        None,
        runs_dir,
        store,
        arrange=arrange,
        options={"first_verified": first_verified},
    )
    prepare_fleet(ctx, first_verified)
    results = execute_run(ctx, loaded, "fleet")
    finish_fleet(ctx, loaded)
    raise typer.Exit(run_exit_code(ctx, results))


def is_fleet(specs: list[Spec]) -> bool:
    return any(spec.variant is not None for spec in specs)


def prepare_fleet(ctx: RunContext, first_verified: bool) -> None:
    """A fleet's run set up (by `harness fleet`, and by `harness resume` of one)."""
    from graphs.batch import cancel_siblings
    from harness.publish.local import LocalPublisher

    ctx.config = replace(ctx.config, first_verified=first_verified)
    # Variants are candidates, not PRs: each keeps a local record, whatever the policy's forge;
    # only the promoted one becomes the spec's PR (harness promote).
    ctx.services.publisher = LocalPublisher(ctx.config.run_dir, ctx.config.relative)
    if first_verified:  # resumed: a variant verified before the stop still cancels the rest
        for result in ctx.results():
            if result.outcome == "verified" and result.variant is not None:
                cancel_siblings(ctx, result.spec_id)


def finish_fleet(ctx: RunContext, specs: list[Spec]) -> None:
    """Unless the run was stopped: the variants ranked, the scoreboard printed."""
    from harness.fleet.judge import judges
    from harness.fleet.scoreboard import rank_run

    if ctx.live.stop.signum is None and (ctx.config.run_dir / "summary.json").is_file():
        # The judge, if any, shares the variants' limiter and the run's spend.
        judge_for = judges(specs, ctx.config.policy, ctx.services.fleet)
        summary = rank_run(ctx.config.run_dir, specs, ctx.live.sandboxes.confinement, judge_for)
        console().print(scoreboard(summary))


def scoreboard(summary: RunSummary) -> Table:
    from rich.table import Table

    table = Table(title=f"fleet {summary.run_id}: ranked on evidence")
    for column in ("rank", "variant", "agent / model", "outcome", "why"):
        table.add_column(column, overflow="fold")
    for task in summary.tasks:
        if task.variant is None:
            continue
        style = OUTCOME_STYLE.get(task.outcome, "")
        who = f"{task.variant.get('agent') or task.agent} / {task.variant.get('model') or '-'}"
        if task.variant.get("prompt"):
            who += f" + {task.variant['prompt']}"
        table.add_row(
            str(task.rank),
            task.spec_id,
            escape(who),
            f"[{style}]{task.outcome}[/{style}]",
            escape(task.rank_reason or ""),
        )
    return table
