"""GitHub webhooks: `issues` labeled, `issue_comment` commands, and `ping`.

Signed `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`; the delivery's id is
`X-GitHub-Delivery` (a manual "Redeliver" resends the same id). A comment command counts only
from a user with write access: the payload's `author_association` must be OWNER, MEMBER or
COLLABORATOR (GitHub's own judgement of the commenter); see `WRITE_ASSOCIATIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from harness.triggers import INTENTS, Event, Ticket, hmac_sha256_matches
from harness.triggers.config import GitHubSource

WRITE_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
"""Author associations that may command harness. GitHub's COLLABORATOR also covers a
collaborator with read or triage rights only: where the repository's policy publishes on
GitHub, the commenter's permission is asked of GitHub too (harness.triggers.forges)."""


class GitHubWebhooks:
    name: Literal["github"] = "github"

    def __init__(self, config: GitHubSource) -> None:
        self.config = config

    def verify(self, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
        return hmac_sha256_matches(secret, body, headers.get("x-hub-signature-256"), "sha256=")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-github-delivery") or None

    def parse(self, headers: Mapping[str, str], payload: Any) -> Event:
        event = headers.get("x-github-event", "")
        if not isinstance(payload, dict):
            return Event(ignored="the payload is not a JSON object")
        action = payload.get("action")
        if event == "ping":
            return Event(ignored="ping: the webhook reaches harness")
        if event == "issues" and action == "labeled":
            label = (payload.get("label") or {}).get("name")
            if label != self.config.label:
                return Event(ignored=f"issues.labeled with {label!r}, not {self.config.label!r}")
            return Event(ticket=_ticket(payload), intent="run")
        if event == "issue_comment" and action == "created":
            return self._command(payload)
        what = f"{event}.{action}" if action else event or "a delivery without X-GitHub-Event"
        return Event(ignored=f"{what} is not an event harness acts on")

    def _command(self, payload: dict[str, Any]) -> Event:
        comment = payload.get("comment") or {}
        words = str(comment.get("body") or "").strip().split()
        if not words or words[0] != self.config.command:
            return Event(ignored=f"the comment is not a {self.config.command} command")
        if (payload.get("issue") or {}).get("pull_request") is not None:
            return Event(ignored="commands on pull requests are not taken (only on issues)")
        if (payload.get("sender") or {}).get("type") == "Bot":
            return Event(ignored="comments by bots are not commands")
        intent = words[1] if len(words) > 1 else "run"
        ticket = _ticket(payload)
        if intent not in INTENTS:
            return Event(
                ticket=ticket,
                refused=f"unknown command {intent!r}: use {self.config.command} run, retry "
                "or cancel",
            )
        association = str(comment.get("author_association") or "NONE")
        login = str((comment.get("user") or {}).get("login") or "?")
        if association not in WRITE_ASSOCIATIONS:
            return Event(
                ticket=ticket,
                refused=f"@{login} has no write access to the repository ({association}); "
                "commands are taken from collaborators only",
            )
        return Event(ticket=ticket, intent=intent, commander=login)


def _ticket(payload: dict[str, Any]) -> Ticket:
    issue, repository = payload.get("issue") or {}, payload.get("repository") or {}
    full_name, number = str(repository.get("full_name") or ""), issue.get("number")
    return Ticket(
        key=f"github:{full_name}#{number}",
        target=full_name,
        title=str(issue.get("title") or ""),
        body=str(issue.get("body") or ""),
        labels=tuple(str(label.get("name")) for label in issue.get("labels") or []),
        url=issue.get("html_url"),
        address={"source": "github", "repository": full_name, "number": number},
        reference=f"{full_name}#{number}",
    )
