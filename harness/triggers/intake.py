"""From a delivery's bytes to a durable ledger row (and the ticket's task), before the ack.

    verify the signature over the exact bytes ─► parse ─► the source's Event
      ─► admit (mapping, ticket → spec, tier) ─► store.record_delivery: one transaction
      ─► the status comment (queued, written by its own thread) ─► the workers told ─► ack

Nothing here runs a task: the request handler returns as soon as the transaction commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness import failpoints
from harness.config.policy import Policy, load_policy
from harness.errors import InputError
from harness.store import RunRecord, Store
from harness.store.triggers import Delivery, LedgerEntry, Verdict
from harness.triggers import MAX_BODY_BYTES, Event, Ticket, WebhookSource, task_id
from harness.triggers.config import LoadedTriggers, Source, TargetMapping
from harness.triggers.forges import IssueForges
from harness.triggers.generic import GenericWebhooks
from harness.triggers.github import GitHubWebhooks
from harness.triggers.linear import LinearWebhooks
from harness.triggers.status import Status, StatusBoard
from harness.triggers.ticket import BaseResolver, TicketRefused, write_spec

log = logging.getLogger("harness.serve")

STATUS_OF: dict[Verdict, int] = {
    "admitted": 200,
    "duplicate": 200,
    "running": 200,
    "done": 200,
    "refused": 200,
    "ignored": 202,
}
"""The HTTP status of each verdict: every verified delivery is a 2xx (it is recorded; the
sender must not retry it), an ignored one 202 with the reason."""


@dataclass(frozen=True)
class Receipt:
    """The answer to a delivery."""

    status_code: int
    message: str
    entry: LedgerEntry | None = None

    def json(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message}
        if self.entry is not None:
            body |= {"verdict": self.entry.verdict, "run_id": self.entry.run_id}
            body |= {"task": self.entry.spec_id, "ticket": self.entry.ticket_key}
        return body


@dataclass
class Mappings:
    """Each mapping of the config with its policy loaded once (at start: a bad one stops
    serve before it listens)."""

    triggers: LoadedTriggers
    policies: dict[str, tuple[Path, str, Policy]]
    forges: IssueForges

    @classmethod
    def load(cls, triggers: LoadedTriggers) -> Mappings:
        policies = {}
        forges = IssueForges()
        for source, key, mapping in iter_mappings(triggers):
            where = f"{triggers.path}: {source} {key!r}"
            if not triggers.resolve(mapping.path).is_dir():
                raise InputError(
                    f"{where}: path {mapping.path} is not a directory (relative to the config)"
                )
            path = triggers.resolve(mapping.policy)
            if mapping.policy not in policies:
                try:
                    policy = load_policy(path)
                except InputError as exc:
                    raise InputError(f"{where}: policy: {exc}") from None
                policies[mapping.policy] = (path, path.read_text(encoding="utf-8"), policy)
            if source == "github":
                policy = policies[mapping.policy][2]
                forges.add(key, triggers.resolve(mapping.path), path, policy)
        return cls(triggers, policies, forges)


def iter_mappings(triggers: LoadedTriggers) -> list[tuple[Source, str, TargetMapping]]:
    config = triggers.config
    found: list[tuple[Source, str, TargetMapping]] = []
    if config.github is not None:
        found += [("github", key, m) for key, m in config.github.repos.items()]
    if config.linear is not None:
        found += [("linear", key, m) for key, m in config.linear.teams.items()]
    if config.generic is not None:
        found += [("generic", key, m) for key, m in config.generic.targets.items()]
    return found


class Intake:
    """Receives deliveries for every configured source; safe to call from many threads."""

    def __init__(
        self,
        mappings: Mappings,
        secrets: Mapping[Source, bytes],
        store: Store,
        runs_dir: Path,
        board: StatusBoard,
        on_admitted: Callable[[str], None] = lambda run_id: None,
    ) -> None:
        self.mappings, self.secrets, self.store = mappings, secrets, store
        self.runs_dir, self.board, self.on_admitted = runs_dir.resolve(), board, on_admitted
        self.bases = BaseResolver()
        config = mappings.triggers.config
        self.sources: dict[Source, WebhookSource] = {}
        if config.github is not None:
            self.sources["github"] = GitHubWebhooks(config.github)
        if config.linear is not None:
            self.sources["linear"] = LinearWebhooks(config.linear)
        if config.generic is not None:
            self.sources["generic"] = GenericWebhooks(config.generic)

    def receive(self, source: Source, headers: Mapping[str, str], body: bytes) -> Receipt:
        """A delivery as it came over HTTP: its signature checked first."""
        if len(body) > MAX_BODY_BYTES:
            return Receipt(400, f"body over {MAX_BODY_BYTES} bytes")
        if not self.sources[source].verify(headers, body, self.secrets[source]):
            log.warning("%s delivery %s: bad signature, dropped", source, _id_hint(headers))
            return Receipt(401, "bad signature")
        return self.admit(source, headers, body)

    def admit(self, source: Source, headers: Mapping[str, str], body: bytes) -> Receipt:
        """A delivery whose origin is established (signature checked, or replayed from a
        file by the operator): recorded in the ledger, with its task if it is admitted."""
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return Receipt(400, f"malformed JSON: {exc}")
        sha = hashlib.sha256(body).hexdigest()
        event = self.sources[source].parse(headers, payload)
        delivery_id = self.sources[source].delivery_id(headers) or f"sha256:{sha}"
        ticket = event.ticket
        delivery = Delivery(
            source=source,
            delivery_id=delivery_id,
            body_sha256=sha,
            ticket_key=ticket.key if ticket else None,
            intent=event.intent,
            spec_id=task_id(ticket.key) if ticket else None,
            address=ticket.address if ticket else {},
        )
        decided, new_run = self._decide(source, event, sha)
        failpoints.hit("serve.before_commit")
        entry = self.store.record_delivery(
            delivery,
            window_s=self.mappings.triggers.config.duplicate_window_s,
            decided=decided,
            new_run=new_run,
        )
        failpoints.hit("serve.after_commit")
        log.info(
            "%s delivery %s: %s%s",
            source,
            delivery_id,
            entry.verdict,
            f" ({entry.reason})" if entry.reason else "",
        )
        self._report(entry, ticket)
        message = entry.verdict + (f": {entry.reason}" if entry.reason else "")
        return Receipt(STATUS_OF[entry.verdict], message, entry)

    def _decide(
        self, source: Source, event: Event, sha: str
    ) -> tuple[tuple[Verdict, str] | None, Callable[[int], RunRecord] | None]:
        """(ignored or refused, why), or the ticket's run factory when it may run."""
        if event.ticket is None:
            return ("ignored", event.ignored or "not about a ticket"), None
        if event.refused is not None:
            return ("refused", event.refused), None
        if event.ignored is not None:
            return ("ignored", event.ignored), None
        if event.intent == "cancel":
            return (
                "refused",
                "cancel is not supported yet: a running task finishes on its own "
                "(stop `harness serve` to interrupt it)",
            ), None
        found = self._mapping(source, event.ticket.target)
        if found is None:
            return ("ignored", f"{event.ticket.target!r} is not mapped in triggers.yaml"), None
        if event.commander is not None and source == "github":
            try:
                allowed = self.mappings.forges.may_command(event.ticket.target, event.commander)
            except Exception as exc:  # the forge down, or the token lacking a permission
                return (
                    "refused",
                    f"could not ask GitHub for @{event.commander}'s access: {exc}",
                ), None
            if allowed is False:
                return (
                    "refused",
                    f"@{event.commander} has no write access to {event.ticket.target} "
                    "(GitHub's collaborator permission); commands are taken from writers only",
                ), None
        try:
            return None, self._run_factory(event.ticket, found, sha)
        except TicketRefused as exc:
            return ("refused", str(exc)), None

    def _mapping(self, source: Source, target: str) -> TargetMapping | None:
        config = self.mappings.triggers.config
        table: dict[str, TargetMapping] = {}
        if source == "github" and config.github is not None:
            table = config.github.repos
        elif source == "linear" and config.linear is not None:
            table = config.linear.teams
        elif source == "generic" and config.generic is not None:
            table = config.generic.targets
        return table.get(target)

    def _run_factory(
        self, ticket: Ticket, mapping: TargetMapping, sha: str
    ) -> Callable[[int], RunRecord]:
        """Admission, before any token is spent: the spec made from the ticket loads (its
        fields valid, the repository mapped, the base present) and its tier may run
        automatically. The ticket's run, n-th for its n-th admission, then derives from it."""
        triggers = self.mappings.triggers
        spec = write_spec(
            ticket,
            repo=triggers.resolve(mapping.path),
            base=mapping.base,
            default_tier=mapping.tier,
            specs_dir=triggers.resolve(mapping.specs_dir),
            source_sha256=sha,
            bases=self.bases,
        )
        if spec.tier not in mapping.tiers:
            allowed = ", ".join(str(tier) for tier in mapping.tiers)
            raise TicketRefused(
                f"tier {spec.tier} is not allowed for automatic runs (tiers: {allowed}); "
                "a person takes this ticket"
            )
        policy_path, policy_text, policy = self.mappings.policies[mapping.policy]

        def new_run(n: int) -> RunRecord:
            run_id = spec.id if n == 1 else f"{spec.id}.r{n}"
            return RunRecord(
                run_id=run_id,
                run_dir=str(self.runs_dir / run_id),
                policy_path=str(policy_path),
                policy_text=policy_text,
                options={"agent": policy.agent.kind, "ticket": ticket.key},
                specs=[spec.model_dump()],
            )

        return new_run

    def _report(self, entry: LedgerEntry, ticket: Ticket | None) -> None:
        if ticket is None or entry.verdict in ("duplicate", "ignored"):
            return
        if entry.verdict == "admitted" and entry.run_id is not None:
            self.board.post(ticket.key, ticket.address, Status("admitted", run_id=entry.run_id))
            self.board.post(ticket.key, ticket.address, Status("queued", run_id=entry.run_id))
            self.on_admitted(entry.run_id)
        elif entry.verdict == "refused":
            self.board.post(ticket.key, ticket.address, Status("refused", entry.reason or ""))


def _id_hint(headers: Mapping[str, str]) -> str:
    for name in ("x-github-delivery", "linear-delivery", "x-harness-delivery"):
        if headers.get(name):
            return headers[name][:64]
    return "(no id)"
