"""The gates' runs on the untouched base commit, once per (repository, base, subdir, gate) per
run of harness, shared by every task and attempt that needs them, each in its own worktree
sandbox under run_dir/base/<hash>. Two uses:

- which failures were already there: a failing gate's problems the base has too are labelled
  pre-existing (the task must still make the gate pass; fixing a red base is often the point);
- what the base measured (its tests' outcomes, the files its linter and type checker checked),
  which a gate that passes on the head is compared with (harness.gates.base_compare).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from harness import failpoints
from harness.config.policy import GateConfig, GuardConfig, InfrastructureConfig
from harness.config.spec import Spec
from harness.gates import caches
from harness.gates.base_compare import AgainstBase, Observed, moved_since, present_in
from harness.gates.runner import GateRunner
from harness.git import GitRepository
from harness.problems import Problem
from harness.sandbox import TaskSandbox
from harness.sandbox.lifecycle import clear_detached
from harness.sandbox.limits import DEFAULT_CONFINEMENT, Confinement
from harness.sandbox.local import WorktreeSandbox
from harness.setup.environment import EnvironmentSetup

Key = tuple[str | None, ...]


@dataclass(frozen=True)
class BaseRun:
    """What one gate's run on the base left."""

    failing: set[Key]
    """Its problems' keys (empty when it passed, or could not run: that proves nothing)."""
    observed: Observed
    caches: Path | None = None
    """The gate's tool caches as the run left them (harness.gates.caches), if it had any."""


class PreexistingFailures:
    def __init__(
        self,
        run_dir: Path,
        confinement: Confinement = DEFAULT_CONFINEMENT,
        setup: EnvironmentSetup | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.setup = setup
        """Policy's `setup:`: the base runs in the same set-up environment as tasks."""
        self.confinement = confinement
        """The run's sandboxes' limits and view: the base runs under the same."""
        self.caches_root = run_dir / "caches"
        """Where each base run leaves its gate's tool caches, for tasks to start from."""
        self._known: dict[str, BaseRun] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def label(self, spec: Spec, gate: GateConfig, problems: list[Problem]) -> list[Problem]:
        """`problems` with `pre_existing` set on those the base commit has too."""
        on_base = self._on_base(spec, gate).failing
        return [p.model_copy(update={"pre_existing": p.key() in on_base}) for p in problems]

    def observed(self, spec: Spec, gate: GateConfig) -> Observed:
        """What the gate measured on the spec's base commit."""
        return self._on_base(spec, gate).observed

    def cache_snapshot(self, spec: Spec, gate: GateConfig) -> Path | None:
        """The gate's tool caches as its run on the base left them (None: it made none)."""
        return self._on_base(spec, gate).caches

    def key(self, spec: Spec, gate: GateConfig) -> str:
        """The base run's name: one per repository, base commit, subdir and gate command."""
        ident = "\0".join([spec.git_toplevel, spec.base_commit, str(spec.subdir), gate.command])
        return hashlib.sha256(ident.encode()).hexdigest()[:12]

    def against(self, spec: Spec, guard: GuardConfig, sandbox: TaskSandbox) -> AgainstBase:
        """The task's gates compared with their runs on its base."""
        worktree = sandbox.worktree
        return AgainstBase(
            on_base=lambda gate: self.observed(spec, gate),
            may_change=spec.tests_may_change,
            guard=guard,
            present=present_in(sandbox.path),
            moved=lambda: moved_since(worktree.file_changes(spec.base_commit, "HEAD"), spec.subdir),
        )

    def _on_base(self, spec: Spec, gate: GateConfig) -> BaseRun:
        name = self.key(spec, gate)
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._known:
                self._known[name] = self._run_on_base(spec, gate, name)
            return self._known[name]

    def _run_on_base(self, spec: Spec, gate: GateConfig, name: str) -> BaseRun:
        where = self.run_dir / "base" / name
        clear_detached(GitRepository(Path(spec.git_toplevel)), where)
        sandbox = WorktreeSandbox.provision(
            spec, None, where / "tree", where / "scratch", self.confinement
        )
        try:
            failpoints.hit("base.provisioned")
            runner = GateRunner(
                sandbox,
                log_dir=where,
                instance=f"base/{spec.base_commit[:12]}",
                infrastructure=InfrastructureConfig(retries=0),
                observe_always=True,
            )
            if self.setup is not None:
                runner.prepare = self.setup.ready(spec, sandbox).then(runner.prepare)
            record, problems = runner.run_once(gate, attempt=0, phase="base")
            snapshot = self.caches_root / name
            dirs = caches.cache_dirs(gate)
            warm = caches.capture(sandbox.path, sandbox.scratch, dirs, snapshot)
        finally:
            sandbox.teardown()
        observed = runner.observed.get(gate.name) or Observed(
            not_compared=f"the gate could not run on the base ({record.ending})"
        )
        cached = snapshot if warm else None
        if record.passed or record.infrastructure_failure:
            return BaseRun(set(), observed, cached)  # a base that cannot run it proves nothing
        return BaseRun({problem.key() for problem in problems}, observed, cached)
