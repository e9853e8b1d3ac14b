"""Gates: the deterministic checks every change must pass, run in policy order in the sandbox."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from harness.policy import GateConfig
from harness.problems import Problem, problem_type
from harness.sandbox import Completed, Sandbox

Phase = Literal["attempt", "verify"]
EXCERPT_LINES = 80
EXCERPT_CHARS = 6_000

# Counts where the tool prints them in its closing line: pytest, ruff, mypy.
_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)\b")
_RUFF_FOUND = re.compile(r"^Found (\d+) errors?", re.MULTILINE)
_MYPY_FOUND = re.compile(r"^Found (\d+) errors? in (\d+) files?", re.MULTILINE)
# dash: "sh: 1: mypyy: not found"; bash: "bash: line 1: mypyy: command not found".
_MISSING_TOOL = re.compile(r"([^\s:]+): (?:command )?not found", re.MULTILINE)
_MYPY_CLEAN = re.compile(r"^Success: no issues found in (\d+) source files?", re.MULTILINE)


class GateRecord(BaseModel):
    name: str
    kind: str
    command: str
    attempt: int
    phase: Phase
    exit_code: int | None
    duration_s: float
    passed: bool
    timed_out: bool = False
    tool_missing: bool = False
    missing_tool: str | None = None
    """The command sh could not find, when `tool_missing`."""
    counts: dict[str, int] = {}
    log: str | None = None
    excerpt: str = ""
    """The relevant part of the output, for feedback and records (not the summary)."""

    @property
    def infrastructure_failure(self) -> bool:
        """Failures that are not the agent's doing and must not be charged to its budget."""
        return self.timed_out or self.tool_missing


def acceptance_gates(commands: list[str]) -> list[GateConfig]:
    """A spec's acceptance commands as gates run after the policy's own."""
    return [
        GateConfig(name=f"acceptance-{n}", kind="test", command=command)
        for n, command in enumerate(commands, start=1)
    ]


def run_gates(
    sandbox: Sandbox,
    gates: list[GateConfig],
    *,
    attempt: int,
    phase: Phase,
    log_dir: Path,
    deadline: float | None = None,
) -> list[GateRecord]:
    """Run gates in order and stop at the first that fails. `deadline` is a monotonic time."""
    records: list[GateRecord] = []
    for gate in gates:
        timeout = gate.timeout_s
        if deadline is not None:
            timeout = max(1.0, min(timeout, deadline - time.monotonic()))
        log = log_dir / f"{phase}-{attempt}-{gate.name}.log"
        done = sandbox.run(gate.command, timeout_s=timeout, log_path=log)
        record = _record(gate, done, attempt=attempt, phase=phase)
        records.append(record)
        if not record.passed:
            break
    return records


def _record(gate: GateConfig, done: Completed, *, attempt: int, phase: Phase) -> GateRecord:
    # sh reports 127 for "command not found" and 126 for "found but not executable".
    missing = _MISSING_TOOL.search(done.output[-2000:]) if done.exit_code in (126, 127) else None
    return GateRecord(
        name=gate.name,
        kind=gate.kind,
        command=gate.command,
        attempt=attempt,
        phase=phase,
        exit_code=None if done.timed_out else done.exit_code,
        duration_s=round(done.duration_s, 3),
        passed=done.exit_code == 0 and not done.timed_out,
        timed_out=done.timed_out,
        tool_missing=missing is not None,
        missing_tool=missing[1] if missing else None,
        counts=count_results(done.output),
        log=str(done.log_path) if done.log_path else None,
        excerpt=excerpt(done.output),
    )


def count_results(output: str) -> dict[str, int]:
    """Test and finding counts from the closing lines of pytest, ruff or mypy output."""
    tail = output[-4000:]
    counts: dict[str, int] = {}
    if match := _MYPY_FOUND.search(tail):
        counts |= {"errors": int(match[1]), "files": int(match[2])}
    elif match := _MYPY_CLEAN.search(tail):
        counts |= {"errors": 0, "files": int(match[1])}
    elif match := _RUFF_FOUND.search(tail):
        counts["errors"] = int(match[1])
    else:
        last_lines = tail.strip().splitlines()[-3:]
        for number, word in _PYTEST_COUNT.findall("\n".join(last_lines)):
            counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def excerpt(output: str) -> str:
    """The tail of the output: tools put their findings and verdict last."""
    lines = output.rstrip().splitlines()[-EXCERPT_LINES:]
    text = "\n".join(lines)
    return text[-EXCERPT_CHARS:]


def problem_from_gate(record: GateRecord, instance: str) -> Problem:
    if record.timed_out:
        return Problem(
            type=problem_type("gate-timeout"),
            title=f"Gate {record.name!r} timed out",
            detail=record.excerpt or "(no output before the timeout)",
            instance=instance,
            gate=record.name,
            command=record.command,
            category="infrastructure",
            retryable=True,
            owner_action_required=True,
            log=record.log,
        )
    if record.tool_missing:
        return Problem(
            type=problem_type("gate-tool-missing"),
            title=f"Gate {record.name!r} could not run: its tool is missing",
            detail=record.excerpt,
            instance=instance,
            gate=record.name,
            command=record.command,
            exit_code=record.exit_code,
            category="infrastructure",
            retryable=False,
            owner_action_required=True,
            log=record.log,
        )
    return Problem(
        type=problem_type("gate-failed"),
        title=f"Gate {record.name!r} failed",
        detail=record.excerpt or "(no output)",
        instance=instance,
        gate=record.name,
        command=record.command,
        exit_code=record.exit_code,
        log=record.log,
    )
