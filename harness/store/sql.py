"""What the SQLite and PostgreSQL stores share: the schema and every query, written once.

The SQL is the common subset of both dialects (ON CONFLICT, `?` placeholders that the
PostgreSQL backend turns into `%s`); a `Dialect` fills in the few words that differ. Each
backend only supplies `_transaction()`: one connection, one transaction, rows as dicts.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

from harness.errors import InputError
from harness.store import (
    ENV_TRANSITIONS,
    Effect,
    EnvRecord,
    EnvStatus,
    InvalidTransition,
    RunRecord,
    TaskRecord,
    dumps,
    owner_is_gone,
)
from harness.store.limiter_state import LIMITER_SCHEMA, PARKED_CLAUSE, LimiterStoreMixin
from harness.store.night import NIGHT_SCHEMA, NightStoreMixin
from harness.store.triggers import TRIGGERS_SCHEMA, TriggerLedger


def checkpoint_serializer() -> JsonPlusSerializer:
    """Checkpoints revive only LangGraph's own safe types, none by module path: a graph lists
    the models its state holds (`checkpointer.with_allowlist`), and nothing else is imported
    from what the store holds."""
    return JsonPlusSerializer(allowed_msgpack_modules=None)


# JSON lives in TEXT columns on both backends: nothing queries inside it, and one column type
# keeps the code paths identical.
SCHEMA = """
CREATE TABLE IF NOT EXISTS harness_runs (
    run_id TEXT PRIMARY KEY,
    run_dir TEXT NOT NULL,
    policy_path TEXT NOT NULL,
    policy_text TEXT NOT NULL,
    options TEXT NOT NULL,
    specs TEXT NOT NULL,
    input_errors TEXT NOT NULL,
    created_at {float} NOT NULL
);
CREATE TABLE IF NOT EXISTS harness_tasks (
    run_id TEXT NOT NULL REFERENCES harness_runs (run_id),
    spec_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    owner TEXT,
    lease_expires_at {float},
    claims INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    PRIMARY KEY (run_id, spec_id)
);
CREATE TABLE IF NOT EXISTS harness_envs (
    env_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    spec_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    created_at {float} NOT NULL,
    expires_at {float} NOT NULL,
    owner TEXT,
    lease_expires_at {float},
    lock_owner TEXT,
    lock_expires_at {float}
);
CREATE INDEX IF NOT EXISTS harness_envs_task ON harness_envs (run_id, spec_id);
CREATE TABLE IF NOT EXISTS harness_env_events (
    id {serial},
    env_id TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX IF NOT EXISTS harness_env_events_env ON harness_env_events (env_id, id);
CREATE TABLE IF NOT EXISTS harness_effects (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at {float} NOT NULL,
    finished_at {float}
);
"""


@dataclass(frozen=True)
class Dialect:
    float: str
    """A float column: REAL is 8 bytes in SQLite but 4 in PostgreSQL."""
    serial: str
    """An auto-increment primary key, which gives env events their order."""
    lock_row: str
    """Appended to a SELECT that is followed by an UPDATE of the same row; SQLite needs
    nothing (BEGIN IMMEDIATE already holds the database's write lock)."""
    skip_locked: str
    """Appended to claim_task's SELECT: rows another transaction is claiming are passed over."""

    def schema(self) -> list[str]:
        text = SCHEMA + NIGHT_SCHEMA + TRIGGERS_SCHEMA + LIMITER_SCHEMA
        text = text.format(float=self.float, serial=self.serial)
        return [statement.strip() for statement in text.split(";") if statement.strip()]


class Tx(Protocol):
    """One open transaction of a backend."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""
        ...


M = TypeVar("M", bound=BaseModel)


def load(model: type[M], row: dict[str, Any], *json_columns: str) -> M:
    values = dict(row)
    for column in json_columns:
        if values[column] is not None:
            values[column] = json.loads(values[column])
    return model.model_validate(values)


def row_of(record: BaseModel, *json_columns: str) -> dict[str, Any]:
    """A record as its table's row: one column per field (the schema keeps them in step)."""
    values = record.model_dump()
    return values | {column: dumps(values[column]) for column in json_columns}


def insert(tx: Tx, table: str, row: dict[str, Any], key: str) -> int:
    """INSERT unless the key exists; 1 if inserted."""
    return tx.run(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
        f" ON CONFLICT ({key}) DO NOTHING",
        tuple(row.values()),
    )


def select_envs(tx: Tx, where: str, params: Sequence[Any], suffix: str = "") -> list[EnvRecord]:
    rows = tx.rows(
        f"SELECT {', '.join(EnvRecord.model_fields)} FROM harness_envs WHERE {where}{suffix}",
        params,
    )
    return [load(EnvRecord, row, "config", "artifacts") for row in rows]


_TASK_COLUMNS = ", ".join(TaskRecord.model_fields)


class SqlStore(NightStoreMixin, TriggerLedger, LimiterStoreMixin, ABC):
    """The Store protocol on any DB-API-like backend; see harness.store.Store for semantics."""

    url: str
    dialect: Dialect

    @abstractmethod
    def _transaction(self, write: bool = True) -> AbstractContextManager[Tx]:
        """A transaction that commits on exit and rolls back on an exception; `write` ones
        take the write lock up front (SQLite: BEGIN IMMEDIATE) so they never deadlock."""

    def _create_schema(self, tx: Tx) -> None:
        for statement in self.dialect.schema():
            tx.run(statement)

    # --- runs and tasks -------------------------------------------------------------------
    def create_run(self, run: RunRecord, spec_ids: list[str]) -> None:
        duplicates = sorted({s for s in spec_ids if spec_ids.count(s) > 1})
        if duplicates:
            raise InputError(f"run {run.run_id!r}: spec ids repeated: {', '.join(duplicates)}")
        with self._transaction() as tx:
            row = row_of(run, "options", "specs", "input_errors")
            if not insert(tx, "harness_runs", row, "run_id"):
                raise InputError(
                    f"run id {run.run_id!r} is already recorded in store {self.url}; "
                    "choose another run id, or resume that run"
                )
            for seq, spec_id in enumerate(spec_ids):
                tx.run(
                    "INSERT INTO harness_tasks (run_id, spec_id, seq, status)"
                    " VALUES (?, ?, ?, 'pending')",
                    (run.run_id, spec_id, seq),
                )

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._transaction(write=False) as tx:
            rows = tx.rows("SELECT * FROM harness_runs WHERE run_id = ?", (run_id,))
        return load(RunRecord, rows[0], "options", "specs", "input_errors") if rows else None

    def tasks(self, run_id: str) -> list[TaskRecord]:
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                f"SELECT {_TASK_COLUMNS} FROM harness_tasks WHERE run_id = ? ORDER BY seq",
                (run_id,),
            )
        return [load(TaskRecord, row, "result") for row in rows]

    def claim_task(self, run_id: str, owner: str, lease_s: float) -> TaskRecord | None:
        with self._transaction() as tx:
            now = time.time()
            # Owners whose process is gone: judged here, in Python, because only this host can
            # tell; the claim below still re-checks the row under its lock.
            holders = tx.rows(
                "SELECT DISTINCT owner FROM harness_tasks WHERE run_id = ? AND status = 'claimed'"
                " AND lease_expires_at >= ?",
                (run_id, now),
            )
            gone = [row["owner"] for row in holders if owner_is_gone(row["owner"])]
            gone_clause = f" OR owner IN ({', '.join('?' * len(gone))})" if gone else ""
            # Never a task the caller holds itself: a late heartbeat must not let another of
            # its own lanes start the task a second time beside the first.
            rows = tx.rows(
                f"SELECT spec_id FROM harness_tasks WHERE run_id = ? AND (status = 'pending'"
                f" OR (status = 'claimed' AND owner <> ? AND (lease_expires_at IS NULL"
                f" OR lease_expires_at < ?{gone_clause}))){PARKED_CLAUSE} ORDER BY seq LIMIT 1"
                f"{self.dialect.skip_locked}",
                (run_id, owner, now, *gone, now),
            )
            if not rows:
                return None
            claimed = tx.rows(
                "UPDATE harness_tasks SET status = 'claimed', owner = ?, lease_expires_at = ?,"
                f" claims = claims + 1 WHERE run_id = ? AND spec_id = ? RETURNING {_TASK_COLUMNS}",
                (owner, now + lease_s, run_id, rows[0]["spec_id"]),
            )
        return load(TaskRecord, claimed[0], "result")

    def heartbeat(self, run_id: str, spec_id: str, owner: str, lease_s: float) -> bool:
        with self._transaction() as tx:
            until = time.time() + lease_s
            held = tx.run(
                "UPDATE harness_tasks SET lease_expires_at = ? WHERE run_id = ? AND spec_id = ?"
                " AND owner = ? AND status = 'claimed'",
                (until, run_id, spec_id, owner),
            )
            if held:
                tx.run(
                    "UPDATE harness_envs SET owner = ?, lease_expires_at = ? WHERE run_id = ?"
                    " AND spec_id = ? AND status <> 'deleted'",
                    (owner, until, run_id, spec_id),
                )
        return held == 1

    def complete_task(self, run_id: str, spec_id: str, owner: str, result: dict[str, Any]) -> bool:
        with self._transaction() as tx:
            done = tx.run(
                "UPDATE harness_tasks SET status = 'done', result = ? WHERE run_id = ?"
                " AND spec_id = ? AND owner = ? AND status = 'claimed'",
                (dumps(result), run_id, spec_id, owner),
            )
        return done == 1

    def release_task(self, run_id: str, spec_id: str, owner: str, result: dict[str, Any]) -> bool:
        with self._transaction() as tx:
            released = tx.run(
                "UPDATE harness_tasks SET status = 'pending', owner = NULL,"
                " lease_expires_at = NULL, result = ? WHERE run_id = ? AND spec_id = ?"
                " AND owner = ? AND status = 'claimed'",
                (dumps(result), run_id, spec_id, owner),
            )
        return released == 1

    # --- environments ---------------------------------------------------------------------
    def allocate_env(self, env: EnvRecord) -> EnvRecord:
        """Also records the allocation as an env event from None to allocating."""
        fresh = env.model_copy(
            update={"status": "allocating", "lock_owner": None, "lock_expires_at": None}
        )
        row = row_of(fresh, "config", "artifacts")
        with self._transaction() as tx:
            # An id whose environment was deleted is allocated afresh (e.g. a resumed task).
            inserted = insert(tx, "harness_envs", row, "env_id") or tx.run(
                f"UPDATE harness_envs SET {', '.join(f'{column} = ?' for column in row)}"
                " WHERE env_id = ? AND status = 'deleted'",
                (*row.values(), fresh.env_id),
            )
            if inserted:
                self._record_event(tx, fresh.env_id, None, "allocating")
                return fresh
            return select_envs(tx, "env_id = ?", (env.env_id,))[0]

    def get_env(self, env_id: str) -> EnvRecord | None:
        with self._transaction(write=False) as tx:
            found = select_envs(tx, "env_id = ?", (env_id,))
        return found[0] if found else None

    def envs(self, *, run_id: str | None = None, live: bool | None = None) -> list[EnvRecord]:
        where, params = ["1 = 1"], []
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if live is not None:
            where.append("status <> 'deleted'" if live else "status = 'deleted'")
        with self._transaction(write=False) as tx:
            return select_envs(tx, " AND ".join(where), params, " ORDER BY created_at, env_id")

    def transition(
        self,
        env_id: str,
        to: EnvStatus,
        *,
        artifacts: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> EnvRecord:
        """An env id not in the store raises InvalidTransition too."""
        with self._transaction() as tx:
            found = select_envs(tx, "env_id = ?", (env_id,), self.dialect.lock_row)
            if not found:
                raise InvalidTransition(f"environment {env_id!r}: not in store {self.url}")
            env = found[0]
            before = env.status
            if to not in ENV_TRANSITIONS[env.status]:
                allowed = ", ".join(sorted(ENV_TRANSITIONS[env.status])) or "nothing"
                raise InvalidTransition(
                    f"environment {env_id!r}: {env.status} → {to} is not allowed "
                    f"(from {env.status}: {allowed})"
                )
            env.status = to
            env.artifacts.update(artifacts or {})
            if expires_at is not None:
                env.expires_at = expires_at
            tx.run(
                "UPDATE harness_envs SET status = ?, artifacts = ?, expires_at = ?"
                " WHERE env_id = ?",
                (to, dumps(env.artifacts), env.expires_at, env_id),
            )
            self._record_event(tx, env_id, before, to)
        return env

    def _record_event(self, tx: Tx, env_id: str, from_: str | None, to: str) -> None:
        tx.run(
            "INSERT INTO harness_env_events (env_id, from_status, to_status, at)"
            " VALUES (?, ?, ?, ?)",
            (env_id, from_, to, time.time()),
        )

    def env_events(self, env_id: str) -> list[dict[str, Any]]:
        """Allocations are events too, from None to allocating."""
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT env_id, from_status, to_status, at FROM harness_env_events"
                " WHERE env_id = ? ORDER BY id",
                (env_id,),
            )
        return [
            {"env_id": r["env_id"], "from": r["from_status"], "to": r["to_status"], "at": r["at"]}
            for r in rows
        ]

    def renew_env_lease(self, env_id: str, owner: str, lease_s: float) -> bool:
        with self._transaction() as tx:
            renewed = tx.run(
                "UPDATE harness_envs SET lease_expires_at = ? WHERE env_id = ? AND owner = ?"
                " AND status <> 'deleted'",
                (time.time() + lease_s, env_id, owner),
            )
        return renewed == 1

    def lock_teardown(self, env_id: str, owner: str, lease_s: float) -> bool:
        with self._transaction() as tx:
            now = time.time()
            # A holder that was a process on this host and no longer exists (killed in the
            # middle of a teardown) is taken over at once, as its task leases are: waiting
            # for its lock to expire would leave the environment half torn down.
            holders = tx.rows("SELECT lock_owner FROM harness_envs WHERE env_id = ?", (env_id,))
            held_by = holders[0]["lock_owner"] if holders else None
            gone = [held_by] if held_by is not None and owner_is_gone(held_by) else []
            gone_clause = " OR lock_owner = ?" if gone else ""
            # One statement: PostgreSQL re-checks the WHERE on the row a concurrent locker
            # just wrote, SQLite runs it under the database's write lock.
            taken = tx.run(
                "UPDATE harness_envs SET lock_owner = ?, lock_expires_at = ? WHERE env_id = ?"
                " AND status <> 'deleted' AND (lock_owner IS NULL OR lock_owner = ?"
                f" OR lock_expires_at IS NULL OR lock_expires_at < ?{gone_clause})",
                (owner, now + lease_s, env_id, owner, now, *gone),
            )
        return taken == 1

    def unlock_teardown(self, env_id: str, owner: str) -> None:
        with self._transaction() as tx:
            tx.run(
                "UPDATE harness_envs SET lock_owner = NULL, lock_expires_at = NULL"
                " WHERE env_id = ? AND lock_owner = ?",
                (env_id, owner),
            )

    # --- idempotency keys -----------------------------------------------------------------
    def begin_effect(self, key: str, kind: str) -> Effect:
        with self._transaction() as tx:
            tx.run(
                "INSERT INTO harness_effects (key, kind, status, value, created_at)"
                " VALUES (?, ?, 'started', '{}', ?) ON CONFLICT (key) DO NOTHING",
                (key, kind, time.time()),
            )
            rows = tx.rows(
                "SELECT key, kind, status, value FROM harness_effects WHERE key = ?", (key,)
            )
        return load(Effect, rows[0], "value")

    def finish_effect(self, key: str, value: dict[str, Any]) -> None:
        """A key never begun is a KeyError: the effect happened without its record."""
        with self._transaction() as tx:
            finished = tx.run(
                "UPDATE harness_effects SET status = 'done', value = ?, finished_at = ?"
                " WHERE key = ?",
                (dumps(value), time.time(), key),
            )
        if not finished:
            raise KeyError(f"effect {key!r}: finish_effect without begin_effect")

    def get_effect(self, key: str) -> Effect | None:
        with self._transaction(write=False) as tx:
            rows = tx.rows(
                "SELECT key, kind, status, value FROM harness_effects WHERE key = ?", (key,)
            )
        return load(Effect, rows[0], "value") if rows else None


def first_line(error: BaseException) -> str:
    """A driver's error message on one line (libpq's run over several)."""
    return " ".join(str(error).split()) or type(error).__name__
