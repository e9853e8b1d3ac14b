"""The forge reconciler: a task's desired state on a forge, compared with what the forge has,
and only the difference applied. Forge-neutral: a backend (github.py; gitlab.py to come)
implements `Forge`, the reads and writes; the plan is made here, the same for every forge.

Re-running it after any crash converges: the pushed branch is found by its sha, the PR by its
head branch (a create answered "already exists" counts as found), the verdict and the sticky
comment by a hidden marker. A re-publish with nothing to change makes no write at all.

Reads are kept to what a no-op needs: the remote's branches (git, not the API), the open PR
for the head branch, and its comments; the sticky comment's marker names the verdict it was
written after (the verdict is always written first), so the statuses are read only when the
marker does not match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from harness import failpoints
from harness.config.forge import RemoteRepository, parse_remote_url
from harness.errors import InfrastructureError
from harness.git import Remote, RemoteRejected
from harness.publish import PublishRefused

Verdict = Literal["success", "failure", "error"]
STATUS_CONTEXT = "harness/verify"


@dataclass(frozen=True)
class Desired:
    """One task as it should be on the forge."""

    spec_id: str
    branch: str
    sha: str
    """Exactly the commit harness verified (or escalated): pushed as it is."""
    base: str | None
    """The branch the PR merges into; None: the remote's default branch."""
    title: str
    body: str
    draft: bool
    labels: tuple[str, ...]
    reviewers: tuple[str, ...]
    verdict: Verdict
    summary: str
    """One line for the verdict (a commit status's description, at most 140 characters)."""
    record: str | None
    """Where the full record is (a URL, or a path under runs/), linked from the verdict."""
    open_pr: bool = True
    """False: the branch only (an escalation under `escalations: branch`)."""

    @property
    def link(self) -> str | None:
        """The record as a verdict's link: only a URL (a path under runs/ is named in the
        sticky comment instead)."""
        return (
            self.record if self.record and self.record.startswith(("https://", "http://")) else None
        )

    @property
    def marker(self) -> str:
        """The sticky comment's hidden marker: which task, and which verdict it follows."""
        digest = hashlib.sha256(f"{self.verdict}\0{self.summary}\0{self.record}".encode())
        return (
            f"<!-- harness:sticky {self.spec_id} verdict={self.sha}:{self.verdict}:"
            f"{digest.hexdigest()[:12]} -->"
        )

    def comment(self) -> str:
        word = {"success": "verified", "failure": "escalated", "error": "not verified"}
        where = f" · record: `{self.record}`" if self.record else ""
        return (
            f"{self.marker}\n**harness: {word[self.verdict]}** `{self.sha[:12]}`: "
            f"{self.summary}{where}\n\nThe verdict (`{STATUS_CONTEXT}`) is on this commit only: "
            "a later push is not covered by it."
        )


@dataclass(frozen=True)
class FoundPull:
    number: int
    url: str
    title: str
    body: str
    draft: bool
    head_sha: str
    labels: tuple[str, ...]
    reviewers: tuple[str, ...]


@dataclass(frozen=True)
class FoundComment:
    id: int
    body: str


@dataclass(frozen=True)
class FoundVerdict:
    state: str
    description: str | None
    target_url: str | None


class Forge(Protocol):
    """A forge's reads and writes for one repository; errors it cannot get past raise
    PublishRefused with a one-line reason (missing permission, rejected push)."""

    def remote_heads(self) -> tuple[dict[str, str], str | None]:
        """The remote's branches (name → commit) and its default branch."""
        ...

    def is_ancestor(self, older: str, newer: str) -> bool: ...
    def push(self, sha: str, branch: str, *, expected: str | None) -> None: ...
    def find_pull(self, branch: str) -> FoundPull | None: ...
    def create_pull(self, desired: Desired) -> tuple[FoundPull, bool]:
        """Open it, and True; when the forge says one already exists (a crash after it was
        opened, another worker), the existing one and False."""
        ...

    def update_pull(self, number: int, *, title: str | None, body: str | None) -> None: ...
    def add_labels(self, number: int, labels: Sequence[str]) -> None: ...
    def request_reviewers(self, number: int, logins: Sequence[str]) -> None: ...
    def comments(self, number: int) -> list[FoundComment]: ...
    def create_comment(self, number: int, body: str) -> None: ...
    def update_comment(self, number: int, comment_id: int, body: str) -> None: ...
    def verdict(self, sha: str) -> FoundVerdict | None:
        """The latest `harness/verify` status (or check run) on `sha`."""
        ...

    def set_verdict(
        self, sha: str, state: Verdict, description: str, target_url: str | None
    ) -> None: ...


Action = Literal["push", "create_pull", "update_pull", "labels", "reviewers", "comment", "verdict"]


def remote_repository(toplevel: Path, remote: str) -> RemoteRepository:
    """The forge repository (owner/name) that the git remote `remote` of `toplevel` points at."""
    try:
        url = Remote(toplevel, remote).url()
    except InfrastructureError:
        raise PublishRefused(
            f"{toplevel} has no git remote {remote!r} (publish.remote); add it with "
            f"`git remote add {remote} URL`"
        ) from None
    repository = parse_remote_url(url)
    if repository is None:
        raise PublishRefused(
            f"remote {remote!r} of {toplevel} ({url}) names no owner/name on a forge"
        )
    return repository


class PushedWithGit:
    """What every forge shares: the branch goes up by harness's own `git push` (the token in
    the git child's environment only), leased on the remote's previous value."""

    remote: Remote

    def remote_heads(self) -> tuple[dict[str, str], str | None]:
        return self.remote.heads()

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.remote.has_commit(older) and self.remote.is_ancestor(older, newer)

    def push(self, sha: str, branch: str, *, expected: str | None) -> None:
        try:
            self.remote.push(sha, branch, expected=expected)
        except RemoteRejected as exc:
            raise PublishRefused(
                f"the remote refused the push of {branch} ({exc}); the verified work stays on "
                "the local branch: lift the protection or fix the permission, then "
                "`harness publish` again"
            ) from None


@dataclass(frozen=True)
class Step:
    action: Action
    detail: str
    """What it changes, one line (what `--dry-run` prints)."""


@dataclass
class Outcome:
    """What converging one task did (or, dry, would do)."""

    steps: list[Step] = field(default_factory=list)
    url: str | None = None
    """The PR's address, once there is one."""
    stale: str | None = None
    """Why the forge's head is not what harness verified (a human pushed): not converged."""


def converge(forge: Forge, desired: Desired, *, dry_run: bool = False) -> Outcome:
    """Read, plan the difference, apply it (unless `dry_run`); PublishRefused when the forge
    refuses something a person must fix."""
    outcome = Outcome()
    heads, default = forge.remote_heads()
    desired = replace(desired, base=desired.base or default)
    if desired.base is None:
        raise PublishRefused("the remote names no default branch; set the spec's `base:`")
    if desired.branch == desired.base:
        raise PublishRefused(f"refusing to push to the base branch {desired.base!r}")
    if desired.open_pr and desired.base not in heads:
        raise PublishRefused(
            f"base branch {desired.base!r} does not exist on the remote; push it (or set the "
            "spec's `base:`), then `harness publish` again: the verified work stays on branch "
            f"{desired.branch}"
        )
    remote_sha = heads.get(desired.branch)
    moved = remote_sha is not None and remote_sha != desired.sha
    if moved and remote_sha is not None and not forge.is_ancestor(remote_sha, desired.sha):
        return _stale(forge, desired, remote_sha, outcome, dry_run)
    if remote_sha != desired.sha:
        outcome.steps.append(Step("push", f"push {desired.sha[:12]} to {desired.branch}"))
        if not dry_run:
            forge.push(desired.sha, desired.branch, expected=remote_sha)
            failpoints.hit("forge.pushed", desired.spec_id)
    if not desired.open_pr:
        return outcome
    pull = forge.find_pull(desired.branch)
    fresh = pull is None
    if pull is None:
        kind = "draft PR" if desired.draft else "PR"
        outcome.steps.append(Step("create_pull", f"open a {kind}: {desired.title}"))
        if dry_run:  # what it would be once opened: no labels, reviewers, comments yet
            pull = FoundPull(0, "", desired.title, desired.body, desired.draft, desired.sha, (), ())
        else:
            pull, fresh = forge.create_pull(desired)
            failpoints.hit("forge.opened", desired.spec_id)
    outcome.url = pull.url or None
    _converge_pull(forge, desired, pull, outcome, dry_run=dry_run, fresh=fresh)
    return outcome


def _converge_pull(
    forge: Forge, desired: Desired, pull: FoundPull, outcome: Outcome, *, dry_run: bool, fresh: bool
) -> None:
    """`fresh`: the PR was opened just now, so it has no comments or verdict to read."""
    title = desired.title if pull.title != desired.title else None
    body = desired.body if pull.body != desired.body else None
    if title is not None or body is not None:
        changed = " and ".join(n for n, v in (("title", title), ("body", body)) if v is not None)
        outcome.steps.append(Step("update_pull", f"update the PR's {changed}"))
        if not dry_run:
            forge.update_pull(pull.number, title=title, body=body)
    labels = [label for label in desired.labels if label not in pull.labels]
    reviewers = [login for login in desired.reviewers if login not in pull.reviewers]
    if labels:
        outcome.steps.append(Step("labels", f"add labels {', '.join(labels)}"))
        if not dry_run:
            forge.add_labels(pull.number, labels)
    if reviewers:
        outcome.steps.append(Step("reviewers", f"request reviews from {', '.join(reviewers)}"))
        if not dry_run:
            forge.request_reviewers(pull.number, reviewers)
    comments = [] if fresh else forge.comments(pull.number)
    sticky = next((c for c in comments if _is_sticky(c.body, desired.spec_id)), None)
    if sticky is not None and sticky.body == desired.comment():
        return  # its marker names this verdict, and it is written after it: both are there
    found = None if fresh else forge.verdict(desired.sha)
    wanted = FoundVerdict(desired.verdict, desired.summary[:140], desired.link)
    if found != wanted:
        outcome.steps.append(Step("verdict", f"set {STATUS_CONTEXT} {desired.verdict}"))
        if not dry_run:
            forge.set_verdict(desired.sha, desired.verdict, desired.summary[:140], desired.link)
    _comment(forge, pull.number, sticky, desired.comment(), outcome, dry_run)


def _stale(
    forge: Forge, desired: Desired, remote_sha: str, outcome: Outcome, dry_run: bool
) -> Outcome:
    """The remote branch holds commits harness did not verify: nothing is pushed over them,
    and the verdict on that head says so (stale, never green)."""
    outcome.stale = (
        f"the remote branch {desired.branch} moved to {remote_sha[:12]}, which harness did not "
        f"verify; the verified commit {desired.sha[:12]} stays on the local branch"
    )
    summary = f"stale: the head moved past the commit harness verified ({desired.sha[:12]})"
    stale = replace(desired, sha=remote_sha, verdict="error", summary=summary)
    pull = forge.find_pull(desired.branch) if desired.open_pr else None
    if pull is not None:
        outcome.url = pull.url
    if forge.verdict(remote_sha) != FoundVerdict("error", summary[:140], desired.link):
        step = f"set {STATUS_CONTEXT} error (stale) on {remote_sha[:12]}"
        outcome.steps.append(Step("verdict", step))
        if not dry_run:
            forge.set_verdict(remote_sha, "error", summary[:140], desired.link)
    if pull is not None:
        sticky = next(
            (c for c in forge.comments(pull.number) if _is_sticky(c.body, desired.spec_id)), None
        )
        _comment(forge, pull.number, sticky, stale.comment(), outcome, dry_run)
    return outcome


def _comment(
    forge: Forge,
    number: int,
    sticky: FoundComment | None,
    text: str,
    outcome: Outcome,
    dry_run: bool,
) -> None:
    if sticky is not None and sticky.body == text:
        return
    outcome.steps.append(Step("comment", "update the sticky comment" if sticky else "comment"))
    if dry_run:
        return
    if sticky is None:
        forge.create_comment(number, text)
    else:
        forge.update_comment(number, sticky.id, text)


def _is_sticky(body: str, spec_id: str) -> bool:
    return body.startswith(f"<!-- harness:sticky {spec_id} ")
