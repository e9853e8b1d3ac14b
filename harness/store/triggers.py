"""The trigger ledger (`harness serve`): every verified webhook delivery, what became of it, and
the task each ticket runs as; written in the same transaction that creates (or finds) the task.

A delivery is a duplicate when its delivery id, or its body's sha256, was seen within the
window: GitHub signs with no timestamp, so a replayed body must be a no-op, and a redelivery
(GitHub's "Redeliver" button resends the same id) too. A ticket whose task is still pending or
running gets no second one. Duplicates and no-ops are recorded as such, never dropped silently.

Mixed into `SqlStore` (harness.store.sql), so both backends share it: on PostgreSQL the ticket's
row is locked (`FOR UPDATE`) and the seen keys are primary keys, so two deliveries racing each
other serialise there; SQLite's BEGIN IMMEDIATE serialises every write anyway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from harness.store import RunRecord, dumps

if TYPE_CHECKING:
    from harness.store.sql import Dialect, Tx

TRIGGERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS harness_trigger_deliveries (
    id {serial},
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    ticket_key TEXT,
    intent TEXT,
    verdict TEXT NOT NULL,
    reason TEXT,
    run_id TEXT,
    spec_id TEXT,
    received_at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS harness_trigger_deliveries_ticket
    ON harness_trigger_deliveries (ticket_key, id);
CREATE TABLE IF NOT EXISTS harness_trigger_seen (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    at {float} NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS harness_trigger_tickets (
    ticket_key TEXT PRIMARY KEY,
    spec_id TEXT NOT NULL,
    run_id TEXT,
    runs INTEGER NOT NULL DEFAULT 0,
    address TEXT NOT NULL,
    updated_at {float} NOT NULL
);
"""

Verdict = Literal["admitted", "duplicate", "running", "done", "ignored", "refused"]
"""What became of a delivery: a task created (`admitted`); a repeat of a delivery id or body
(`duplicate`); a no-op because the ticket's task is still pending or running (`running`) or
finished and the intent does not ask to run it again (`done`); an event harness does not act
on (`ignored`); a ticket that may not run, with the reason (`refused`)."""


class Delivery(BaseModel):
    """A verified delivery, normalised."""

    source: str
    delivery_id: str
    body_sha256: str
    ticket_key: str | None = None
    """e.g. `github:octo-org/shop#42`; None for events that are not about a ticket (ping)."""
    intent: str | None = None
    """`run`, `retry` or `cancel`."""
    spec_id: str | None = None
    """The task id the ticket's key derives to."""
    address: dict[str, Any] = {}
    """Where the ticket's status comment goes (source-specific: repository and number)."""


class LedgerEntry(BaseModel):
    """One row of the ledger: a delivery and what became of it."""

    id: int | None = None
    source: str
    delivery_id: str
    body_sha256: str
    ticket_key: str | None
    intent: str | None
    verdict: Verdict
    reason: str | None = None
    run_id: str | None = None
    spec_id: str | None = None
    received_at: float


class TicketRecord(BaseModel):
    ticket_key: str
    spec_id: str
    run_id: str | None
    runs: int
    address: dict[str, Any]
    updated_at: float


RUN_JSON = ("options", "specs", "input_errors")
"""harness_runs' JSON columns."""

RunFactory = Callable[[int], RunRecord]
"""Makes the ticket's n-th run (1 for the first, 2 for the first retry, …): pure, no I/O, so it
can be called inside the ledger's transaction."""


class TriggerLedger:
    """The trigger ledger's queries; a mixin of SqlStore (see the module docstring)."""

    if TYPE_CHECKING:
        dialect: Dialect

        def _transaction(self, write: bool = True) -> AbstractContextManager[Tx]: ...

    def record_delivery(
        self,
        delivery: Delivery,
        *,
        window_s: float,
        decided: tuple[Verdict, str] | None = None,
        new_run: RunFactory | None = None,
    ) -> LedgerEntry:
        """Record `delivery` and decide, in one transaction, what it does. A repeat within
        `window_s` is `duplicate`. Else `decided` (ignored, refused) when given. Else the
        ticket's task: `running` while it is unfinished; `done` when finished and the intent
        is not `retry`; else a new run and its task (pending) from `new_run`: `admitted`."""
        from harness.store.sql import insert, row_of

        with self._transaction() as tx:
            now = time.time()
            verdict, reason = self._repeat(tx, delivery, now, window_s) or decided or (None, None)
            run_id = None
            if verdict is None:
                assert new_run is not None
                verdict, reason, run_id, run = self._ticket_decision(tx, delivery, now, new_run)
                if run is not None:
                    if not insert(tx, "harness_runs", row_of(run, *RUN_JSON), "run_id"):
                        raise RuntimeError(f"run id {run.run_id!r} is already in the store")
                    tx.run(
                        "INSERT INTO harness_tasks (run_id, spec_id, seq, status)"
                        " VALUES (?, ?, 0, 'pending')",
                        (run.run_id, delivery.spec_id),
                    )
            elif delivery.ticket_key is not None:
                run_id = self._current_run(tx, delivery.ticket_key)
            entry = LedgerEntry(
                **delivery.model_dump(exclude={"address"}),
                verdict=verdict,
                reason=reason,
                run_id=run_id,
                received_at=now,
            )
            row = entry.model_dump(exclude={"id"})
            tx.run(
                f"INSERT INTO harness_trigger_deliveries ({', '.join(row)})"
                f" VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
        return entry

    def _repeat(
        self, tx: Tx, delivery: Delivery, now: float, window_s: float
    ) -> tuple[Verdict, str] | None:
        """("duplicate", why) when the delivery id or the body was seen within the window;
        else both are marked seen now."""
        for kind, key in (("delivery", delivery.delivery_id), ("body", delivery.body_sha256)):
            row = {
                "source": delivery.source,
                "key": f"{kind}:{key}",
                "delivery_id": delivery.delivery_id,
                "at": now,
            }
            if tx.run(
                "INSERT INTO harness_trigger_seen (source, key, delivery_id, at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (source, key) DO NOTHING",
                tuple(row.values()),
            ):
                continue
            seen = tx.rows(
                "SELECT delivery_id, at FROM harness_trigger_seen WHERE source = ? AND key = ?"
                f"{self.dialect.lock_row}",
                (delivery.source, row["key"]),
            )[0]
            if seen["at"] >= now - window_s:
                what = "delivery id" if kind == "delivery" else "body (sha256)"
                return "duplicate", f"same {what} as delivery {seen['delivery_id']}"
            tx.run(
                "UPDATE harness_trigger_seen SET delivery_id = ?, at = ? WHERE source = ?"
                " AND key = ?",
                (delivery.delivery_id, now, delivery.source, row["key"]),
            )
        return None

    def _ticket(self, tx: Tx, ticket_key: str) -> TicketRecord:
        rows = tx.rows(
            f"SELECT * FROM harness_trigger_tickets WHERE ticket_key = ?{self.dialect.lock_row}",
            (ticket_key,),
        )
        return TicketRecord.model_validate(rows[0] | {"address": json.loads(rows[0]["address"])})

    def _current_run(self, tx: Tx, ticket_key: str) -> str | None:
        rows = tx.rows(
            "SELECT run_id FROM harness_trigger_tickets WHERE ticket_key = ?", (ticket_key,)
        )
        return rows[0]["run_id"] if rows else None

    def _ticket_decision(
        self, tx: Tx, delivery: Delivery, now: float, new_run: RunFactory
    ) -> tuple[Verdict, str | None, str | None, RunRecord | None]:
        """The verdict for a ticket's delivery, and the run to create when it is admitted."""
        assert delivery.ticket_key is not None and delivery.spec_id is not None
        tx.run(
            "INSERT INTO harness_trigger_tickets (ticket_key, spec_id, runs, address, updated_at)"
            " VALUES (?, ?, 0, ?, ?) ON CONFLICT (ticket_key) DO NOTHING",
            (delivery.ticket_key, delivery.spec_id, dumps(delivery.address), now),
        )
        ticket = self._ticket(tx, delivery.ticket_key)  # locked (PostgreSQL) until commit
        if ticket.run_id is not None:
            tasks = tx.rows(
                "SELECT status, result FROM harness_tasks WHERE run_id = ?", (ticket.run_id,)
            )
            unfinished = any(task["status"] != "done" for task in tasks)
            if unfinished:
                return "running", f"already running as run {ticket.run_id}", ticket.run_id, None
            if delivery.intent != "retry":
                outcome = next(
                    (json.loads(t["result"]).get("outcome") for t in tasks if t["result"]), None
                )
                return (
                    "done",
                    f"already finished ({outcome}) as run {ticket.run_id}; ask for a retry "
                    "to run it again",
                    ticket.run_id,
                    None,
                )
        runs = ticket.runs + 1
        run = new_run(runs)
        tx.run(
            "UPDATE harness_trigger_tickets SET run_id = ?, runs = ?, address = ?, updated_at = ?"
            " WHERE ticket_key = ?",
            (run.run_id, runs, dumps(delivery.address), now, delivery.ticket_key),
        )
        return "admitted", None, run.run_id, run

    # --- reads ---------------------------------------------------------------------------
    def trigger_deliveries(self, limit: int = 100) -> list[LedgerEntry]:
        """The ledger's latest rows, newest first."""
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                f"SELECT {', '.join(LedgerEntry.model_fields)} FROM harness_trigger_deliveries"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        return [LedgerEntry.model_validate(row) for row in rows]

    def trigger_ticket(self, ticket_key: str) -> TicketRecord | None:
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT * FROM harness_trigger_tickets WHERE ticket_key = ?", (ticket_key,)
            )
        return next(iter(_tickets(rows)), None)

    def trigger_ticket_of_run(self, run_id: str) -> TicketRecord | None:
        with self._transaction(write=False) as tx:
            rows = tx.rows("SELECT * FROM harness_trigger_tickets WHERE run_id = ?", (run_id,))
        return next(iter(_tickets(rows)), None)

    def unfinished_trigger_runs(self) -> list[str]:
        """Runs that tickets started whose task is not done (pending, or claimed by a worker
        that may be gone): what serve's workers take up at start."""
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT k.run_id FROM harness_trigger_tickets k JOIN harness_tasks t"
                " ON t.run_id = k.run_id WHERE t.status <> 'done' ORDER BY k.updated_at"
            )
        return [row["run_id"] for row in rows]


def _tickets(rows: Sequence[dict[str, Any]]) -> Iterator[TicketRecord]:
    for row in rows:
        yield TicketRecord.model_validate(row | {"address": json.loads(row["address"])})
