"""Linear webhooks: an issue given the configured label, or moved to the configured state.

Signed `Linear-Signature: <hex HMAC-SHA256 of the body>`; the delivery's id is
`Linear-Delivery`. The ticket is keyed by the issue's identifier (ENG-123), its team key (the
identifier's prefix) chooses the mapping. Status comments for Linear are recorded locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from harness.triggers import Event, Ticket, hmac_sha256_matches
from harness.triggers.config import LinearSource


class LinearWebhooks:
    name: Literal["linear"] = "linear"

    def __init__(self, config: LinearSource) -> None:
        self.config = config

    def verify(self, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
        return hmac_sha256_matches(secret, body, headers.get("linear-signature"), "")

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("linear-delivery") or None

    def parse(self, headers: Mapping[str, str], payload: Any) -> Event:
        if not isinstance(payload, dict):
            return Event(ignored="the payload is not a JSON object")
        kind, action = payload.get("type"), payload.get("action")
        if kind != "Issue" or action not in ("create", "update"):
            return Event(ignored=f"{kind}.{action} is not an event harness acts on")
        data = payload.get("data") or {}
        labels = tuple(str(label.get("name")) for label in data.get("labels") or [])
        state = str((data.get("state") or {}).get("name") or "")
        changed = payload.get("updatedFrom") or {}
        labelled = self.config.label in labels and (action == "create" or "labelIds" in changed)
        moved = (
            self.config.state is not None
            and state == self.config.state
            and (action == "create" or "stateId" in changed)
        )
        if not (labelled or moved):
            return Event(ignored=f"no {self.config.label!r} label added or state change")
        identifier = str(data.get("identifier") or "")
        team = str((data.get("team") or {}).get("key") or identifier.partition("-")[0])
        ticket = Ticket(
            key=f"linear:{identifier}",
            target=team,
            title=str(data.get("title") or ""),
            body=str(data.get("description") or ""),
            labels=labels,
            url=data.get("url"),
            address={"source": "linear", "identifier": identifier},
            reference=identifier or None,
        )
        return Event(ticket=ticket, intent="run")
