"""The night's tables and queries (`harness night`, schedules): a mixin of SqlStore, so both
backends share them.

- `harness_fires`: one row per (schedule, fire time). Inserting it is the lease that makes one
  fire run once however many workers see it due; a fire nobody ran is recorded `missed`.
- The cost history a night's budget estimates from: done tasks' costs, by policy and repository,
  read from the run and task tables.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from harness.store.sql import Tx

FireStatus = Literal["running", "done", "failed", "missed"]

NIGHT_SCHEMA = """
CREATE TABLE IF NOT EXISTS harness_fires (
    schedule TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    owner TEXT,
    run_id TEXT,
    detail TEXT,
    created_at {float} NOT NULL,
    finished_at {float},
    PRIMARY KEY (schedule, fire_at)
);
"""


class FireRecord(BaseModel):
    schedule: str
    fire_at: int
    """The fire time the cron expression gave, epoch seconds."""
    status: FireStatus
    owner: str | None = None
    """The worker that took the fire."""
    run_id: str | None = None
    detail: str | None = None
    """Why it was missed or failed, one line."""
    created_at: float
    finished_at: float | None = None


class NightStoreMixin:
    """The night's queries; the class it is mixed into supplies `_transaction`."""

    def _transaction(self, write: bool = True) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def claim_fire(self, schedule: str, fire_at: int, owner: str, run_id: str) -> bool:
        """Take the fire (schedule, fire_at) for `owner`: True for exactly one caller, ever."""
        with self._transaction() as tx:
            taken = tx.run(
                "INSERT INTO harness_fires (schedule, fire_at, status, owner, run_id, created_at)"
                " VALUES (?, ?, 'running', ?, ?, ?) ON CONFLICT (schedule, fire_at) DO NOTHING",
                (schedule, fire_at, owner, run_id, time.time()),
            )
        return taken == 1

    def record_missed(self, schedule: str, fire_at: int, detail: str) -> bool:
        """Record a fire nobody ran; False if it is already recorded (run or missed)."""
        with self._transaction() as tx:
            now = time.time()
            recorded = tx.run(
                "INSERT INTO harness_fires (schedule, fire_at, status, detail, created_at,"
                " finished_at) VALUES (?, ?, 'missed', ?, ?, ?)"
                " ON CONFLICT (schedule, fire_at) DO NOTHING",
                (schedule, fire_at, detail, now, now),
            )
        return recorded == 1

    def finish_fire(
        self, schedule: str, fire_at: int, status: FireStatus, detail: str | None = None
    ) -> None:
        with self._transaction() as tx:
            tx.run(
                "UPDATE harness_fires SET status = ?, detail = ?, finished_at = ?"
                " WHERE schedule = ? AND fire_at = ?",
                (status, detail, time.time(), schedule, fire_at),
            )

    def fires(self, schedule: str | None = None) -> list[FireRecord]:
        """Recorded fires, oldest first; of one schedule, or all."""
        where, params = ("WHERE schedule = ?", (schedule,)) if schedule else ("", ())
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                f"SELECT {', '.join(FireRecord.model_fields)} FROM harness_fires {where}"
                " ORDER BY fire_at, schedule",
                params,
            )
        return [FireRecord.model_validate(row) for row in rows]

    def task_costs(self, policy_path: str, repository: str, limit: int = 500) -> list[float]:
        """What earlier tasks run with this policy file on this repository (its git top
        level) cost, newest runs first, at most `limit`; tasks that ran no agent (skipped,
        interrupted, escalated before any attempt) are left out."""
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT r.specs, t.spec_id, t.result FROM harness_tasks t JOIN harness_runs r"
                " ON r.run_id = t.run_id WHERE r.policy_path = ? AND t.status = 'done'"
                " ORDER BY r.created_at DESC",
                (policy_path,),
            )
        costs: list[float] = []
        repositories: dict[str, dict[str, str]] = {}
        for row in rows:
            specs = repositories.setdefault(
                row["specs"],
                {s["id"]: s.get("git_toplevel", "") for s in json.loads(row["specs"])},
            )
            result = json.loads(row["result"] or "null") or {}
            if specs.get(row["spec_id"]) != repository or not result.get("attempts"):
                continue
            costs.append(float((result.get("usage") or {}).get("cost_usd", 0.0)))
            if len(costs) >= limit:
                break
        return costs
