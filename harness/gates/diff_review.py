"""What the diff itself may not do, whatever the gates say: touch protected paths, add a
gitlink, nested .git or outward symlink (the tree review), or make the gates pass by deleting,
skipping or silencing what they check (the fake-green guard)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config.policy import GuardConfig, PublishConfig
from harness.config.spec import Spec
from harness.gates.fake_green import find_fake_green
from harness.gates.tree_review import review_tree
from harness.git import Worktree
from harness.problems import Problem


@dataclass(frozen=True)
class DiffReview:
    refusal: str | None = None
    """Why the change may not go on (the task escalates), or None."""
    problems: list[Problem] = field(default_factory=list)
    """The findings behind a refusal."""
    flagged: list[Problem] = field(default_factory=list)
    """Findings policy lets through (`guard.action: flag`): listed in the PR."""


def review_diff(
    worktree: Worktree, spec: Spec, guard: GuardConfig, publish: PublishConfig
) -> DiffReview:
    """The committed change since the spec's base, against the policy's rules."""
    protected_paths = publish.protected_paths
    protected = worktree.changed_files(spec.base_commit, protected_paths, from_top=True)
    if protected_paths and protected:
        return DiffReview(refusal=f"touches protected paths: {', '.join(protected)}")
    # What the tree holds is refused even when the guard only flags: a gitlink, nested .git or
    # outward symlink is a way out of the sandbox for whoever checks the branch out next.
    entries = [f for f in review_tree(worktree, spec.base_commit) if f.code not in guard.allow]
    if entries:
        kinds = sorted({f.code or "finding" for f in entries})
        return DiffReview(
            refusal=f"tree review: {len(entries)} finding(s) ({', '.join(kinds)}); the change "
            "adds what harness and the next checkout would enter or follow",
            problems=entries,
        )
    found = find_fake_green(worktree.root, spec.base_commit, git_dir=worktree.git_dir)
    findings = [finding for finding in found if finding.code not in guard.allow]
    if not findings or guard.action == "flag":
        return DiffReview(flagged=findings)
    kinds = sorted({f.code or "finding" for f in findings})
    return DiffReview(
        refusal=f"fake-green guard: {len(findings)} finding(s) ({', '.join(kinds)}); "
        "the gates passed, but the change weakened what they check",
        problems=findings,
    )
