"""What a report shows, read from what the run left: summary.json (or the store, for a run
still going), the store's run record (each spec's repository and base), the records under
runs/<id>/ (escalations' problems, feedback per attempt, attempt records), and git (each
branch's commits and diff: harness.git.BranchReader). Nothing here changes the run or trusts
the agent's text: its summary is kept as text for the renderers to sanitise."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from harness.errors import InfrastructureError, InputError
from harness.git import BranchReader
from harness.problems import Problem, one_liners
from harness.run.history import RunView, load_run, run_ids
from harness.run.ledger import GateSummary, NightSummary, RunSummary, TaskResult
from harness.store import Store
from harness.store.night import FireRecord

MAX_DIFF_CHARS = 200_000
"""A task's diff is cut here in the report (the branch holds all of it)."""

READERS = 4
"""Tasks whose records and branches are read at once."""

NEEDS_YOU = ("escalated", "error")
"""Outcomes a person acts on; the report lists them first."""


@dataclass
class AttemptRow:
    number: int
    stop_reason: str
    cost_usd: float
    duration_s: float
    failed_gate: str | None
    problems: list[str]
    """What its gates found, one line each (the feedback the next attempt was given)."""
    trajectory: str
    """Its attempt record (the agent's steps), relative to the run's directory."""


@dataclass
class Commit:
    sha: str
    subject: str


@dataclass
class TaskCard:
    result: TaskResult
    record: str | None
    """The PR or escalation record, relative to the run's directory."""
    failing_gate: str | None
    last_problems: list[str]
    attempts: list[AttemptRow]
    commits: list[Commit]
    diffstat: str
    diff: str
    diff_cut: bool
    agent_summary: str | None
    """The agent's own words (Markdown, untrusted): rendered sanitised, labelled as its."""
    logs: list[tuple[str, str]]
    """(label, path relative to the run's directory): gate logs."""

    @property
    def cost_usd(self) -> float:
        return self.result.usage.cost_usd


@dataclass
class Report:
    run_id: str
    run_dir: Path
    started_at: str | None
    finished_at: str | None
    duration_s: float
    cards: list[TaskCard]
    night: NightSummary | None
    previous: str | None
    newly_failing: list[str] = field(default_factory=list)
    newly_verified: list[str] = field(default_factory=list)
    missed: list[FireRecord] = field(default_factory=list)
    status: str = "finished"

    def counts(self) -> Counter[str]:
        counted: Counter[str] = Counter(str(card.result.outcome) for card in self.cards)
        counted["missed"] = len(self.missed)
        return counted

    @property
    def cost_usd(self) -> float:
        return sum(card.cost_usd for card in self.cards)

    @property
    def tasks_per_hour(self) -> float:
        ran = sum(card.result.outcome != "skipped" for card in self.cards)
        return ran * 3600 / self.duration_s if self.duration_s > 0 else 0.0

    def by_outcome(self, *outcomes: str) -> list[TaskCard]:
        return [card for card in self.cards if card.result.outcome in outcomes]

    @property
    def needs_you(self) -> list[TaskCard]:
        return self.by_outcome(*NEEDS_YOU)


def build_report(
    runs_dir: Path, run_id: str, store: Store | None, previous: str | None = None
) -> Report:
    """The report of run `run_id`; InputError when there is no such run (or previous)."""
    view = load_run(runs_dir, run_id, store)
    if view is None or (not view.results and not view.unended):
        raise InputError(
            f"report: no records of run {run_id!r} under {runs_dir}; `harness runs` lists the "
            "runs (pass --runs-dir when they are elsewhere)"
        )
    summary = _summary(view.run_dir)
    specs = _specs(store, run_id)
    branches = _Branches(_branch_prefix(view.results))
    # Git reads are subprocesses: a few at once (about twice as fast on two cores).
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        cards = list(
            pool.map(
                lambda r: _card(view.run_dir, r, branches.change(specs.get(r.spec_id), r.branch)),
                view.results,
            )
        )
    report = Report(
        run_id=run_id,
        run_dir=view.run_dir,
        started_at=view.started_at,
        finished_at=summary.finished_at if summary else None,
        duration_s=_seconds(view.started_at, summary.finished_at if summary else None),
        cards=cards,
        night=summary.night if summary else None,
        previous=previous if previous is not None else _previous_night(runs_dir, run_id),
        status=view.status,
    )
    if report.previous is not None:
        before = load_run(runs_dir, report.previous, store)
        if before is None:
            raise InputError(
                f"report: --previous {report.previous!r}: no such run under {runs_dir}; "
                "`harness runs` lists the runs"
            )
        _compare(report, before)
    if store is not None:
        report.missed = _missed(store, run_id)
    return report


def _summary(run_dir: Path) -> RunSummary | None:
    try:
        return RunSummary.model_validate_json((run_dir / "summary.json").read_text("utf-8"))
    except (OSError, ValidationError):
        return None


def _seconds(started: str | None, finished: str | None) -> float:
    if not started or not finished:
        return 0.0
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def _specs(store: Store | None, run_id: str) -> dict[str, dict[str, str]]:
    record = store.get_run(run_id) if store is not None else None
    return {str(spec["id"]): spec for spec in record.specs} if record is not None else {}


def _previous_night(runs_dir: Path, run_id: str) -> str | None:
    """The latest run before this one that was a night (its summary has `night`)."""
    earlier = run_ids(runs_dir)
    if run_id not in earlier:
        return None
    for candidate in reversed(earlier[: earlier.index(run_id)]):
        summary = _summary(runs_dir / candidate)
        if summary is not None and summary.night is not None:
            return candidate
    return None


def _compare(report: Report, before: RunView) -> None:
    then = {result.spec_id: result.outcome for result in before.results}
    for card in report.cards:
        spec_id, outcome = card.result.spec_id, card.result.outcome
        if outcome in NEEDS_YOU and then.get(spec_id) == "verified":
            report.newly_failing.append(spec_id)
        if outcome == "verified" and then.get(spec_id) != "verified":
            report.newly_verified.append(spec_id)


def _missed(store: Store, run_id: str) -> list[FireRecord]:
    """The missed fires of the schedule that started this run, since its fire before."""
    fires = store.fires()
    own = next((fire for fire in fires if fire.run_id == run_id), None)
    if own is None:
        return []
    mine = [fire for fire in fires if fire.schedule == own.schedule and fire.fire_at < own.fire_at]
    ran = [fire.fire_at for fire in mine if fire.status != "missed"]
    since = max(ran, default=0)
    return [fire for fire in mine if fire.status == "missed" and fire.fire_at > since]


def _branch_prefix(results: list[TaskResult]) -> str:
    """What the run's task branches start with: harness/<run-id> (branch minus its spec id)."""
    branch = next((r.branch for r in results if r.branch), None)
    return branch.rpartition("/")[0] if branch else "harness"


def _card(run_dir: Path, result: TaskResult, change: tuple[list[Commit], str, str]) -> TaskCard:
    task_dir = run_dir / "tasks" / result.spec_id
    commits, diffstat, diff = change
    record = result.pr if result.outcome == "verified" else result.escalation
    failing = next((gate for gate in reversed(result.gates) if not gate.passed), None)
    cut = len(diff) > MAX_DIFF_CHARS
    return TaskCard(
        result=result,
        record=_in_run(record, run_dir),
        failing_gate=_gate_name(failing) if result.outcome != "verified" else None,
        last_problems=_last_problems(run_dir, result),
        attempts=_attempts(task_dir, result.gates),
        commits=commits,
        diffstat=diffstat,
        diff=diff[:MAX_DIFF_CHARS],
        diff_cut=cut,
        agent_summary=_agent_summary(task_dir, result.attempts),
        logs=[
            (path.name, str(path.relative_to(run_dir)))
            for path in sorted((task_dir / "gates").glob("*.log"))
        ],
    )


def _gate_name(gate: GateSummary | None) -> str | None:
    if gate is None:
        return None
    ending = f"exit {gate.exit_code}" if gate.exit_code is not None else "did not finish"
    return f"{gate.name} ({gate.phase} {gate.attempt}, {ending})"


def _in_run(path: str | None, run_dir: Path) -> str | None:
    """A record path as summary.json gives it (runs/<id>/prs/x.md), relative to the run."""
    if path is None:
        return None
    marker = f"{run_dir.name}/"
    return path.split(marker, 1)[1] if marker in path else path


PROBLEM_JSON = re.compile(r"As application/problem\+json:\n\n```json\n(.*?)\n```", re.DOTALL)


def _last_problems(run_dir: Path, result: TaskResult) -> list[str]:
    """The escalation record's last problems, one line each."""
    if result.escalation is None:
        return []
    path = run_dir / (_in_run(result.escalation, run_dir) or "")
    try:
        match = PROBLEM_JSON.search(path.read_text("utf-8"))
        problems = [Problem.model_validate(p) for p in json.loads(match.group(1))] if match else []
    except (OSError, ValueError, ValidationError):
        return []
    return one_liners(problems)


def _attempts(task_dir: Path, gates: list[GateSummary]) -> list[AttemptRow]:
    rows: list[AttemptRow] = []
    for path in sorted(task_dir.glob("attempt-*.json"), key=_number):
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        number = int(record.get("number", _number(path)))
        failed = [g for g in gates if g.phase == "attempt" and g.attempt == number and not g.passed]
        rows.append(
            AttemptRow(
                number=number,
                stop_reason=str(record.get("stop_reason", "")),
                cost_usd=float((record.get("usage") or {}).get("cost_usd", 0.0)),
                duration_s=float(record.get("duration_s") or 0.0),
                failed_gate=_gate_name(failed[-1]) if failed else None,
                problems=_feedback_lines(task_dir / f"feedback-{number}.md"),
                trajectory=f"tasks/{task_dir.name}/{path.name}",
            )
        )
    return rows


def _feedback_lines(path: Path) -> list[str]:
    """The problems a feedback file lists under "What happened", one line each."""
    try:
        text = path.read_text("utf-8")
    except OSError:
        return []
    happened = text.split("## What happened", 1)[-1].split("\n## ", 1)[0]
    return [line[2:].strip() for line in happened.splitlines() if line.startswith("- ")][:20]


def _agent_summary(task_dir: Path, attempts: int) -> str | None:
    try:
        record = json.loads((task_dir / f"attempt-{attempts}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    summary = record.get("summary")
    return str(summary) if summary else None


def _number(path: Path) -> int:
    digits = path.stem.removeprefix("attempt-")
    return int(digits) if digits.isdigit() else 0


class _Branches:
    """The run's task branches, read once per repository (harness.git.BranchReader)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._readers: dict[str, tuple[BranchReader, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def change(
        self, spec: dict[str, str] | None, branch: str | None
    ) -> tuple[list[Commit], str, str]:
        """The branch's commits over the spec's base, its diffstat and its diff; empty when
        the repository or the branch is gone."""
        if spec is None or branch is None:
            return [], "", ""
        toplevel, base = spec.get("git_toplevel", ""), spec.get("base_commit", "")
        if not toplevel or not base or not Path(toplevel).is_dir():
            return [], "", ""
        try:
            reader, heads = self._reader(toplevel)
            head = heads.get(branch)
            if head is None:
                return [], "", ""
            commits = [Commit(sha, subject) for sha, subject in reader.commits(base, head)]
            stat, diff = reader.diff_with_stat(base, head)
        except InfrastructureError:
            return [], "", ""
        return commits, stat, diff

    def _reader(self, toplevel: str) -> tuple[BranchReader, dict[str, str]]:
        with self._lock:
            if toplevel not in self._readers:
                reader = BranchReader(Path(toplevel))
                self._readers[toplevel] = (reader, reader.heads(self.prefix))
            return self._readers[toplevel]
