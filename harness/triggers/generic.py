"""Any other tracker: a JSON endpoint behind a shared secret.

POST /webhooks/generic
X-Harness-Signature-256: sha256=<hex HMAC-SHA256 of the body>
X-Harness-Delivery: <an id unique per delivery>          (optional: the body's hash then)
{"key": "JIRA-7", "title": "…", "body": "…", "target": "shop", "intent": "run",
 "labels": ["tier:1"], "url": "https://…"}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from harness.triggers import INTENTS, Event, Ticket, hmac_sha256_matches
from harness.triggers.config import GenericSource


class GenericWebhooks:
    name: Literal["generic"] = "generic"

    def __init__(self, config: GenericSource) -> None:
        self.config = config

    def verify(self, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
        return hmac_sha256_matches(secret, body, headers.get("x-harness-signature-256"), "sha256=")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-harness-delivery") or None

    def parse(self, headers: Mapping[str, str], payload: Any) -> Event:
        if not isinstance(payload, dict):
            return Event(ignored="the payload is not a JSON object")
        key, target = payload.get("key"), payload.get("target")
        if not isinstance(key, str) or not key or not isinstance(target, str):
            return Event(ignored="no `key` and `target` strings: not a ticket")
        intent = payload.get("intent", "run")
        labels = payload.get("labels") or []
        ticket = Ticket(
            key=f"generic:{target}/{key}",
            target=target,
            title=str(payload.get("title") or ""),
            body=str(payload.get("body") or ""),
            labels=tuple(str(label) for label in labels if isinstance(label, str)),
            url=payload.get("url") if isinstance(payload.get("url"), str) else None,
            address={"source": "generic", "target": target, "key": key},
        )
        if intent not in INTENTS:
            return Event(ticket=ticket, refused=f"intent {intent!r}: use run, retry or cancel")
        return Event(ticket=ticket, intent=intent)
