"""A run: its id and directory, the policy in force, the ledger, and the live sandboxes.

Graph nodes receive the RunContext through LangGraph's `configurable`; it holds what cannot
live in checkpointed graph state (open files, sandboxes, agents).
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.agents import Agent
from harness.agents.fleet import Fleet
from harness.config.policy import AgentKind, Budget, Policy
from harness.config.spec import Spec
from harness.errors import InputError
from harness.gates.preexisting import PreexistingFailures
from harness.git import GitRepository
from harness.integration.local import LocalIntegration
from harness.run.ledger import RunLedger, TaskResult, utc_now
from harness.sandbox import Sandbox
from harness.sandbox import bubblewrap as bwrap
from harness.store import Store, worker_id

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class LeaseLost(RuntimeError):
    """This worker no longer holds the task: another one reclaimed it after its lease lapsed.
    Raised through the graph (not turned into an outcome), so the task is left to its holder."""


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class RunContext:
    run_id: str
    run_dir: Path
    policy: Policy
    policy_path: Path
    agent_kind: AgentKind
    concurrency: int
    ledger: RunLedger
    isolation: bwrap.Isolation
    fleet: Fleet
    """What every task's model calls share: the request limiter and the run's spend."""
    base_failures: PreexistingFailures
    """Failing gates run once on the base commit, to label pre-existing failures."""
    store: Store
    """Run, task and environment records, leases, idempotency keys, checkpoints."""
    worker: str = field(default_factory=worker_id)
    """This process, as the holder of task leases and environment records."""
    started_at: str = field(default_factory=utc_now)
    input_errors: list[str] = field(default_factory=list)
    """Specs that could not be loaded; reported in the summary, not run."""
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    services: LocalIntegration = field(default_factory=LocalIntegration)
    """Integration gates' services: the shared baseline (started on first use) and each task's
    sandboxed services. Stopped at the run's end: `ctx.services.stop()`."""
    lost: set[str] = field(default_factory=set)
    """Tasks whose lease this worker lost (another worker reclaimed them): left alone."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def budget(self, spec: Spec) -> Budget:
        """The policy's budget with the spec's overrides applied."""
        budget = self.policy.budget
        return spec.budget.apply_to(budget) if spec.budget else budget

    def branch(self, spec_id: str) -> str:
        return f"{self.policy.publish.branch_prefix}/{self.run_id}/{spec_id}"

    def task_dir(self, spec_id: str) -> Path:
        """Logs and trajectories of one task."""
        return self.run_dir / "tasks" / spec_id

    def worktree_dir(self, spec_id: str) -> Path:
        return self.run_dir / "worktrees" / spec_id

    def scratch_dir(self, spec_id: str) -> Path:
        return self.run_dir / "scratch" / spec_id

    def results(self) -> list[TaskResult]:
        """Every finished task of the run (this worker's and others'), from the store, in the
        order the specs were given."""
        done = [task.result for task in self.store.tasks(self.run_id) if task.result is not None]
        return [TaskResult.model_validate(result) for result in done]

    def effect_key(self, spec_id: str, kind: str, attempt: int) -> str:
        """The idempotency key of a side effect: it happens once per run, task and attempt."""
        return f"{self.run_id}/{spec_id}/{kind}/{attempt}"

    def relative(self, path: Path) -> str:
        """Paths in records are relative to the runs/ parent, e.g. runs/<id>/prs/x.md."""
        try:
            return str(path.relative_to(self.run_dir.parent.parent))
        except ValueError:
            return str(path)

    def keep_sandbox(self, spec_id: str, sandbox: Sandbox) -> None:
        with self._lock:
            self.sandboxes[spec_id] = sandbox

    def release_sandbox(self, spec_id: str) -> Sandbox | None:
        with self._lock:
            return self.sandboxes.pop(spec_id, None)


def check_run_id(
    runs_root: Path, run_id: str | None, policy: Policy, specs: list[Spec]
) -> tuple[str, Path]:
    """The run's id and directory, before anything is made: an id already used (a run
    directory or a task branch in a target repository) is refused rather than overwritten or
    mixed with the old run."""
    run_id = run_id or new_run_id()
    if not RUN_ID_PATTERN.match(run_id):
        raise InputError(
            f"--run-id: {run_id!r} is not usable in a branch name; use letters, digits, . _ -"
        )
    for spec in specs:
        branch = f"{policy.publish.branch_prefix}/{run_id}/{spec.id}"
        if GitRepository(Path(spec.git_toplevel)).branch_exists(branch):
            raise InputError(
                f"--run-id: branch {branch} already exists in {spec.git_toplevel}; "
                "pick another run id"
            )
    run_dir = runs_root / run_id
    if run_dir.exists():
        raise InputError(f"--run-id: {run_dir} already exists; pick another run id")
    return run_id, run_dir.resolve()


def create_run_dir(
    runs_root: Path, run_id: str | None, policy: Policy, specs: list[Spec]
) -> tuple[str, Path]:
    """check_run_id, then the directory made (never an existing one)."""
    run_id, run_dir = check_run_id(runs_root, run_id, policy, specs)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise InputError(f"--run-id: {run_dir} already exists; pick another run id") from None
    return run_id, run_dir
