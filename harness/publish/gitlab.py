"""GitLab: the reconciler's `Forge` (harness.publish.reconcile) over python-gitlab, merge
requests for pull requests, and the branch pushed with git (harness.git.Remote, as `oauth2`
with the token, which GitLab accepts for a personal, project or group access token).

A draft MR is one whose title starts with "Draft: " (what GitLab's API reads); titles are
compared without it. The verdict is a commit status named `harness/verify` (GitLab's states:
success or failed; a stale verdict is failed, its description saying so). Rate limits (429)
are retried here with capped waits (tenacity); python-gitlab's own retry, which obeys any
Retry-After however long, is off on every call.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gitlab
from gitlab.exceptions import GitlabError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from harness.config.forge import GitLabConfig, token_from_env
from harness.git import Remote
from harness.publish import PublishRefused
from harness.publish.reconcile import (
    STATUS_CONTEXT,
    Desired,
    FoundComment,
    FoundPull,
    FoundVerdict,
    PushedWithGit,
    Verdict,
    remote_repository,
)

T = TypeVar("T")
DRAFT = "Draft: "
MAX_RETRIES = 4
MAX_WAIT_S = 60.0
# Every call: no retry inside python-gitlab (ours is capped), one page (harness reads a
# task's own MR, notes and statuses: a few items).
ONCE: dict[str, Any] = {"obey_rate_limit": False, "retry_transient_errors": False}


class GitLabForge(PushedWithGit):
    """One project on GitLab (gitlab.com, self-managed, or the tests' loopback stand-in)."""

    def __init__(
        self,
        config: GitLabConfig,
        toplevel: Path,
        remote: str,
        *,
        source: Path | str = "policy",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        repository = remote_repository(toplevel, remote)
        token = token_from_env(config.token_env, "publish.gitlab.token_env", source)
        self.remote = Remote(
            toplevel, remote, header_scope=repository.https_url, token=lambda: token, user="oauth2"
        )
        self.gitlab = gitlab.Gitlab(config.url, private_token=token)
        self.project = self.gitlab.projects.get(repository.full_name, lazy=True)
        self._sleep = sleep
        self._drafts: dict[int, bool] = {}

    def find_pull(self, branch: str) -> FoundPull | None:
        found = self._call(
            lambda: self.project.mergerequests.list(
                source_branch=branch, state="opened", get_all=False, **ONCE
            )
        )
        return self._pull(found[0]) if found else None

    def create_pull(self, desired: Desired) -> tuple[FoundPull, bool]:
        title = (DRAFT if desired.draft else "") + desired.title
        fields = {
            "source_branch": desired.branch,
            "target_branch": desired.base,
            "title": title,
            "description": desired.body,
        }
        try:
            made = self._call(lambda: self.project.mergerequests.create(fields, **ONCE))
        except GitlabError as exc:
            if exc.response_code == 409:  # "Another open merge request already exists"
                existing = self.find_pull(desired.branch)
                if existing is not None:
                    return existing, False
            raise
        return self._pull(made), True

    def update_pull(self, number: int, *, title: str | None, body: str | None) -> None:
        fields: dict[str, Any] = {}
        if title is not None:
            fields["title"] = (DRAFT if self._drafts.get(number) else "") + title
        if body is not None:
            fields["description"] = body
        self._call(lambda: self.project.mergerequests.update(number, fields, **ONCE))

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        fields = {"add_labels": ",".join(labels)}
        self._call(lambda: self.project.mergerequests.update(number, fields, **ONCE))

    def request_reviewers(self, number: int, logins: Sequence[str]) -> None:
        mr = self._call(lambda: self.project.mergerequests.get(number, **ONCE))
        ids = [reviewer["id"] for reviewer in mr.reviewers or []]
        for login in logins:
            users = self._call(functools.partial(self.gitlab.users.list, username=login, **ONCE))
            ids += [user.id for user in users if user.id not in ids]
        fields = {"reviewer_ids": ids}
        self._call(lambda: self.project.mergerequests.update(number, fields, **ONCE))

    def comments(self, number: int) -> list[FoundComment]:
        mr = self.project.mergerequests.get(number, lazy=True)
        notes = self._call(lambda: mr.notes.list(get_all=False, per_page=100, **ONCE))
        return [FoundComment(note.id, note.body or "") for note in notes]

    def create_comment(self, number: int, body: str) -> None:
        mr = self.project.mergerequests.get(number, lazy=True)
        self._call(lambda: mr.notes.create({"body": body}, **ONCE))

    def update_comment(self, number: int, comment_id: int, body: str) -> None:
        mr = self.project.mergerequests.get(number, lazy=True)
        self._call(lambda: mr.notes.update(comment_id, {"body": body}, **ONCE))

    def verdict(self, sha: str) -> FoundVerdict | None:
        commit = self.project.commits.get(sha, lazy=True)
        statuses = self._call(lambda: commit.statuses.list(get_all=False, **ONCE))
        ours = [s for s in statuses if s.name == STATUS_CONTEXT]
        if not ours:
            return None
        latest = max(ours, key=lambda s: s.id)
        state = str(latest.status)
        if state == "failed":  # GitLab has one failing state; the description tells them apart
            state = "error" if str(latest.description or "").startswith("stale") else "failure"
        return FoundVerdict(state, latest.description, latest.target_url)

    def set_verdict(
        self, sha: str, state: Verdict, description: str, target_url: str | None
    ) -> None:
        fields: dict[str, Any] = {
            "state": "success" if state == "success" else "failed",
            "name": STATUS_CONTEXT,
            "description": description,
        } | ({"target_url": target_url} if target_url else {})
        commit = self.project.commits.get(sha, lazy=True)
        self._call(lambda: commit.statuses.create(fields, **ONCE))

    # --- internals -------------------------------------------------------------------------

    def _pull(self, mr: Any) -> FoundPull:
        self._drafts[mr.iid] = bool(mr.draft)
        return FoundPull(
            number=mr.iid,
            url=mr.web_url,
            title=str(mr.title).removeprefix(DRAFT),
            body=mr.description or "",
            draft=bool(mr.draft),
            head_sha=mr.sha,
            labels=tuple(mr.labels or ()),
            reviewers=tuple(r["username"] for r in mr.reviewers or []),
        )

    def _call(self, request: Callable[[], T]) -> T:
        """`request()`, 429s retried with capped exponential waits; 401/403/404 become
        PublishRefused (owner_action_required) naming what the token needs."""
        retrying = Retrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, GitlabError) and exc.response_code == 429
            ),
            stop=stop_after_attempt(MAX_RETRIES + 1),
            wait=wait_exponential(multiplier=1, max=MAX_WAIT_S),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(request)
        except GitlabError as exc:
            if exc.response_code == 429:
                raise PublishRefused(
                    f"GitLab rate limit: still limited after {MAX_RETRIES} retries; "
                    "`harness publish` again later"
                ) from None
            if exc.response_code in (401, 403, 404):
                raise PublishRefused(
                    f"owner_action_required: GitLab answered {exc.response_code} "
                    f"({exc.error_message}); the token needs the `api` scope and at least the "
                    "Developer role on the project, then `harness publish` again"
                ) from None
            raise
