"""`harness night`: a batch run as a night (a window, a spending cap, an ordered queue), its
report written at the end; or, with --config, the night config's schedules fired when due.

The run itself is `harness run`'s (cli/run.py: start_run, execute_run, the exit codes); the night
adds the admission of each task (harness.night.admission) and the report (harness.report).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import (
    ConcurrencyOption,
    PolicyOption,
    RunIdOption,
    RunsDirOption,
    StoreOption,
    store_url,
)
from cli.render import console, escape, fail
from cli.run import AgentChoice, execute_run, run_exit_code, start_run

if TYPE_CHECKING:
    from harness.config.policy import Policy
    from harness.config.spec import Spec
    from harness.night.admission import NightAdmission
    from harness.night.schedule import Schedule
    from harness.night.window import NightWindow
    from harness.run.context import RunContext


def night(
    specs: Annotated[
        list[Path] | None, typer.Argument(help="Spec files or directories of specs.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="When the night ends: HH:MM (its next occurrence) or ISO 8601."),
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="The night's window, HH:MM-HH:MM (e.g. 22:00-06:00).")
    ] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option(help="The night's spending cap in US dollars. Default: no cap."),
    ] = None,
    policy: PolicyOption = None,
    concurrency: ConcurrencyOption = None,
    run_id: RunIdOption = None,
    agent: Annotated[AgentChoice | None, typer.Option(help="Override the policy's agent.")] = None,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
    config: Annotated[
        Path | None,
        typer.Option(help="A night config: fire its `schedules:` that are due now, and no SPECS."),
    ] = None,
) -> None:
    """Run specs as a night: inside a window, under a spending cap, highest priority first;
    then write the report."""
    if config is not None:
        if specs:
            raise fail("harness night: give SPECS or --config, not both")
        raise typer.Exit(_fire_schedules(config, runs_dir, store))
    if not specs:
        raise fail("harness night: give SPECS (files or directories), or --config night.yaml")
    raise typer.Exit(
        run_night(
            specs, until, window, budget_usd, policy, concurrency, run_id, agent, runs_dir, store
        )
    )


def run_night(
    specs: list[Path],
    until: str | None,
    window: str | None,
    budget_usd: float | None,
    policy: Path | None,
    concurrency: int | None,
    run_id: str | None,
    agent: AgentChoice | None,
    runs_dir: Path,
    store: str | None,
) -> int:
    """One night, start to report; its exit code (as `harness run`'s)."""
    from harness.errors import InputError
    from harness.night.order import night_order
    from harness.night.window import window_from

    if budget_usd is not None and budget_usd < 0:
        raise fail(
            f"--budget-usd: {budget_usd:g} is negative; give the night's cap in US dollars, e.g. 5"
        )
    try:
        night_window = window_from(until, window)
    except InputError as exc:
        raise fail(str(exc)) from None
    _wait_for_start(night_window)

    def arrange(_: Policy, loaded: list[Spec]) -> list[Spec]:
        return night_order(loaded)

    ctx, queue = start_run(
        specs, policy, concurrency, run_id, agent, runs_dir, store, arrange=arrange
    )
    ctx.config = replace(ctx.config, not_after=night_window.end.timestamp())
    admission = _admission(ctx, night_window, budget_usd)
    cap = f"${budget_usd:.2f}" if budget_usd is not None else "no cap"
    console().print(
        f"night [bold]{ctx.config.run_id}[/bold]: until {night_window.end:%Y-%m-%d %H:%M %Z}, "
        f"budget {cap}, queue {', '.join(spec.id for spec in queue)}",
        soft_wrap=True,
    )
    results = execute_run(ctx, queue, "night", admission)
    _write_report(ctx, runs_dir)
    if ctx.config.input_errors and ctx.live.stop.signum is None:
        return 2
    return run_exit_code(ctx, results)


def _wait_for_start(night_window: NightWindow) -> None:
    """A --window that starts later: wait for it (a timer or cron may start us early)."""
    from datetime import datetime

    wait = (night_window.start - datetime.now().astimezone()).total_seconds()
    if wait > 0:
        console().print(f"night: waiting {wait / 60:.0f} min for the window to open")
        time.sleep(wait)


def _admission(
    ctx: RunContext, night_window: NightWindow, budget_usd: float | None
) -> NightAdmission:
    from harness.night.admission import NightAdmission, cost_estimator
    from harness.night.budget import NightBudget

    config, services = ctx.config, ctx.services
    if budget_usd is not None:  # model calls stop at the night's cap, whatever was reserved
        spend = services.fleet.spend
        spend.max_cost_usd = min(spend.max_cost_usd or budget_usd, budget_usd)

    def outcomes() -> dict[str, str]:
        tasks = services.store.tasks(config.run_id)
        return {
            t.spec_id: str(t.result["outcome"]) for t in tasks if t.status == "done" and t.result
        }

    return NightAdmission(
        window=night_window,
        budget=NightBudget.of(budget_usd),
        estimate=cost_estimator(services.store, str(config.policy_path.resolve()), config.policy),
        outcomes=outcomes,
        stopping=lambda: ctx.live.stop.requested,
        policy=config.policy,
    )


def _write_report(ctx: RunContext, runs_dir: Path) -> None:
    """The report, written and summed up here; where it is."""
    from cli.report import print_summary
    from harness.report import build_report, write_built

    built = build_report(runs_dir, ctx.config.run_id, ctx.services.store)
    paths = write_built(built)
    print_summary(built)
    console().print(
        f"report: {escape(str(paths.html))} · {escape(str(paths.markdown))}",
        highlight=False,
        soft_wrap=True,
    )


def _fire_schedules(config_path: Path, runs_dir: Path, store: str | None) -> int:
    """Fire the config's due schedules (each once across workers); print what happened."""
    from datetime import datetime

    from harness.errors import InputError
    from harness.night.schedule import fire_due, load_night_config
    from harness.store import open_store, worker_id

    try:
        night_config = load_night_config(config_path)
        state = open_store(store_url(store, None, runs_dir))
    except InputError as exc:
        raise fail(str(exc)) from None
    base = config_path.parent
    codes: list[int] = []

    def run(schedule: Schedule, fire_at: datetime, run_id: str) -> None:
        policy = base / schedule.policy if schedule.policy else None
        try:
            code = run_night(
                [base / path for path in schedule.specs],
                schedule.until,
                schedule.window,
                schedule.budget_usd,
                policy,
                None,
                run_id,
                None,
                runs_dir,
                store,
            )
        except typer.Exit as exited:
            code = exited.exit_code
        codes.append(code)
        if code not in (0, 1):
            raise RuntimeError(f"the night {run_id} exited {code}")

    for fire in fire_due(night_config, state, worker_id(), run):
        detail = f": {fire.detail}" if fire.detail else ""
        console().print(
            f"schedule {fire.schedule} {fire.fire_at:%Y-%m-%d %H:%M}: {fire.status}"
            f"{' ' + fire.run_id if fire.run_id else ''}{escape(detail)}",
            soft_wrap=True,
        )
    return max(codes, default=0)
