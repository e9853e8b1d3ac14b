"""Ticket-triggered jobs: webhooks in (`harness serve`), tasks in the store out.

A source (one file each: `github.py`, `linear.py`, `generic.py`) checks a delivery's signature
over its exact bytes and turns its payload into an `Event`: a ticket and an intent, or the
reason it is ignored or refused. `intake.py` admits it (ticket → spec, readiness checks) and
writes it to the trigger ledger in the same transaction that creates the ticket's task
(harness.store.triggers); `workers.py` runs the tasks; `status.py` keeps one status comment
per ticket up to date; `app.py` is the ASGI app.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Intent = Literal["run", "retry", "cancel"]
INTENTS: tuple[Intent, ...] = ("run", "retry", "cancel")

MAX_BODY_BYTES = 25 * 1024 * 1024
"""GitHub caps payloads at 25 MB; a bigger body is refused (400) before it is read whole."""


@dataclass(frozen=True)
class Ticket:
    """A tracker's issue, as harness needs it. Title, body and labels are the ticket author's
    text: untrusted (see harness.triggers.ticket)."""

    key: str
    """Unique across sources, e.g. `github:octo-org/shop#42`, `linear:ENG-123`."""
    target: str
    """What the config maps to a repository: `owner/name`, a Linear team key, a target name."""
    title: str
    body: str
    labels: tuple[str, ...] = ()
    url: str | None = None
    address: dict[str, Any] = field(default_factory=dict)
    """Where its status comment goes: source-specific (repository and issue number)."""
    reference: str | None = None
    """How a PR names it to close it (`octo-org/shop#7`, `ENG-42`); None when it cannot."""


@dataclass(frozen=True)
class Event:
    """What a source made of a verified delivery: a ticket and what to do with it, or why
    nothing is done (`ignored`: not for harness; `refused`: for harness, but not allowed)."""

    ticket: Ticket | None = None
    intent: Intent | None = None
    ignored: str | None = None
    refused: str | None = None
    commander: str | None = None
    """Who asked, for an intent a person gave by a comment command: their access is checked
    on the forge when one is mapped (harness.triggers.forges)."""


class WebhookSource(Protocol):
    """One tracker's webhooks."""

    def verify(self, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
        """Whether the delivery's signature header matches the body, in constant time."""

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        """The delivery's id, as the sender names it (None when the sender gives none)."""

    def parse(self, headers: Mapping[str, str], payload: Any) -> Event:
        """The event a verified payload carries."""


def hmac_sha256_matches(secret: bytes, body: bytes, signature: str | None, prefix: str) -> bool:
    """`signature` is `prefix` + the hex HMAC-SHA256 of `body` under `secret`; compared in
    constant time, over the exact bytes received (never a re-serialised parse)."""
    if not signature or not signature.startswith(prefix):
        return False
    expected = prefix + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


_NOT_IN_ID = re.compile(r"[^a-z0-9._-]+")
MAX_TASK_ID = 56
"""Room for a retry's suffix in a run id (at most 64 characters)."""


def task_id(ticket_key: str) -> str:
    """The task id a ticket's key derives to, deterministically: `github:Octo/Shop#42` →
    `octo-shop-42`. Follow-up deliveries for the ticket name the same task."""
    _, _, rest = ticket_key.partition(":")
    slug = _NOT_IN_ID.sub("-", rest.lower()).strip("-._")
    slug = re.sub(r"\.{2,}", "-", slug).removesuffix(".lock") or "ticket"
    if len(slug) > MAX_TASK_ID:
        digest = hashlib.sha256(ticket_key.encode()).hexdigest()[:8]
        slug = f"{slug[: MAX_TASK_ID - 9].rstrip('-._')}-{digest}"
    return slug
