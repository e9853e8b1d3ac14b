"""Ranking a fleet's variants on evidence harness measured, deterministic criteria in order:
verified; held-out checks passed; fewer attempts; a smaller diff (lines changed, files
touched, files outside `paths:`); lower cost; less time (to the tenth of a second the scoreboard
shows). Verified variants that tie on all of these are ordered by the optional tie-break judge
(`fleet.judge`, harness.fleet.judge), whose vote is advisory and recorded; without one, or
when it gives no vote, a tie keeps variant order."""

from __future__ import annotations

import fnmatch
import functools
import itertools
from dataclasses import dataclass
from typing import Protocol

from harness.run.ledger import TaskResult


@dataclass(frozen=True)
class DiffSize:
    """A variant's change against its base, as git counted it."""

    lines: int = 0
    files: int = 0
    outside_paths: int = 0
    """Files touched that match none of the spec's `paths:` (0 when it has none)."""
    diffstat: str = ""
    """`+added -deleted file` per file: the judge's view of the change (never the diff)."""


@dataclass(frozen=True)
class Evidence:
    """What a variant is ranked on."""

    task: TaskResult
    diff: DiffSize
    holdout_passed: int = 0
    holdout_total: int = 0


@dataclass(frozen=True)
class Vote:
    """The tie-break judge's advisory vote between two tied variants."""

    model: str
    preferred: str
    """The spec id of the variant it preferred."""
    why: str


class TieBreaker(Protocol):
    def compare(self, a: Evidence, b: Evidence) -> Vote | None:
        """Which of two tied variants is better, or None when no vote could be had."""
        ...


@dataclass(frozen=True)
class Ranked:
    evidence: Evidence
    place: int
    """1 = best."""
    why: str
    vote: Vote | None = None
    """The judge's vote on this variant's tie, when one was asked for."""


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
        round(task.duration_s, 1),
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


def _decided_by(better: Evidence, worse: Evidence, votes: dict[frozenset[str], Vote]) -> str:
    for criterion, a, b in zip(CRITERIA, _key(better), _key(worse), strict=True):
        if a != b:
            return criterion
    vote = votes.get(frozenset((better.task.spec_id, worse.task.spec_id)))
    if vote is not None:
        return f"the judge's advisory vote ({vote.model}: {vote.why})"
    return "a tie (variant order)"


def rank(fleet: list[Evidence], judge: TieBreaker | None = None) -> list[Ranked]:
    """Each variant with its rank (1 = best) and the reason, best first. The judge is asked
    only about verified variants that tie on every deterministic criterion."""
    ordered = sorted(fleet, key=_key)  # stable: a full tie keeps variant order
    votes: dict[frozenset[str], Vote] = {}
    if judge is not None:
        ordered = [
            evidence
            for key, group in itertools.groupby(ordered, key=_key)
            for evidence in _judged(list(group), judge, votes, verified=key[0] == 0)
        ]
    ranked = []
    for i, evidence in enumerate(ordered):
        if len(ordered) == 1:
            why = "the only variant"
        elif i == 0:
            why = (
                f"ahead of {ordered[1].task.spec_id} on {_decided_by(evidence, ordered[1], votes)}"
            )
        else:
            above = ordered[i - 1]
            why = f"behind {above.task.spec_id} on {_decided_by(above, evidence, votes)}"
        mine = [vote for pair, vote in votes.items() if evidence.task.spec_id in pair]
        ranked.append(
            Ranked(evidence, i + 1, f"{why}: {_describe(evidence)}", next(iter(mine), None))
        )
    return ranked


def _judged(
    tied: list[Evidence], judge: TieBreaker, votes: dict[frozenset[str], Vote], *, verified: bool
) -> list[Evidence]:
    """A group of fully tied variants ordered by the judge's pairwise votes (verified ones
    only; no vote: variant order)."""
    if len(tied) < 2 or not verified:
        return tied

    position = {evidence.task.spec_id: i for i, evidence in enumerate(tied)}

    def compare(a: Evidence, b: Evidence) -> int:
        pair = frozenset((a.task.spec_id, b.task.spec_id))
        if pair not in votes:  # shown in variant order (A the earlier), whatever sort asks
            first, second = sorted((a, b), key=lambda e: position[e.task.spec_id])
            vote = judge.compare(first, second)
            if vote is None:
                return 0
            votes[pair] = vote
        return -1 if votes[pair].preferred == a.task.spec_id else 1

    return sorted(tied, key=functools.cmp_to_key(compare))


def outside(files: list[str], paths: list[str]) -> int:
    """How many of `files` match none of the `paths:` globs."""
    if not paths:
        return 0
    return sum(1 for name in files if not any(fnmatch.fnmatch(name, glob) for glob in paths))
