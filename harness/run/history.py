"""Runs as they were left, read back for `harness runs` and `harness show`: a run's summary
when it wrote one, else what the store and its events hold (a run still going, or one killed
before its end), and one task's story from its records.

Nothing here changes a run: it reads runs/<id>/ (summary.json, events.jsonl, the task's
attempt records and feedback) and the store's run and task records.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from harness.agents import Usage
from harness.run.ledger import GateSummary, RunSummary, TaskResult
from harness.store import Store, TaskRecord, owner_is_gone

RunStatus = Literal["finished", "interrupted", "running", "unfinished"]


@dataclass
class RunView:
    """What a run is now: its ended tasks' results, and the last step of each task not ended."""

    run_id: str
    run_dir: Path
    started_at: str | None
    status: RunStatus
    """finished (a summary, every task ended), interrupted (a summary with interrupted
    tasks), running (a worker holds a task), unfinished (no summary and nobody running it:
    killed, or crashed; `harness resume` continues it)."""
    results: list[TaskResult]
    unended: dict[str, str] = field(default_factory=dict)
    """Tasks with no result yet, each with the last step its events show ("queued": none)."""

    @property
    def usage(self) -> Usage:
        total = Usage()
        for result in self.results:
            total += result.usage
        return total

    def counts(self) -> Counter[str]:
        counted: Counter[str] = Counter(str(result.outcome) for result in self.results)
        if self.unended:
            counted["not ended"] = len(self.unended)
        return counted


def run_ids(runs_dir: Path) -> list[str]:
    """The runs recorded under `runs_dir`: directories with an events log or a summary,
    oldest first (`harness check` leaves check-* directories: not runs)."""
    if not runs_dir.is_dir():
        return []
    found = [
        path
        for path in runs_dir.iterdir()
        if path.is_dir()
        and not path.name.startswith("check-")
        and ((path / "events.jsonl").is_file() or (path / "summary.json").is_file())
    ]
    return [path.name for path in sorted(found, key=lambda path: path.stat().st_mtime)]


def load_run(runs_dir: Path, run_id: str, store: Store | None) -> RunView | None:
    """The run `run_id` under `runs_dir` (None when there is no such run)."""
    run_dir = runs_dir / run_id
    if not run_dir.is_dir():
        return None
    summary = _summary(run_dir)
    if summary is not None:
        status: RunStatus = (
            "interrupted"
            if any(task.outcome == "interrupted" for task in summary.tasks)
            else "finished"
        )
        return RunView(run_id, run_dir, summary.started_at, status, list(summary.tasks))
    steps = last_steps(read_events(run_dir))
    record = store.get_run(run_id) if store is not None else None
    tasks = store.tasks(run_id) if record is not None and store is not None else []
    results = [TaskResult.model_validate(t.result) for t in tasks if t.result is not None]
    ended = {result.spec_id for result in results}
    names = [t.spec_id for t in tasks] or list(steps)
    unended = {name: steps.get(name, "queued") for name in names if name not in ended}
    started = (
        datetime.fromtimestamp(record.created_at, UTC).isoformat(timespec="seconds")
        if record is not None
        else _first_ts(run_dir)
    )
    status = "running" if any(_held(task) for task in tasks) else "unfinished"
    return RunView(run_id, run_dir, started, status, results, unended)


def _summary(run_dir: Path) -> RunSummary | None:
    try:
        return RunSummary.model_validate_json((run_dir / "summary.json").read_text("utf-8"))
    except (OSError, ValidationError):
        return None


def _held(task: TaskRecord) -> bool:
    """A task a live worker holds: claimed, its lease current, its owner not a dead process."""
    return (
        task.status == "claimed"
        and (task.lease_expires_at or 0) > time.time()
        and not owner_is_gone(task.owner)
    )


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """events.jsonl, line by line; a line cut short by a kill is skipped."""
    events: list[dict[str, Any]] = []
    try:
        lines = (run_dir / "events.jsonl").read_text("utf-8").splitlines()
    except OSError:
        return events
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def last_steps(events: list[dict[str, Any]]) -> dict[str, str]:
    """Each task's last step entered, with its attempt, e.g. `gates (attempt 2)`."""
    steps: dict[str, str] = {}
    for event in events:
        if event.get("event") == "enter":
            attempt = f" (attempt {event['attempt']})" if event.get("attempt") else ""
            steps[event["spec_id"]] = f"{event['node']}{attempt}"
    return steps


def _first_ts(run_dir: Path) -> str | None:
    events = read_events(run_dir)
    return str(events[0]["ts"]) if events else None


# --- one task's story ---------------------------------------------------------------------------


@dataclass
class AttemptStory:
    number: int
    agent: str
    stop_reason: str
    error: str | None
    duration_s: float
    cost_usd: float
    steps: int
    gates: list[GateSummary]
    feedback: Path | None
    """The problems the agent was given after this attempt (feedback-N.md), if any."""


@dataclass
class TaskStory:
    spec_id: str
    result: TaskResult | None
    """None while the task has not ended."""
    attempts: list[AttemptStory]
    verify: list[GateSummary]
    """The gates run again on the committed tree before publishing."""
    path: list[str]
    """The steps its events show, in order (e.g. triage, provision, agent (attempt 1), …)."""


def task_story(run: RunView, spec_id: str) -> TaskStory | None:
    """The task's attempts (agent, gates, feedback), its verification, outcome and records;
    None when the run has no such task."""
    result = next((r for r in run.results if r.spec_id == spec_id), None)
    events = [e for e in read_events(run.run_dir) if e.get("spec_id") == spec_id]
    if result is None and spec_id not in run.unended and not events:
        return None
    task_dir = run.run_dir / "tasks" / spec_id
    gates = result.gates if result is not None else []
    attempts: list[AttemptStory] = []
    for record_path in sorted(task_dir.glob("attempt-*.json"), key=_number):
        record = json.loads(record_path.read_text("utf-8"))
        number = int(record["number"])
        feedback = task_dir / f"feedback-{number}.md"
        attempts.append(
            AttemptStory(
                number=number,
                agent=str(record.get("agent", "")),
                stop_reason=str(record.get("stop_reason", "")),
                error=record.get("error"),
                duration_s=float(record.get("duration_s") or 0.0),
                cost_usd=float((record.get("usage") or {}).get("cost_usd", 0.0)),
                steps=len(record.get("steps") or []),
                gates=[g for g in gates if g.phase == "attempt" and g.attempt == number],
                feedback=feedback if feedback.is_file() else None,
            )
        )
    verify = [g for g in gates if g.phase == "verify"]
    path = [
        f"{e['node']}" + (f" (attempt {e['attempt']})" if e.get("attempt") else "")
        for e in events
        if e.get("event") == "enter"
    ]
    return TaskStory(spec_id, result, attempts, verify, path)


def _number(path: Path) -> int:
    digits = path.stem.removeprefix("attempt-")
    return int(digits) if digits.isdigit() else 0
