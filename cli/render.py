"""What the CLI prints: its two consoles, the one-line errors, a run's live table (on a
terminal), its step lines (in a log), and the outcomes table at its end.

rich is imported when something is printed, not when the CLI loads: `harness --help` (plain
click help) needs none of it.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timedelta
from pathlib import Path
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


OUTCOME_STYLE = {
    "verified": "green",
    "escalated": "yellow",
    "error": "red",
    "interrupted": "magenta",
    "skipped": "dim",
    "deferred": "cyan",
    "cancelled": "dim",
}


def error_line(message: str) -> None:
    # Escaped: messages quote user input and patterns, whose [brackets] are not rich markup.
    err().print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as the one error line and return the exit to raise (2: bad input)."""
    error_line(message)
    return typer.Exit(code)


class StepLines:
    """A run's progress as plain lines, for a log (CI, a pipe): one per step a task enters,
    stamped with the time, and with how long its previous step took; one when it is done,
    with its outcome and its whole time."""

    def __init__(self) -> None:
        self._entered: dict[str, tuple[str, datetime]] = {}
        self._started: dict[str, datetime] = {}
        self._outcome: dict[str, str] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        spec_id, node, kind = event["spec_id"], event["node"], event["event"]
        at = datetime.fromisoformat(event["ts"])
        self._started.setdefault(spec_id, at)
        if "outcome" in event:
            self._outcome[spec_id] = str(event["outcome"])
        if kind == "enter":
            attempt = f" (attempt {event['attempt']})" if event.get("attempt") else ""
            previous = self._entered.get(spec_id)
            self._entered[spec_id] = (node, at)
            after = f"  [{previous[0]} took {_seconds(at - previous[1])}]" if previous else ""
            self._line(at, spec_id, f"{node}{attempt}{after}")
        elif kind == "exit" and node == "teardown":
            outcome = self._outcome.get(spec_id, "ended")
            self._line(at, spec_id, f"done: {outcome} in {_seconds(at - self._started[spec_id])}")
        elif kind != "exit":  # interrupted, resumed, reused, adopted, …
            self._line(at, spec_id, f"{node} {kind}")

    @staticmethod
    def _line(at: datetime, spec_id: str, text: str) -> None:
        stamp = at.astimezone().strftime("%H:%M:%S")
        line = f"{stamp}  {spec_id:<30} {text}"
        console().print(escape(line), highlight=False, soft_wrap=True)


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():.1f}s"


LOG_TAIL_BYTES = 4096
"""What the live view reads of a log's end for its last line."""


class LiveView:
    """A run's live table on a terminal: per task, its step (the node, or the gate or agent
    command running in it), the attempt, the task's and the step's elapsed time, and the last
    line the running command wrote to its log (logs are redacted as they are written)."""

    def __init__(self, ledger: RunLedger, run_dir: Path) -> None:
        self.ledger = ledger
        self.run_dir = run_dir
        self._since: dict[str, tuple[tuple[str, int], float, float]] = {}
        """Per task: its step and attempt, when this view first saw it (monotonic, wall)."""

    def __call__(self) -> Table:
        from rich.table import Table

        table = Table(title="harness run", expand=False)
        for column in ("task", "attempt", "step", "elapsed", "output"):
            table.add_column(column, overflow="ellipsis", no_wrap=column == "output")
        now, wall = time.monotonic(), time.time()
        for status in self.ledger.snapshot():
            if status.outcome is not None:
                elapsed = f"{status.elapsed(now):.1f}s"
                table.add_row(status.spec_id, str(status.attempt), status.outcome, elapsed, "")
                continue
            key = (status.step, status.attempt)
            seen = self._since.get(status.spec_id)
            if seen is None or seen[0] != key:
                seen = (key, now, wall)
                self._since[status.spec_id] = seen
            step, output = status.step, ""
            log = self._running_log(status.spec_id, since=seen[2] - 1.0)
            if log is not None:
                step, output = f"{status.step}: {_log_subject(log)}", last_line(log)
            elapsed = f"{status.elapsed(now):.1f}s ({now - seen[1]:.1f}s)"
            table.add_row(status.spec_id, str(status.attempt), step, elapsed, escape(output))
        return table

    def _running_log(self, spec_id: str, since: float) -> Path | None:
        """The task's log written most recently, if written since its step started."""
        newest: tuple[float, Path] | None = None
        for log in (self.run_dir / "tasks" / spec_id).rglob("*.log"):
            try:
                mtime = log.stat().st_mtime
            except OSError:
                continue
            if mtime >= since and (newest is None or mtime > newest[0]):
                newest = (mtime, log)
        return newest[1] if newest else None


def _log_subject(log: Path) -> str:
    """What wrote a log, from its name: gates/attempt-1-lint.log is the gate `lint`,
    agent/attempt-2/command.log the agent's command, services/pricing-1.log a service."""
    stem = log.name.removesuffix(".log").removesuffix(".files")
    if log.parent.name == "gates":
        return stem.split("-", 2)[-1]
    if log.parent.name == "services":
        return f"service {stem.rsplit('-', 1)[0]}"
    return stem


def last_line(log: Path) -> str:
    """The last non-empty line of a log, read from its end."""
    try:
        with log.open("rb") as stream:
            stream.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
            tail = stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


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
