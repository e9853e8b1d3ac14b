"""Ranking a fleet's variants on evidence harness measured, deterministic criteria in order:
verified; held-out checks passed; fewer attempts; a smaller diff (lines changed, files
touched, files outside `paths:`); lower cost; less time. No judge: ties keep variant order."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from harness.run.ledger import TaskResult


@dataclass(frozen=True)
class DiffSize:
    """A variant's change against its base, as git counted it."""

    lines: int = 0
    files: int = 0
    outside_paths: int = 0
    """Files touched that match none of the spec's `paths:` (0 when it has none)."""


@dataclass(frozen=True)
class Evidence:
    """What a variant is ranked on."""

    task: TaskResult
    diff: DiffSize
    holdout_passed: int = 0
    holdout_total: int = 0


CRITERIA = (
    "verified",
    "held-out checks",
    "attempts",
    "diff lines",
    "files touched",
    "files outside paths",
    "cost",
    "time",
)


def _key(evidence: Evidence) -> tuple[float, ...]:
    task, diff = evidence.task, evidence.diff
    return (
        0 if task.outcome == "verified" else 1,
        -evidence.holdout_passed,
        task.attempts,
        diff.lines,
        diff.files,
        diff.outside_paths,
        task.usage.cost_usd,
        task.duration_s,
    )


def _describe(evidence: Evidence) -> str:
    task, diff = evidence.task, evidence.diff
    parts: list[str] = [task.outcome]
    if evidence.holdout_total:
        parts.append(f"held-out {evidence.holdout_passed}/{evidence.holdout_total}")
    parts.append(f"{task.attempts} attempt{'s' if task.attempts != 1 else ''}")
    parts.append(f"{diff.lines} lines in {diff.files} files ({diff.outside_paths} outside paths)")
    parts.append(f"${task.usage.cost_usd:.2f}, {task.duration_s:.1f} s")
    return ", ".join(parts)


def _decided_by(better: Evidence, worse: Evidence) -> str:
    for criterion, a, b in zip(CRITERIA, _key(better), _key(worse), strict=True):
        if a != b:
            return criterion
    return "a tie (variant order)"


def rank(fleet: list[Evidence]) -> list[tuple[Evidence, int, str]]:
    """Each variant with its rank (1 = best) and the reason, best first."""
    ordered = sorted(fleet, key=_key)  # stable: a full tie keeps variant order
    ranked = []
    for i, evidence in enumerate(ordered):
        if len(ordered) == 1:
            why = "the only variant"
        elif i == 0:
            why = f"ahead of {ordered[1].task.spec_id} on {_decided_by(evidence, ordered[1])}"
        else:
            above = ordered[i - 1]
            why = f"behind {above.task.spec_id} on {_decided_by(above, evidence)}"
        ranked.append((evidence, i + 1, f"{why}: {_describe(evidence)}"))
    return ranked


def outside(files: list[str], paths: list[str]) -> int:
    """How many of `files` match none of the `paths:` globs."""
    if not paths:
        return 0
    return sum(1 for name in files if not any(fnmatch.fnmatch(name, glob) for glob in paths))
