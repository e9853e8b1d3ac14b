"""The durable control state of runs: run and task records, task leases, environment records
with TTLs and teardown locks, and idempotency keys for side effects.

Two backends with the same behaviour, chosen by URL: `sqlite:///path/to/harness.db` (the
embedded default, a file under runs/) and `postgresql://user@host/db` (a shared store for many
workers). `open_store(url)` connects and fails with an InputError before anything is created.

All times are epoch seconds (float, UTC). Every method is safe to call from many threads and,
for the same database, from many processes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, Field

from harness.errors import InputError

if TYPE_CHECKING:
    # Only a type here; each backend imports its checkpointer when it opens (LangGraph is
    # slow to import, and the PostgreSQL one is an optional extra).
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from harness.agents.limiter import AimdState, ReplyVerdict
    from harness.store.night import FireRecord, FireStatus
    from harness.store.triggers import (
        Delivery,
        LedgerEntry,
        RunFactory,
        TicketRecord,
    )
    from harness.store.triggers import Verdict as TriggerVerdict

POSTGRES_DRIVERS = ("psycopg", "psycopg_pool", "langgraph.checkpoint.postgres")
"""What the `postgres` extra installs, as import names: missing, a postgresql:// URL says so."""

EnvStatus = Literal[
    "allocating", "provisioning", "ready", "validating", "tearing_down", "deleted", "failed"
]

# Which status may follow which. `failed` and `tearing_down` are reachable from anywhere live;
# `deleted` only through tearing_down, so nothing is marked gone that was not torn down.
ENV_TRANSITIONS: dict[str, frozenset[str]] = {
    "allocating": frozenset({"provisioning", "failed", "tearing_down"}),
    "provisioning": frozenset({"ready", "failed", "tearing_down"}),
    "ready": frozenset({"validating", "failed", "tearing_down"}),
    "validating": frozenset({"ready", "failed", "tearing_down"}),
    "failed": frozenset({"tearing_down"}),
    "tearing_down": frozenset({"deleted", "failed", "tearing_down"}),
    "deleted": frozenset(),
}

TaskStatus = Literal["pending", "claimed", "done"]


class InvalidTransition(RuntimeError):
    """An environment status change the lifecycle does not allow (e.g. ready → allocating)."""


class RunRecord(BaseModel):
    run_id: str
    run_dir: str
    policy_path: str
    policy_text: str
    """The policy file's text when the run started: resume compares the file with it."""
    options: dict[str, Any] = {}
    """What `harness run` was given besides specs: agent kind, concurrency. (Runs recorded
    before the CLI imported its workflow directly also hold a `workflow`, now ignored.)"""
    specs: list[dict[str, Any]] = []
    """The specs as loaded (Spec.model_dump()), with base resolved: resume does not reload."""
    input_errors: list[str] = []
    created_at: float = Field(default_factory=time.time)


class TaskRecord(BaseModel):
    run_id: str
    spec_id: str
    status: TaskStatus = "pending"
    owner: str | None = None
    lease_expires_at: float | None = None
    claims: int = 0
    """How many times the task was claimed; above 1 it was resumed or reclaimed."""
    result: dict[str, Any] | None = None
    """The TaskResult once done."""


class EnvRecord(BaseModel):
    env_id: str
    run_id: str
    spec_id: str
    kind: str
    """What the environment is, e.g. `worktree` (a task sandbox) or `services`."""
    status: EnvStatus = "allocating"
    config: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    """What exists because of it (worktree path, branch, repo, process ids, objects): what
    teardown and gc remove."""
    created_at: float = Field(default_factory=time.time)
    expires_at: float
    """Set at allocation, always; past it gc tears the environment down (or, once deleted,
    removes what was retained, such as an escalation's WIP branch)."""
    owner: str | None = None
    lease_expires_at: float | None = None
    """The owning worker's lease; lapsed while the environment is live, it is an orphan."""
    lock_owner: str | None = None
    lock_expires_at: float | None = None
    """The teardown lock: only its holder tears the environment down."""


class Effect(BaseModel):
    key: str
    kind: str
    status: Literal["started", "done"]
    value: dict[str, Any] = {}


class Store(Protocol):
    url: str

    # --- runs and tasks -------------------------------------------------------------------
    def create_run(self, run: RunRecord, spec_ids: list[str]) -> None:
        """Record a run and its tasks (pending). A run id already recorded is an InputError."""

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def tasks(self, run_id: str) -> list[TaskRecord]: ...

    def claim_task(self, run_id: str, owner: str, lease_s: float) -> TaskRecord | None:
        """Take one task nobody holds: pending, or claimed with a lapsed lease (or an owner on
        this host whose process is gone). Never the same task to two live owners at once
        (PostgreSQL: SELECT … FOR UPDATE SKIP LOCKED)."""

    def heartbeat(self, run_id: str, spec_id: str, owner: str, lease_s: float) -> bool:
        """Extend the owner's lease on the task and on the task's live environments; False if
        the owner no longer holds the task (it was reclaimed)."""

    def complete_task(self, run_id: str, spec_id: str, owner: str, result: dict[str, Any]) -> bool:
        """Mark the task done with its result, once: False if it was already done or the
        owner no longer holds it."""

    def release_task(self, run_id: str, spec_id: str, owner: str, result: dict[str, Any]) -> bool:
        """Give the task back unfinished (an interrupted run): pending again, so a resume or
        another worker takes it, with `result` (outcome `interrupted`) kept until then. False
        if the owner no longer holds it."""

    # --- environments ---------------------------------------------------------------------
    def allocate_env(self, env: EnvRecord) -> EnvRecord:
        """Insert the record (status allocating) or, if the env id exists and is not deleted,
        return the existing one: allocation is idempotent."""

    def get_env(self, env_id: str) -> EnvRecord | None: ...

    def envs(self, *, run_id: str | None = None, live: bool | None = None) -> list[EnvRecord]:
        """live=True: not deleted; live=False: deleted only; None: all."""

    def transition(
        self,
        env_id: str,
        to: EnvStatus,
        *,
        artifacts: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> EnvRecord:
        """Move to `to` if the lifecycle allows it (else InvalidTransition), merging artifacts;
        every transition is recorded as an env event."""

    def env_events(self, env_id: str) -> list[dict[str, Any]]:
        """[{env_id, from, to, at}] in order."""

    def renew_env_lease(self, env_id: str, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s lease on a live environment no task heartbeats (a sandbox pool's
        entry); False when it is deleted or another owner holds it."""

    def lock_teardown(self, env_id: str, owner: str, lease_s: float) -> bool:
        """Take the teardown lock if free or lapsed (or already ours); False if someone else
        holds it or the environment is already deleted."""

    def unlock_teardown(self, env_id: str, owner: str) -> None: ...

    # --- idempotency keys -----------------------------------------------------------------
    def begin_effect(self, key: str, kind: str) -> Effect:
        """Record that a side effect is about to happen; returns the existing record if the
        key is known (status done: do not do it again, use its value)."""

    def finish_effect(self, key: str, value: dict[str, Any]) -> None: ...

    def get_effect(self, key: str) -> Effect | None: ...

    # --- the night (`harness night`, schedules: harness/store/night.py) --------------------
    def claim_fire(self, schedule: str, fire_at: int, owner: str, run_id: str) -> bool:
        """Take a schedule's fire: True for exactly one caller, ever (the fire's lease)."""

    def record_missed(self, schedule: str, fire_at: int, detail: str) -> bool:
        """Record a fire nobody ran; False if it is already recorded."""

    def finish_fire(
        self, schedule: str, fire_at: int, status: FireStatus, detail: str | None = None
    ) -> None: ...

    def fires(self, schedule: str | None = None) -> list[FireRecord]: ...

    def task_costs(self, policy_path: str, repository: str, limit: int = 500) -> list[float]:
        """Earlier tasks' costs with this policy file on this repository, newest first."""

    # --- the trigger ledger (`harness serve`: harness/store/triggers.py) --------------------
    def record_delivery(
        self,
        delivery: Delivery,
        *,
        window_s: float,
        decided: tuple[TriggerVerdict, str] | None = None,
        new_run: RunFactory | None = None,
    ) -> LedgerEntry:
        """Record a verified delivery and, in the same transaction, what it does: a duplicate,
        the `decided` verdict, a no-op for a ticket whose task is unfinished, or a new run and
        task for the ticket (see harness.store.triggers)."""

    def trigger_deliveries(self, limit: int = 100) -> list[LedgerEntry]: ...

    def trigger_ticket(self, ticket_key: str) -> TicketRecord | None: ...

    def trigger_ticket_of_run(self, run_id: str) -> TicketRecord | None: ...

    def unfinished_trigger_runs(self) -> list[str]: ...

    # --- the API limiter and parked tasks (issue #14: harness/store/limiter_state.py) -------
    def api_try_acquire(self, key: str, holder: str, lease_s: float, ceiling: int) -> float:
        """A request slot under the key's shared limit for `holder` (0.0), or how long to wait
        before asking again (the limit is full, or the server's not-before is still to come)."""

    def api_release(self, key: str, holder: str) -> None: ...

    def api_report(
        self,
        key: str,
        verdict: ReplyVerdict,
        sent_at: float,
        wait_until: float | None,
        ceiling: int,
    ) -> AimdState:
        """A reply's verdict through the AIMD rules (harness.agents.limiter.next_state); the
        state after it."""

    def api_state(self, key: str, ceiling: int) -> AimdState: ...

    def park_task(
        self,
        run_id: str,
        spec_id: str,
        owner: str,
        result: dict[str, Any],
        not_before: float,
        reason: str,
    ) -> bool:
        """release_task, and no claim of it before `not_before` (a parked or deferred task)."""

    def parked(self, run_id: str) -> dict[str, float]:
        """Pending tasks parked until a time still to come: spec id → not_before."""

    def unpark(self, run_id: str) -> int:
        """Let every parked task of the run be claimed now (`harness resume --now`)."""

    # --- checkpoints ----------------------------------------------------------------------
    def checkpointer(self) -> BaseCheckpointSaver[Any]:
        """The LangGraph checkpointer on the same database (SqliteSaver / PostgresSaver), set
        up and ready; closed with the store."""

    def close(self) -> None: ...


def worker_id() -> str:
    """Who holds a lease: host, process id and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def owner_is_gone(owner: str | None) -> bool:
    """True when `owner` was a process on this host that no longer runs: its leases need not
    be waited out. An owner on another host is never judged here (its lease must lapse)."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (killed, not yet reaped by its parent) holds its pid but runs no more.
    try:
        with open(f"/proc/{pid_text}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def redact_url(url: str) -> str:
    """A store URL fit to print: any password (user:password@ or ?password=) replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced [ in the host: print nothing of it
        return "<unparsable store url>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}" if at and ":" in userinfo else None
    query = parse_qsl(parts.query, keep_blank_values=True)
    if netloc is None and all(key != "password" for key, _ in query):
        return url
    return urlunsplit(
        parts._replace(
            netloc=netloc or parts.netloc,
            query=urlencode([(k, "***" if k == "password" else v) for k, v in query], safe="*"),
        )
    )


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def open_store(url: str) -> Store:
    """Connect to the store at `url`; an unusable URL is an InputError naming it."""
    if url.startswith("sqlite:///"):
        from harness.store.sqlite import SqliteStore

        return SqliteStore.open(url)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from harness.store.postgres import PostgresStore
        except ImportError as exc:
            if not (exc.name or "").startswith(POSTGRES_DRIVERS):
                raise  # installed, but broken: that traceback is the news
            raise InputError(
                f"store url {redact_url(url)!r}: postgresql:// needs the optional extra: "
                "pip install 'harness[postgres]'"
            ) from None
        return PostgresStore.open(url)
    raise InputError(
        f"store url {redact_url(url)!r}: unknown scheme; use sqlite:///path/to/harness.db or "
        "postgresql://user@host:port/dbname"
    )
