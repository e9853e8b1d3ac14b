"""`harness report RUN_ID`: the run as a reviewer reads it in the morning: runs/<id>/report.html
(self-contained) and report.md, or (--format terminal) a summary printed here only."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from cli.history import _store
from cli.options import RunsDirOption, StoreOption
from cli.render import OUTCOME_STYLE, console, escape, fail

if TYPE_CHECKING:
    from harness.report import Report


def report(
    run_id: Annotated[str, typer.Argument(help="The run (its directory name under runs/).")],
    previous: Annotated[
        str | None,
        typer.Option(help="The run to compare with. Default: the night before this one."),
    ] = None,
    format: Annotated[
        Literal["html", "md", "terminal"],
        typer.Option(help="html and md write both files; terminal prints a summary only."),
    ] = "html",
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the HTML report in a browser.")
    ] = False,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Write a run's report (HTML and Markdown) and print its path, or print a summary."""
    from harness.errors import InputError
    from harness.report import build_report
    from harness.report import write_built as write

    state = _store(store, runs_dir)
    try:
        built = build_report(runs_dir, run_id, state, previous)
    except InputError as exc:
        raise fail(str(exc)) from None
    finally:
        if state is not None:
            state.close()
    if format == "terminal":
        print_summary(built)
        return
    paths = write(built)
    shown = paths.html if format == "html" else paths.markdown
    console().print(f"report: {escape(str(shown))}", highlight=False, soft_wrap=True)
    if open_it:
        webbrowser.open(paths.html.resolve().as_uri())


def print_summary(built: Report) -> None:
    """The totals, then what needs a person, then the rest, one line each."""
    from rich.table import Table

    counts = built.counts()
    night = built.night
    budget = f" of ${night.budget_usd:.2f}" if night and night.budget_usd is not None else ""
    totals = " · ".join(
        f"{counts[name]} {name}" for name in ("verified", "escalated", "error", "skipped", "missed")
    )
    console().print(f"[bold]Night report {escape(built.run_id)}[/bold]: {totals}", soft_wrap=True)
    console().print(
        f"cost ${built.cost_usd:.2f}{budget} · {built.duration_s:.0f} s · "
        f"{built.tasks_per_hour:.1f} tasks per hour",
        soft_wrap=True,
    )
    if built.previous:
        console().print(
            f"since {escape(built.previous)}: newly failing "
            f"{escape(', '.join(built.newly_failing) or 'none')}; newly verified "
            f"{escape(', '.join(built.newly_verified) or 'none')}",
            soft_wrap=True,
        )
    table = Table(title="Needs you", title_justify="left")
    for column in ("task", "outcome", "reason", "failing gate", "branch"):
        table.add_column(column)
    for card in built.needs_you:
        r = card.result
        style = OUTCOME_STYLE.get(r.outcome, "")
        table.add_row(
            escape(r.spec_id),
            f"[{style}]{r.outcome}[/{style}]",
            escape(r.reason or ""),
            escape(card.failing_gate or ""),
            escape(r.branch or ""),
        )
    if table.rows:
        console().print(table)
    else:
        console().print("Needs you: nothing")
    for card in built.cards:
        r = card.result
        if r.outcome in ("escalated", "error"):
            continue
        detail = card.record if r.outcome == "verified" else r.reason
        console().print(
            f"{r.outcome:>9}  {escape(r.spec_id)}  {escape(detail or '')}", soft_wrap=True
        )
