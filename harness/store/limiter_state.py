"""The API limiter's state and the parked tasks (issue #14), in the store: a mixin of SqlStore,
so both backends share them.

- `harness_api_limits`: one row per API key (its hash, never the key) with the AIMD state
  (harness.agents.limiter): the current limit, the not-before time, since when every call has
  failed. Every worker on the database reads and changes the same row, under its row lock.
- `harness_api_slots`: the requests in flight, one row per holder with a lease: a crashed
  process's slots lapse with their lease (at once on its own host, where its pid is seen gone).
- `harness_task_parking`: tasks given back until a time (`not_before`): parked (retried later
  in the run) or deferred (past what the run can wait). claim_task passes them over until then.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from harness.agents.limiter import AimdState, ReplyVerdict, next_state

if TYPE_CHECKING:
    from harness.store.sql import Dialect, Tx

LIMITER_SCHEMA = """
CREATE TABLE IF NOT EXISTS harness_api_limits (
    key TEXT PRIMARY KEY,
    max_in_flight INTEGER NOT NULL,
    ceiling INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    decreased_at {float} NOT NULL,
    not_before {float} NOT NULL,
    failing_since {float},
    congested_limit INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS harness_api_slots (
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    lease_expires_at {float} NOT NULL,
    PRIMARY KEY (key, holder)
);
CREATE TABLE IF NOT EXISTS harness_task_parking (
    run_id TEXT NOT NULL,
    spec_id TEXT NOT NULL,
    not_before {float} NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, spec_id)
);
"""

PARKED_CLAUSE = (
    " AND NOT EXISTS (SELECT 1 FROM harness_task_parking p WHERE p.run_id = harness_tasks.run_id"
    " AND p.spec_id = harness_tasks.spec_id AND p.not_before > ?)"
)
"""claim_task's extra condition (one `?`: now): a task parked until later is not taken."""


class LimiterStoreMixin:
    """The limiter's and parking's queries; the class it is mixed into supplies
    `_transaction` and `dialect`."""

    dialect: Dialect

    def _transaction(self, write: bool = True) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    # --- the API limiter ------------------------------------------------------------------
    def _limits_row(self, tx: Tx, key: str, ceiling: int) -> AimdState:
        """The key's state, locked for this transaction (made at the ceiling if new, or reset
        when the policy's ceiling changed)."""
        tx.run(
            "INSERT INTO harness_api_limits (key, max_in_flight, ceiling, successes,"
            " decreased_at, not_before) VALUES (?, ?, ?, 0, 0, 0) ON CONFLICT (key) DO NOTHING",
            (key, ceiling, ceiling),
        )
        row = tx.rows(
            "SELECT max_in_flight, ceiling, successes, decreased_at, not_before, failing_since,"
            f" congested_limit FROM harness_api_limits WHERE key = ?{self.dialect.lock_row}",
            (key,),
        )[0]
        state = AimdState(
            limit=row["max_in_flight"],
            ceiling=row["ceiling"],
            successes=row["successes"],
            decreased_at=row["decreased_at"],
            not_before=row["not_before"],
            failing_since=row["failing_since"],
            congested_limit=row["congested_limit"],
        )
        return state if state.ceiling == ceiling else AimdState(limit=ceiling, ceiling=ceiling)

    def api_try_acquire(self, key: str, holder: str, lease_s: float, ceiling: int) -> float:
        """A slot for `holder` (0.0), or how long to wait before asking again."""
        from harness.store import owner_is_gone

        with self._transaction() as tx:
            now = time.time()
            state = self._limits_row(tx, key, ceiling)
            tx.run(
                "DELETE FROM harness_api_slots WHERE key = ? AND lease_expires_at < ?", (key, now)
            )
            holders = [
                row["holder"]
                for row in tx.rows("SELECT holder FROM harness_api_slots WHERE key = ?", (key,))
            ]
            gone = [h for h in holders if owner_is_gone(h)]
            for h in gone:
                tx.run("DELETE FROM harness_api_slots WHERE key = ? AND holder = ?", (key, h))
            if now < state.not_before:
                return state.not_before - now
            if len(holders) - len(gone) >= state.limit:
                return 0.1
            tx.run(
                "INSERT INTO harness_api_slots (key, holder, lease_expires_at) VALUES (?, ?, ?)",
                (key, holder, now + lease_s),
            )
        return 0.0

    def api_release(self, key: str, holder: str) -> None:
        with self._transaction() as tx:
            tx.run("DELETE FROM harness_api_slots WHERE key = ? AND holder = ?", (key, holder))

    def api_report(
        self,
        key: str,
        verdict: ReplyVerdict,
        sent_at: float,
        wait_until: float | None,
        ceiling: int,
    ) -> AimdState:
        with self._transaction() as tx:
            state = next_state(
                self._limits_row(tx, key, ceiling), verdict, sent_at, time.time(), wait_until
            )
            tx.run(
                "UPDATE harness_api_limits SET max_in_flight = ?, ceiling = ?, successes = ?,"
                " decreased_at = ?, not_before = ?, failing_since = ?, congested_limit = ?"
                " WHERE key = ?",
                (
                    state.limit,
                    state.ceiling,
                    state.successes,
                    state.decreased_at,
                    state.not_before,
                    state.failing_since,
                    state.congested_limit,
                    key,
                ),
            )
        return state

    def api_state(self, key: str, ceiling: int) -> AimdState:
        with self._transaction() as tx:
            state = self._limits_row(tx, key, ceiling)
            count = tx.rows(
                "SELECT COUNT(*) AS n FROM harness_api_slots WHERE key = ? AND"
                " lease_expires_at >= ?",
                (key, time.time()),
            )[0]["n"]
        return AimdState(**(asdict(state) | {"in_flight": int(count)}))

    # --- parked and deferred tasks --------------------------------------------------------
    def park_task(
        self,
        run_id: str,
        spec_id: str,
        owner: str,
        result: dict[str, Any],
        not_before: float,
        reason: str,
    ) -> bool:
        """Give the task back (pending, with `result`, outcome `deferred`) not to be claimed
        before `not_before`; False if the owner no longer holds it."""
        with self._transaction() as tx:
            released = tx.run(
                "UPDATE harness_tasks SET status = 'pending', owner = NULL,"
                " lease_expires_at = NULL, result = ? WHERE run_id = ? AND spec_id = ?"
                " AND owner = ? AND status = 'claimed'",
                (json.dumps(result, sort_keys=True), run_id, spec_id, owner),
            )
            if released:
                tx.run(
                    "INSERT INTO harness_task_parking (run_id, spec_id, not_before, reason)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (run_id, spec_id) DO UPDATE SET"
                    " not_before = excluded.not_before, reason = excluded.reason",
                    (run_id, spec_id, not_before, reason),
                )
        return released == 1

    def parked(self, run_id: str) -> dict[str, float]:
        """The run's pending tasks parked until a time still to come: spec id → not_before."""
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT p.spec_id, p.not_before FROM harness_task_parking p JOIN harness_tasks t"
                " ON t.run_id = p.run_id AND t.spec_id = p.spec_id WHERE p.run_id = ?"
                " AND t.status = 'pending' AND p.not_before > ?",
                (run_id, time.time()),
            )
        return {row["spec_id"]: row["not_before"] for row in rows}

    def unpark(self, run_id: str) -> int:
        """Every parked task of the run may be claimed at once (`harness resume --now`)."""
        with self._transaction() as tx:
            return tx.run("DELETE FROM harness_task_parking WHERE run_id = ?", (run_id,))
