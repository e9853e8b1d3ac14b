"""The run ledger: events.jsonl (one line per node transition), the live status, summary.json."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from harness import redact
from harness.agents import Usage
from harness.gates.reuse import VerifyReuse

Outcome = Literal[
    "verified", "escalated", "error", "interrupted", "skipped", "deferred", "cancelled"
]
"""`interrupted`: the run was stopped (SIGINT, SIGTERM) first; `harness resume` continues it.
`skipped`: a night never ran it (budget, window, dependency); `reason` says which.
`deferred`: the model API could not take it before the run ended (rate limits, an outage);
its work is kept, and `harness resume` continues it once `retry_at` has passed.
`cancelled`: a fleet's sibling stopped once another variant was verified (`--first-verified`);
its work so far is committed on its branch."""


class GateSummary(BaseModel):
    name: str
    kind: str
    phase: str
    attempt: int
    run: int = 1
    """2 and up: a re-run of the same gate on the same tree (flaky check, infrastructure)."""
    exit_code: int | None
    duration_s: float
    passed: bool
    setup_s: float = 0.0
    """Of duration_s: the gate's environment made ready before it ran (an integration gate's
    services; the base's tool caches copied in, with waiting for the base run)."""
    counts: dict[str, int] = {}
    not_applicable: str | None = None
    """Why the gate did not run for this task (it passed without running)."""
    setup_failure: str | None = None
    """Why its environment (an integration gate's services) could not be made ready."""
    tree: str | None = None
    """The committed tree the run's phase started on; `clean_checkout`: exactly that tree."""
    clean_checkout: bool = False


class TaskResult(BaseModel):
    """One task's line in summary.json; the field names are a user contract (extend only)."""

    spec_id: str
    title: str
    tier: int
    outcome: Outcome
    reason: str | None
    attempts: int
    agent: str
    branch: str | None
    pr: str | None
    escalation: str | None
    gates: list[GateSummary]
    duration_s: float = 0.0
    agent_s: float = 0.0
    gates_s: float = 0.0
    usage: Usage = Usage()
    """Model calls, tokens (cache reads and writes apart) and cost of this task."""
    retry_at: str | None = None
    """For `deferred`: the earliest time (ISO 8601, UTC) `harness resume` takes it again."""
    variant: dict[str, Any] | None = None
    """A fleet's task: `{k, agent, model, prompt}` (harness fleet)."""
    rank: int | None = None
    """A fleet's task: 1 = the best variant of its spec (harness.fleet.ranking)."""
    rank_reason: str | None = None
    """Why it ranks there, in words."""
    judge: dict[str, str] | None = None
    """A fleet's tied variant: the tie-break judge's advisory `{model, vote, why}` (vote: the
    variant it preferred), when `fleet.judge` is set and it was consulted."""
    verify_reused: VerifyReuse | None = None
    """Verification ran no gate: it reused these runs of the last attempt (`{attempt, tree,
    gates}`), which ran on a clean checkout of the same committed tree (harness.gates.reuse)."""


class NightSummary(BaseModel):
    """A night's window and budget, as it ended (summary.json's `night`)."""

    until: str
    """The window's end, ISO 8601 with its offset."""
    budget_usd: float | None
    """The night's spending cap; None: no cap."""
    spent_usd: float = 0.0
    """What its tasks cost."""
    reserved_usd: float = 0.0
    """What was still reserved when it ended (0 once every admitted task finished)."""


class RunSummary(BaseModel):
    run_id: str
    started_at: str
    finished_at: str
    policy: str
    isolation: str
    """"bubblewrap", or "none: <why>" when commands ran unconfined."""
    hardening_gaps: list[str] = []
    """What of the sandbox's hardening this machine could not give (no seccomp, no cgroups)."""
    limits: dict[str, int] = {}
    """Each sandboxed command's limits, as policy set them (`limits:`)."""
    read_paths: list[str] = []
    """Host paths policy added to every sandbox's view (`sandbox.read_paths`)."""
    tasks: list[TaskResult]
    usage: Usage = Usage()
    """Model usage summed over the run's tasks."""
    input_errors: list[str] = []
    """Specs that could not be loaded, one line each; they did not run."""
    night: NightSummary | None = None
    """Set for a `harness night` run: its window's end and its budget."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class TaskStatus:
    spec_id: str
    attempt: int = 0
    step: str = "queued"
    started: float = field(default_factory=time.monotonic)
    outcome: str | None = None
    finished: float | None = None

    def elapsed(self, now: float) -> float:
        """Seconds since the task started, frozen once it has an outcome."""
        return (self.finished or now) - self.started


class RunLedger:
    """Thread-safe: every task of a batch reports here from its own worker thread."""

    def __init__(
        self, run_dir: Path, run_id: str, listener: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.listener = listener
        """Called with every event, under the ledger's lock (e.g. to print progress lines)."""
        self._lock = threading.Lock()
        self._events = (run_dir / "events.jsonl").open("a", encoding="utf-8")
        self.status: dict[str, TaskStatus] = {}

    def event(self, spec_id: str, node: str, kind: str, **data: Any) -> None:
        line = {"ts": utc_now(), "run_id": self.run_id, "spec_id": spec_id, "node": node}
        line |= {"event": kind, **data}
        # Reasons quote exceptions and output: redacted like every stream harness writes.
        line = redact.current().value(json.loads(json.dumps(line, default=str)))
        with self._lock:
            self._events.write(json.dumps(line) + "\n")
            self._events.flush()
            status = self.status.setdefault(spec_id, TaskStatus(spec_id))
            status.step = node if kind == "enter" else status.step
            status.attempt = int(data.get("attempt", status.attempt))
            if "outcome" in data:
                status.outcome = str(data["outcome"])
                status.finished = status.finished or time.monotonic()
            if self.listener is not None:
                self.listener(line)

    def snapshot(self) -> list[TaskStatus]:
        with self._lock:
            return [TaskStatus(**vars(s)) for s in self.status.values()]

    def write_summary(self, summary: RunSummary) -> Path:
        path = self.run_dir / "summary.json"
        write_atomic(path, summary.model_dump_json(indent=2) + "\n")
        return path

    def close(self) -> None:
        self._events.close()


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a record; secrets
    redacted, since every record harness writes (summary, PR and escalation records, attempt
    records, feedback, error.log tracebacks) goes through here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary file of its own per writing thread: two writers of one path at once
    # (deliveries of one ticket, say) would otherwise rename each other's file away.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(redact.current().text(text), encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
