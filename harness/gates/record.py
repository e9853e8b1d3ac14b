"""What a gate run leaves: its record (how it ended, counts, an excerpt) and a phase's run
of every gate; and the problem an infrastructure failure becomes."""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from harness.config.policy import GateConfig
from harness.parsers import count_results
from harness.problems import Problem, problem_type
from harness.sandbox import Completed

Phase = Literal["attempt", "verify", "base", "check"]
EXCERPT_LINES = 80
EXCERPT_CHARS = 6_000

# dash: "sh: 1: mypyy: not found"; bash: "bash: line 1: mypyy: command not found".
_MISSING_TOOL = re.compile(r"([^\s:]+): (?:command )?not found", re.MULTILINE)
# SIGKILL that harness did not send: the sandbox's shell reports 128+9, Popen reports -9.
_KILLED_EXIT_CODES = {128 + signal.SIGKILL, -signal.SIGKILL}


Compared = Literal["tests", "files", "none"]


class BaseComparison(BaseModel):
    """A gate's run on the head against its run on the base, for records."""

    compared: Compared
    base: dict[str, int] = {}
    head: dict[str, int] = {}
    note: str | None = None
    """Why nothing was compared, or that the findings were only flagged."""
    findings: dict[str, list[str]] = {}
    """Finding kind → every test id or file behind it (the message names the first few)."""
    refused: bool = False
    """The findings failed the gate run (guard.action: block)."""


class GateRecord(BaseModel):
    """One run of one gate."""

    name: str
    kind: str
    command: str
    attempt: int
    phase: Phase
    run: int = 1
    """1, or 2 and up for a re-run (flaky check or infrastructure retry)."""
    exit_code: int | None
    duration_s: float
    passed: bool
    timed_out: bool = False
    killed: bool = False
    """Killed by a signal harness did not send (e.g. the out-of-memory killer)."""
    tool_missing: bool = False
    missing_tool: str | None = None
    """The command sh could not find, when `tool_missing`."""
    counts: dict[str, int] = {}
    log: str | None = None
    excerpt: str = ""
    """The tail of the output, for records (not the summary)."""
    not_applicable: str | None = None
    """Why the gate did not apply to this task (it passed without running), e.g. an
    integration gate for a repository without a service map."""
    setup_failure: str | None = None
    """Why what the gate runs against could not be made ready (a service exited or never
    answered its health check); the command did not run. Infrastructure."""
    setup_s: float = 0.0
    """Of `duration_s`, the time spent making the gate's environment ready (its services)."""
    egress_refused: list[str] = []
    """Connections harness refused during the run ("POST evil.example:443"): the gate
    failed for them. Only what went through the proxy variables is seen."""
    base: BaseComparison | None = None
    """This run against the gate's run on the base commit (harness.gates.base_compare)."""
    tree: str | None = None
    """The committed tree the run's phase started on (`HEAD^{tree}`, read by harness through
    the worktree's recorded git dir before any gate ran); None outside a task's gate phase."""
    clean_checkout: bool = False
    """Whether the worktree was then exactly that tree: reset to the commit, nothing changed,
    untracked or ignored. Only such a run is evidence about the commit (harness.gates.reuse)."""
    only_tests: list[str] = []
    """A flaky re-run limited to the tests that failed before: their node ids (pytest's
    --last-failed). Empty when the whole gate ran."""

    @property
    def ending(self) -> str:
        """How the run ended, for records: "exit 1", "timed out"."""
        if self.not_applicable is not None:
            return "not applicable"
        if self.setup_failure is not None:
            return "setup failed"
        if self.base is not None and self.base.refused:
            return f"exit {self.exit_code}, but checks less than the base"
        return "timed out" if self.timed_out else f"exit {self.exit_code}"

    @property
    def infrastructure_failure(self) -> bool:
        """Failures that are not the agent's doing and must not be charged to its budget."""
        return self.timed_out or self.killed or self.tool_missing or self.setup_failure is not None


@dataclass
class GateRun:
    """The gates of one phase: every run's record, and the verdict."""

    records: list[GateRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    """What blocks: the first failing gate's problems (empty when every gate passed)."""
    flaky: list[Problem] = field(default_factory=list)
    """Tests that failed and then passed on a re-run; recorded, blocking only by policy."""
    failed: GateRecord | None = None
    """The run of the first gate that failed for good."""
    flaky_blocked: bool = False
    """The first failing gate failed only on flaky tests, and policy says flaky blocks."""

    @property
    def passed(self) -> bool:
        return self.failed is None

    @property
    def infrastructure(self) -> bool:
        return self.failed is not None and self.failed.infrastructure_failure


def gate_record(
    gate: GateConfig, done: Completed, *, attempt: int, phase: Phase, run: int, setup_s: float = 0
) -> GateRecord:
    """The record of a gate run whose command ran (in the sandbox, or elsewhere)."""
    # sh reports 127 for "command not found" and 126 for "found but not executable".
    missing = _MISSING_TOOL.search(done.output[-2000:]) if done.exit_code in (126, 127) else None
    return GateRecord(
        name=gate.name,
        kind=gate.kind,
        command=gate.command,
        attempt=attempt,
        phase=phase,
        run=run,
        exit_code=None if done.timed_out else done.exit_code,
        duration_s=round(done.duration_s + setup_s, 3),
        setup_s=round(setup_s, 3),
        passed=done.exit_code == 0 and not done.timed_out,
        timed_out=done.timed_out,
        killed=not done.timed_out and done.exit_code in _KILLED_EXIT_CODES,
        tool_missing=missing is not None,
        missing_tool=missing[1] if missing else None,
        counts=count_results(done.output),
        log=str(done.log_path) if done.log_path else None,
        excerpt=excerpt(done.output),
    )


def not_run_record(
    gate: GateConfig,
    attempt: int,
    phase: Phase,
    run: int,
    started: float,
    *,
    passed: bool,
    not_applicable: str | None = None,
    setup_failure: str | None = None,
) -> GateRecord:
    """The record of a gate run whose command never ran."""
    return GateRecord(
        name=gate.name,
        kind=gate.kind,
        command=gate.command,
        attempt=attempt,
        phase=phase,
        run=run,
        exit_code=None,
        duration_s=round(time.monotonic() - started, 3),
        passed=passed,
        not_applicable=not_applicable,
        setup_failure=setup_failure,
    )


def infrastructure_problem(record: GateRecord, instance: str) -> Problem:
    if record.tool_missing:
        title = f"Gate {record.name!r} could not run: {record.missing_tool!r} was not found"
        todo = "install it where the sandbox can see it, or fix the gate's command"
    elif record.timed_out:
        title = f"Gate {record.name!r} timed out"
        todo = "raise the gate's timeout_s, or make it faster"
    else:
        title = f"Gate {record.name!r} was killed (out of memory?)"
        todo = "check the machine's memory, or what the gate runs"
    return Problem(
        type=problem_type("gate-infrastructure"),
        title=title,
        detail=f"{record.excerpt or '(no output)'}\n\nA person must act: {todo}.",
        instance=instance,
        gate=record.name,
        command=record.command,
        exit_code=record.exit_code,
        category="infrastructure",
        retryable=not record.tool_missing,
        owner_action_required=True,
        log=record.log,
    )


def excerpt(output: str) -> str:
    """The tail of the output: tools put their findings and verdict last."""
    lines = output.rstrip().splitlines()[-EXCERPT_LINES:]
    text = "\n".join(lines)
    return text[-EXCERPT_CHARS:]
