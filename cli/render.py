"""What the CLI prints: its two consoles, the one-line errors, a run's live table (on a
terminal), its step lines (in a log), and the outcomes table at its end.

rich is imported when something is printed, not when the CLI loads: `harness --help` (plain
click help) needs none of it.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from harness.run.ledger import RunLedger, TaskResult


@functools.cache
def console() -> Console:
    from rich.console import Console

    return Console()


@functools.cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def escape(text: str) -> str:
    """`text` with its [brackets] escaped, so rich prints it as it is, not as markup."""
    from rich.markup import escape

    return escape(text)


OUTCOME_STYLE = {"verified": "green", "escalated": "yellow", "error": "red"}


def error_line(message: str) -> None:
    # Escaped: messages quote user input and patterns, whose [brackets] are not rich markup.
    err().print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as the one error line and return the exit to raise (2: bad input)."""
    error_line(message)
    return typer.Exit(code)


def print_step(event: dict[str, Any]) -> None:
    if event["event"] == "enter":
        attempt = f" (attempt {event['attempt']})" if event.get("attempt") else ""
        console().print(f"  {event['spec_id']:<30} {event['node']}{attempt}", highlight=False)
    elif event["node"] == "teardown":
        console().print(f"  {event['spec_id']:<30} done", highlight=False)


def live_table(ledger: RunLedger) -> Table:
    from rich.table import Table

    table = Table(title="harness run", expand=False)
    for column in ("task", "attempt", "step", "elapsed"):
        table.add_column(column)
    now = time.monotonic()
    for status in ledger.snapshot():
        step = status.outcome or status.step
        table.add_row(status.spec_id, str(status.attempt), step, f"{status.elapsed(now):.1f}s")
    return table


def summary_table(results: list[TaskResult]) -> Table:
    from rich.table import Table

    table = Table(title="outcomes")
    for column in ("task", "outcome", "attempts", "reason / record"):
        table.add_column(column, overflow="fold")
    for result in results:
        style = OUTCOME_STYLE[result.outcome]
        detail = result.pr if result.outcome == "verified" else result.reason
        if result.escalation:
            detail = f"{detail}\n{result.escalation}"
        table.add_row(
            result.spec_id,
            f"[{style}]{result.outcome}[/{style}]",
            str(result.attempts),
            escape(detail or ""),
        )
    return table


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 task`, `2 tasks`, `0 actions`: the count and the noun that agrees with it."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
