"""The Publisher protocol: where a task ends. A verified task becomes a pull request; any other
becomes an escalation a person picks up. One file per backend (`local.py`: records under runs/).

A publisher is called through the run's exactly-once effects (harness.run.effects), and must
itself converge rather than duplicate: called again for the same task after a crash, it finds
what it made and changes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from harness.agents import Usage
from harness.config.policy import PublishConfig
from harness.config.spec import Spec
from harness.gates.record import GateRecord
from harness.gates.reuse import VerifyReuse
from harness.git import Worktree
from harness.problems import Problem


@dataclass(frozen=True)
class Evidence:
    """What harness measured of a task (never what the agent reported), for its record."""

    run_id: str
    agent: str
    branch: str | None
    """Where the work is committed; None when no agent ran."""
    gates: list[GateRecord]
    attempts: int
    fixed: dict[str, list[str]]
    """Per attempt number, the problems of the attempt before that it made go away."""
    found: dict[str, list[str]]
    """Per attempt number, its problems one line each."""
    flaky: list[Problem]
    flagged: list[Problem]
    """Fake-green findings policy lets through (`guard.action: flag`)."""
    problems: list[Problem]
    """The last problems: why the task cannot go on as it is."""
    usage: Usage | None = None
    """Model calls, tokens and cost over the task's attempts."""
    agent_s: float = 0.0
    gates_s: float = 0.0
    verify_reused: VerifyReuse | None = None
    """Verification ran no gate: it reused these runs of the last attempt, on the same tree."""

    @property
    def verified_by(self) -> list[GateRecord]:
        """The runs that verified the committed tree: the verify phase's, or the attempt's that
        verification reused."""
        if self.verify_reused is None:
            return [gate for gate in self.gates if gate.phase == "verify"]
        reused = self.verify_reused.attempt
        return [g for g in self.gates if g.phase == "attempt" and g.attempt == reused]


@dataclass(frozen=True)
class PullRequest:
    """A verified task's change, with its evidence."""

    spec: Spec
    evidence: Evidence
    diffstat: str
    files: list[str]
    unexpected_files: list[str]
    """Changed files outside the spec's expected `paths`."""
    head: str = ""
    """The verified commit: what a forge's PR must have as its head, exactly."""

    @classmethod
    def of(cls, spec: Spec, worktree: Worktree, evidence: Evidence) -> PullRequest:
        """The pull request for the committed change in `worktree` since the spec's base."""
        changed = worktree.changed_files(spec.base_commit)
        expected = set(worktree.changed_files(spec.base_commit, spec.paths)) if spec.paths else None
        return cls(
            spec=spec,
            evidence=evidence,
            diffstat=worktree.diffstat(spec.base_commit),
            files=changed,
            unexpected_files=[f for f in changed if expected is not None and f not in expected],
            head=worktree.head(),
        )


@dataclass(frozen=True)
class Escalation:
    """A task a person must pick up: why, and what harness found."""

    spec: Spec
    evidence: Evidence
    reason: str


def refusal(spec: Spec, worktree: Worktree, config: PublishConfig) -> str | None:
    """Why a verified change is not published as a PR (it escalates), or None."""
    if not worktree.changed_files(spec.base_commit):
        return "no changes: the gates pass but there is nothing to publish"
    if spec.tier not in config.auto_pr_tiers:
        return (
            f"verified, but tier {spec.tier} is not in publish.auto_pr_tiers: "
            "a human reviews the branch"
        )
    return None


class PublishRefused(Exception):
    """The forge refused the task's change for a reason a person must act on (a protected or
    base branch, a missing base branch, a missing permission): the task escalates with this
    one-line reason, and its verified work stays on the local branch, to publish again."""


class Publisher(Protocol):
    name: str
    """Shown in the run's header, e.g. "local"."""

    def open_pr(self, pr: PullRequest) -> str:
        """Open (or find, if opened before) the task's pull request; returns where it is: a
        URL, or a record's path relative to the runs/ parent."""
        ...

    def escalate(self, escalation: Escalation) -> str:
        """Record (or find) the task's escalation; returns where it is, as `open_pr` does."""
        ...
