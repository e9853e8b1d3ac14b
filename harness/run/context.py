"""A run as its graph nodes see it: what it is (fixed at its start), the services its tasks
share, and this worker's live per-task objects.

Graph nodes receive the RunContext through LangGraph's `configurable`: it holds what cannot
live in checkpointed graph state (open files, sandboxes, agents, connections).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.agents import Agent
from harness.agents.fleet import Fleet
from harness.config.policy import AgentKind, Budget, Policy
from harness.config.spec import Spec
from harness.errors import InputError
from harness.gates.caches import GateCaches
from harness.gates.preexisting import PreexistingFailures
from harness.git import GitRepository
from harness.integration.local import LocalIntegration
from harness.publish import Publisher
from harness.run.effects import Effects
from harness.run.ledger import RunLedger, TaskResult
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.lifecycle import TaskSandboxes
from harness.setup.environment import EnvironmentSetup
from harness.store import Store

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class LeaseLost(RuntimeError):
    """This worker no longer holds the task: another one reclaimed it after its lease lapsed.
    Raised through the graph (not turned into an outcome), so the task is left to its holder."""


class Interrupted(RuntimeError):
    """The run is stopping (SIGINT or SIGTERM): the node was not started, or its work was cut
    short. Raised through the graph (not turned into an outcome), so no checkpoint records the
    node and `harness resume` runs it again."""


class StopRequest:
    """Whether the run was asked to stop, and whether its grace period is over. Set from a
    signal handler (harness.run.interrupt), read by every lane and node."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._forced = threading.Event()
        self.signum: int | None = None
        """The signal that asked (SIGINT or SIGTERM); the exit code is 128 + it."""

    @property
    def requested(self) -> bool:
        """No new task and no new node starts."""
        return self._requested.is_set()

    @property
    def forced(self) -> bool:
        """The grace period is over: what still runs is being killed, and its work is not
        kept as a finished step."""
        return self._forced.is_set()

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self._requested.set()

    def force(self) -> None:
        self._requested.set()
        self._forced.set()


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def with_overrides(policy: Policy, agent: AgentKind | None, concurrency: int | None) -> Policy:
    """The policy in force for a run: the command line's --agent and --concurrency applied
    once, so nothing downstream has to remember to prefer an override."""
    update: dict[str, object] = {}
    if agent is not None and agent != policy.agent.kind:
        update["agent"] = policy.agent.model_copy(update={"kind": agent})
    if concurrency is not None:
        update["concurrency"] = concurrency
    return policy.model_copy(update=update) if update else policy


@dataclass(frozen=True)
class RunConfig:
    """What the run is, fixed when it starts (or is resumed): identity, layout, policy."""

    run_id: str
    run_dir: Path
    policy: Policy
    """The policy file with the run's overrides applied (see `with_overrides`)."""
    policy_path: Path
    started_at: str
    input_errors: tuple[str, ...] = ()
    """Specs that could not be loaded; reported in the summary, not run."""
    not_after: float | None = None
    """The latest time this run may wait until (epoch seconds): a night's window end. No task
    step starts past it (the task is wrapped up and escalated)."""
    first_verified: bool = False
    """`harness fleet --first-verified`: once one variant of a spec is verified, its siblings
    are cancelled (graphs.batch)."""

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

    def effect_key(self, spec_id: str, kind: str, attempt: int) -> str:
        """The idempotency key of a side effect: it happens once per run, task and attempt."""
        return f"{self.run_id}/{spec_id}/{kind}/{attempt}"

    def relative(self, path: Path) -> str:
        """Paths in records are relative to the runs/ parent, e.g. runs/<id>/prs/x.md."""
        try:
            return str(path.relative_to(self.run_dir.parent.parent))
        except ValueError:
            return str(path)


@dataclass
class RunServices:
    """What every task of the run shares; each is safe to use from many lanes at once."""

    store: Store
    """Run, task and environment records, leases, idempotency keys, checkpoints."""
    worker: str
    """This process, as the holder of task leases and environment records."""
    ledger: RunLedger
    effects: Effects
    """Idempotency keys in the store: commit, publish and escalate happen once."""
    publisher: Publisher
    """Where verified tasks become PRs and the rest escalations."""
    isolation: bwrap.Isolation
    fleet: Fleet
    """What every task's model calls share: the request limiter and the run's spend."""
    preexisting: PreexistingFailures
    """Failing gates run once on the base commit, to label pre-existing failures."""
    caches: GateCaches
    """The gates' tool caches built on the base, copied into each task's sandbox before its
    gates run. Closed at the run's end: `services.caches.close()`."""
    integration: LocalIntegration
    """Integration gates' services: the shared baselines (started on first use) and each
    task's forks. Stopped at the run's end: `services.integration.stop()`."""
    setup: EnvironmentSetup = field(default_factory=lambda: EnvironmentSetup(None, Path()))
    """Policy's `setup:`, run once per base (and per changed lockfiles) and bound into every
    task's sandbox before its gates run (harness.setup)."""


AgentFactory = Callable[[Spec], Agent]
"""Makes a task's agent; raises AgentUnavailable when none can run it."""


@dataclass
class LiveTasks:
    """This worker's live objects per task: its sandbox, its agent, and whether its lease
    was lost. Safe to use from many lanes at once."""

    sandboxes: TaskSandboxes
    new_agent: AgentFactory
    lost: set[str] = field(default_factory=set)
    """Tasks whose lease this worker lost (another worker reclaimed them): left alone."""
    stop: StopRequest = field(default_factory=StopRequest)
    """Set by SIGINT or SIGTERM: the run is winding down (see harness.run.interrupt)."""
    cancelled: dict[str, str] = field(default_factory=dict)
    """Fleet tasks to stop at their next step, with why (`harness fleet --first-verified`):
    their work is committed and their outcome is `cancelled`."""
    _agents: dict[str, Agent] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def agent(self, spec: Spec) -> Agent:
        """The task's agent, made on first use (AgentUnavailable when none can run it)."""
        with self._lock:
            found = self._agents.get(spec.id)
        if found is None:
            found = self.new_agent(spec)
            with self._lock:
                found = self._agents.setdefault(spec.id, found)
        return found

    def forget(self, spec_id: str) -> None:
        with self._lock:
            self._agents.pop(spec_id, None)


@dataclass
class RunContext:
    """What a graph node is given besides its task's state (through `configurable`)."""

    config: RunConfig
    services: RunServices
    live: LiveTasks

    def results(self) -> list[TaskResult]:
        """Every finished task of the run (this worker's and others'), from the store, in the
        order the specs were given."""
        tasks = self.services.store.tasks(self.config.run_id)
        return [TaskResult.model_validate(t.result) for t in tasks if t.result is not None]


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
