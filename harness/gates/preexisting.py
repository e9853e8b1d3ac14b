"""Which failures were already there: a failing gate is run once on the untouched base commit,
so feedback and records can say a failure is pre-existing. One run per (repository, base,
gate) per run of harness, shared by every task that needs it; the task must still make the
gate pass (fixing a red base is often the point of the spec)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from harness.config.policy import GateConfig, InfrastructureConfig
from harness.config.spec import Spec
from harness.gates.runner import GateRunner
from harness.problems import Problem
from harness.sandbox.limits import DEFAULT_CONFINEMENT, Confinement
from harness.sandbox.local import WorktreeSandbox

Key = tuple[str | None, ...]


class PreexistingFailures:
    def __init__(self, run_dir: Path, confinement: Confinement = DEFAULT_CONFINEMENT) -> None:
        self.run_dir = run_dir
        self.confinement = confinement
        """The run's sandboxes' limits and view: the base runs under the same."""
        self._known: dict[str, set[Key]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def label(self, spec: Spec, gate: GateConfig, problems: list[Problem]) -> list[Problem]:
        """`problems` with `pre_existing` set on those the base commit has too."""
        on_base = self._failing_on_base(spec, gate)
        return [p.model_copy(update={"pre_existing": p.key() in on_base}) for p in problems]

    def _failing_on_base(self, spec: Spec, gate: GateConfig) -> set[Key]:
        ident = "\0".join([spec.git_toplevel, spec.base_commit, str(spec.subdir), gate.command])
        name = hashlib.sha256(ident.encode()).hexdigest()[:12]
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._known:
                self._known[name] = self._run_on_base(spec, gate, name)
            return self._known[name]

    def _run_on_base(self, spec: Spec, gate: GateConfig, name: str) -> set[Key]:
        where = self.run_dir / "base" / name
        sandbox = WorktreeSandbox.provision(
            spec, None, where / "tree", where / "scratch", self.confinement
        )
        try:
            runner = GateRunner(
                sandbox,
                log_dir=where,
                instance=f"base/{spec.base_commit[:12]}",
                infrastructure=InfrastructureConfig(retries=0),
            )
            record, problems = runner.run_once(gate, attempt=0, phase="base")
        finally:
            sandbox.teardown()
        if record.passed or record.infrastructure_failure:
            return set()  # a base that cannot run the gate proves nothing
        return {problem.key() for problem in problems}
