"""GitHub: the reconciler's `Forge` (harness.publish.reconcile) over githubkit's REST client,
and the branch pushed with git (harness.git.Remote).

Auth is a token (`publish.github.token_env`) or a GitHub App installation: githubkit's
AppInstallationAuthStrategy mints the installation token and mints a new one a minute before
the hour it lives is up (githubkit/auth/app.py caches it until `expires_at` less a minute).
With an App the verdict is a check run; with a token, a commit status.

Rate limits (403/429 with retry-after, primary or secondary) are retried here with capped
waits (tenacity), as the model path does: githubkit's own retry is off, so the wait and the
cap are ours. A 403 that is not a rate limit is a missing permission: PublishRefused naming
it, from GitHub's `X-Accepted-GitHub-Permissions` header.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.exception import RateLimitExceeded, RequestFailed
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from harness import redact
from harness.config.forge import GitHubConfig, private_key, token_from_env
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
MAX_RETRIES = 4
MAX_WAIT_S = 60.0
"""A retry-after above this is not waited for: the publish fails now, to be run again later
(`harness publish`), rather than stall a run."""


class GitHubForge(PushedWithGit):
    """One repository on GitHub (or GitHub Enterprise, or the tests' loopback stand-in)."""

    def __init__(
        self,
        config: GitHubConfig,
        toplevel: Path,
        remote: str,
        *,
        source: Path | str = "policy",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """The repository `remote`'s URL names (in the repository at `toplevel`)."""
        repository = remote_repository(toplevel, remote)
        self.owner, self.repo = repository.owner, repository.name
        self.remote = Remote(
            toplevel, remote, header_scope=repository.https_url, token=self.push_token
        )
        self._sleep = sleep
        self.app = config.app is not None
        if config.app is not None:
            key = private_key(config.app, source)
            strategy: Any = AppInstallationAuthStrategy(
                config.app.app_id, key, config.app.installation_id
            )
            self._app_token = AppAuthStrategy(config.app.app_id, key)
            self._installation = config.app.installation_id
        else:
            assert config.token_env is not None  # GitHubConfig: exactly one credential
            token = token_from_env(config.token_env, "publish.github.token_env", source)
            strategy = TokenAuthStrategy(token)
            self._token = token
        # No HTTP cache (every read must see the forge as it is now), no githubkit retry
        # (ours below is capped and counted).
        self.github = GitHub(strategy, base_url=config.api_url, http_cache=False, auto_retry=False)
        self._git_token: str | None = None

    # --- git ------------------------------------------------------------------------------

    def push_token(self) -> str:
        """The token git pushes with: the configured one, or a fresh installation token."""
        if not self.app:
            return self._token
        if self._git_token is None:
            github = GitHub(self._app_token, base_url=self.github.config.base_url, http_cache=False)
            made = self._call(
                lambda: github.rest.apps.create_installation_access_token(self._installation)
            )
            self._git_token = made.parsed_data.token
            redact.remember({"GITHUB_INSTALLATION_TOKEN": self._git_token})
        return self._git_token

    # --- pull requests --------------------------------------------------------------------

    def find_pull(self, branch: str) -> FoundPull | None:
        found = self._call(
            lambda: self.github.rest.pulls.list(
                self.owner, self.repo, state="open", head=f"{self.owner}:{branch}"
            )
        )
        pulls = found.parsed_data
        return _pull(pulls[0]) if pulls else None

    def create_pull(self, desired: Desired) -> tuple[FoundPull, bool]:
        try:
            made = self._call(
                lambda: self.github.rest.pulls.create(
                    self.owner,
                    self.repo,
                    title=desired.title,
                    head=desired.branch,
                    base=desired.base or "",
                    body=desired.body,
                    draft=desired.draft,
                )
            )
        except RequestFailed as exc:
            if exc.response.status_code == 422 and "already exists" in exc.response.text:
                existing = self.find_pull(desired.branch)
                if existing is not None:
                    return existing, False
            if exc.response.status_code == 422 and '"base"' in exc.response.text:
                raise PublishRefused(
                    f"GitHub refused the PR: base branch {desired.base!r} is not valid there"
                ) from None
            raise
        return _pull(made.parsed_data), True

    def update_pull(self, number: int, *, title: str | None, body: str | None) -> None:
        fields: Any = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        self._call(
            lambda: self.github.rest.pulls.update(self.owner, self.repo, number, data=fields)
        )

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        self._call(
            lambda: self.github.rest.issues.add_labels(
                self.owner, self.repo, number, labels=list(labels)
            )
        )

    def request_reviewers(self, number: int, logins: Sequence[str]) -> None:
        self._call(
            lambda: self.github.rest.pulls.request_reviewers(
                self.owner, self.repo, number, reviewers=list(logins)
            )
        )

    # --- the sticky comment and the verdict ------------------------------------------------

    def comments(self, number: int) -> list[FoundComment]:
        found = self._call(
            lambda: self.github.rest.issues.list_comments(
                self.owner, self.repo, number, per_page=100
            )
        )
        comments: list[Any] = list(found.parsed_data)
        return [FoundComment(c.id, c.body or "") for c in comments]

    def create_comment(self, number: int, body: str) -> None:
        self._call(
            lambda: self.github.rest.issues.create_comment(self.owner, self.repo, number, body=body)
        )

    def update_comment(self, number: int, comment_id: int, body: str) -> None:
        self._call(
            lambda: self.github.rest.issues.update_comment(
                self.owner, self.repo, comment_id, body=body
            )
        )

    def verdict(self, sha: str) -> FoundVerdict | None:
        if self.app:
            runs = self._call(
                lambda: self.github.rest.checks.list_for_ref(
                    self.owner, self.repo, sha, check_name=STATUS_CONTEXT
                )
            ).parsed_data.check_runs
            if not runs:
                return None
            run = runs[0]
            state = {"action_required": "error"}.get(str(run.conclusion), str(run.conclusion))
            return FoundVerdict(state, run.output.title or None, run.details_url or None)
        statuses = self._call(
            lambda: self.github.rest.repos.list_commit_statuses_for_ref(
                self.owner, self.repo, sha, per_page=100
            )
        ).parsed_data
        # Newest first: the latest status of our context is the one GitHub shows.
        latest = next((s for s in statuses if s.context == STATUS_CONTEXT), None)
        if latest is None:
            return None
        return FoundVerdict(latest.state, latest.description, latest.target_url)

    def set_verdict(
        self, sha: str, state: Verdict, description: str, target_url: str | None
    ) -> None:
        if self.app:
            conclusion = {"success": "success", "failure": "failure", "error": "action_required"}
            run: Any = {
                "name": STATUS_CONTEXT,
                "head_sha": sha,
                "status": "completed",
                "conclusion": conclusion[state],
                "output": {"title": description, "summary": description},
            } | ({"details_url": target_url} if target_url else {})
            self._call(lambda: self.github.rest.checks.create(self.owner, self.repo, data=run))
            return
        self._call(
            lambda: self.github.rest.repos.create_commit_status(
                self.owner,
                self.repo,
                sha,
                state=state,
                description=description,
                context=STATUS_CONTEXT,
                target_url=target_url,
            )
        )

    # --- who may command harness (harness serve) ------------------------------------------

    def permission(self, login: str) -> str:
        """`login`'s base permission on the repository: admin, write (maintain included),
        read (triage included) or none; what `harness serve` checks before it takes an issue
        comment's command."""
        found = self._call(
            lambda: self.github.rest.repos.get_collaborator_permission_level(
                self.owner, self.repo, login
            )
        )
        return str(found.parsed_data.permission)

    # --- errors -----------------------------------------------------------------------------

    def _call(self, request: Callable[[], T]) -> T:
        """`request()`, its rate limits retried with capped waits; a 403 that is no rate limit
        becomes PublishRefused naming the permission GitHub asks for."""
        retrying = Retrying(
            retry=retry_if_exception_type(RateLimitExceeded),
            stop=stop_after_attempt(MAX_RETRIES + 1),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(request)
        except RateLimitExceeded as exc:
            raise PublishRefused(
                f"GitHub rate limit: still limited after {MAX_RETRIES} retries (retry after "
                f"{exc.retry_after.total_seconds():.0f}s); `harness publish` again later"
            ) from None
        except RequestFailed as exc:
            if exc.response.status_code in (401, 403, 404):
                raise PublishRefused(_refusal(exc)) from None
            raise

    @staticmethod
    def _wait(state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        wanted = exc.retry_after.total_seconds() if isinstance(exc, RateLimitExceeded) else 1.0
        if wanted > MAX_WAIT_S and isinstance(exc, RateLimitExceeded):
            raise exc  # not worth the wait: fail now, publish again later
        return max(wanted, 0.0)


def _refusal(exc: RequestFailed) -> str:
    """owner_action_required, one line: what was refused and the permission it needs."""
    response = exc.response
    request = response.raw_request
    permission = response.headers.get("x-accepted-github-permissions")
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = response.text[:200]
    needs = f"; it needs {permission.replace('=', ': ')}" if permission else ""
    return (
        f"owner_action_required: GitHub answered {response.status_code} to "
        f"{request.method} {request.url.path} ({message}){needs}; grant it to the token or "
        "App, then `harness publish` again"
    )


def _pull(pull: Any) -> FoundPull:
    return FoundPull(
        number=pull.number,
        url=pull.html_url,
        title=pull.title,
        body=pull.body or "",
        draft=bool(pull.draft),
        head_sha=pull.head.sha,
        labels=tuple(label.name for label in pull.labels),
        reviewers=tuple(user.login for user in (pull.requested_reviewers or [])),
    )
