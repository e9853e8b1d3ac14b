"""The forge side of a ticket: its status comment on the issue, and who may command harness.

A mapping whose policy publishes on GitHub (`publish.forge: github`) gets the same client the
publisher uses (harness.publish.github.GitHubForge, for the repository its remote names), so
the status comment goes on the issue itself and a comment command is taken only from a user
with write access (GitHub's collaborator permission). Other mappings record the comment
locally (harness.triggers.status.LocalStatusComments) and judge commands by the payload's
author association alone.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config.policy import Policy
from harness.git import GitRepository
from harness.triggers.status import LocalStatusComments, marker

if TYPE_CHECKING:
    from harness.publish.github import GitHubForge

log = logging.getLogger("harness.serve")

WRITE_PERMISSIONS = frozenset({"admin", "write"})
"""GitHub's base permissions that may command harness (`maintain` is reported as write)."""


class IssueForges:
    """A GitHub client per mapped repository whose policy publishes on GitHub, made on first
    use; safe to use from many threads."""

    def __init__(self) -> None:
        self._targets: dict[str, tuple[Path, Path, Policy]] = {}
        self._made: dict[str, GitHubForge] = {}
        self._lock = threading.Lock()

    def add(self, repository: str, repo_dir: Path, policy_path: Path, policy: Policy) -> None:
        """`repository` (owner/name, as webhooks name it) is worked on in `repo_dir` under
        `policy`; only a policy publishing on GitHub is kept."""
        if policy.publish.forge == "github" and policy.publish.github is not None:
            policy.publish.check_forge(policy_path)  # its token is set: InputError otherwise
            self._targets[repository.lower()] = (repo_dir, policy_path, policy)

    def forge(self, repository: str) -> GitHubForge | None:
        target = self._targets.get(repository.lower())
        if target is None:
            return None
        with self._lock:
            if repository.lower() not in self._made:
                from harness.publish.github import GitHubForge

                repo_dir, policy_path, policy = target
                assert policy.publish.github is not None
                toplevel = GitRepository.containing(repo_dir, source=policy_path).toplevel
                made = GitHubForge(
                    policy.publish.github, toplevel, policy.publish.remote, source=policy_path
                )
                if f"{made.owner}/{made.repo}".lower() != repository.lower():
                    log.warning(
                        "%s: its remote %s names %s/%s; status comments stay local",
                        repository,
                        policy.publish.remote,
                        made.owner,
                        made.repo,
                    )
                    self._targets.pop(repository.lower())
                    return None
                self._made[repository.lower()] = made
            return self._made[repository.lower()]

    def may_command(self, repository: str, login: str) -> bool | None:
        """Whether `login` has write access to `repository`; None when no forge is mapped
        (then the payload's author association is all there is to go by)."""
        forge = self.forge(repository)
        if forge is None:
            return None
        return forge.permission(login) in WRITE_PERMISSIONS


class ForgeStatusComments:
    """The status comment on the issue (found again by its marker, so it is edited, never
    posted twice), and always its local record too."""

    def __init__(self, forges: IssueForges, local: LocalStatusComments) -> None:
        self.forges, self.local = forges, local

    def upsert(self, ticket_key: str, address: dict[str, Any], body: str) -> None:
        self.local.upsert(ticket_key, address, body)
        forge = self.forges.forge(str(address.get("repository") or ""))
        number = address.get("number")
        if forge is None or not isinstance(number, int):
            return
        mine = [c for c in forge.comments(number) if marker(ticket_key) in c.body]
        if not mine:
            forge.create_comment(number, body)
        elif mine[0].body != body:
            forge.update_comment(number, mine[0].id, body)
