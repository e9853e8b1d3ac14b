"""The Kubernetes backend of integration gates: a run's Kubernetes sandboxes, one per task.

Before each run of a task's integration gate, the task's sandbox is made to match its committed
tree: applied (again) when the commit or the changed services differ from what is applied, since
a fork's image names the commit; kept otherwise (the verify phase re-runs the gates on the commit
the last attempt made). A fork that does not become ready is the gate's setup failure
(infrastructure, with the pods' last log lines). The gate's command then runs as a test Job in
the cluster, and its outcome goes back to the gate runner as if the command had run in the
task's sandbox (`GateEnvironment.ran`): one record, one log and one parse for both backends.
Why not run the Jobs from a command in the sandbox: the sandbox would need the kubeconfig's
credentials, and the agent's code runs there.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from harness.config.policy import GateConfig
from harness.errors import InfrastructureError
from harness.gates.runner import GateEnvironment, GateSetupError
from harness.integration.config import IntegrationConfig, ServiceMap
from harness.integration.kubernetes.fork import KubernetesFork, open_fork
from harness.integration.kubernetes.manifests import ForkIdentity
from harness.integration.kubernetes.readiness import JobRun
from harness.problems import Problem
from harness.run.ledger import write_atomic
from harness.sandbox import Completed

_logger = logging.getLogger(__name__)
TIMED_OUT_REASONS = ("DeadlineExceeded", "NoOutcomeAfter")
"""Job outcomes that are the gate timing out (retried or escalated as a timeout), by prefix."""


@dataclass(frozen=True)
class _Applied:
    sandbox: KubernetesFork
    commit: str
    changed: tuple[str, ...]
    tests: tuple[str, ...]


class KubernetesIntegration:
    """The Kubernetes sandboxes of a run's tasks. Safe to use from many tasks at once (each
    task only ever touches its own sandbox)."""

    def __init__(self, kubeconfig: Path | None = None, poll_s: float = 1.0) -> None:
        self.kubeconfig = kubeconfig
        """None: $KUBECONFIG, else ~/.kube/config (its context must be allowlisted)."""
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._applied: dict[str, _Applied] = {}

    def run_gate(
        self,
        gate: GateConfig,
        *,
        integration: IntegrationConfig,
        service_map: ServiceMap,
        identity: ForkIdentity,
        changed: list[str],
        commit: str,
        tests: list[str],
        log_dir: Path,
    ) -> GateEnvironment:
        """Apply the task's sandbox (if not applied as it is), wait for its forks, run the
        gate's command as a Job; `tests` are every integration command of the task (one Job
        each in the plan). GateSetupError when the cluster cannot give the gate its sandbox."""
        if not changed:
            return GateEnvironment(
                not_applicable="the change touches no service of the service map: nothing to "
                "fork on Kubernetes (its integration tests would only test the baseline)"
            )
        try:
            sandbox = self._sandbox(integration, service_map, identity, changed, commit, tests)
            problems = sandbox.wait_ready(poll_s=self.poll_s)
            if problems:
                raise _not_ready(problems, log_dir / "kubernetes-not-ready.log")
            run = sandbox.run_test(gate.command, self.poll_s)
        except (InfrastructureError, ApiException) as exc:
            raise GateSetupError(
                f"the Kubernetes sandbox could not be applied or run: {_one_line(exc)}",
                str(exc),
                "check the kube context's API server and harness's permissions in the "
                "allowlisted namespaces (`harness gc` reaps what is left)",
            ) from exc
        if not (run.passed or run.tests_failed or run.reason.startswith(TIMED_OUT_REASONS)):
            raise GateSetupError(
                f"test Job {run.namespace}/{run.name} did not finish: {run.outcome}: {run.reason}",
                _job_output(run),
                "look at the Job's events in the cluster (`kubectl describe job`)",
            )
        return GateEnvironment(ran=_completed(run))

    def fork(self, spec_id: str) -> KubernetesFork | None:
        with self._lock:
            applied = self._applied.get(spec_id)
        return applied.sandbox if applied is not None else None

    def release(self, spec_id: str) -> list[str]:
        """Tear down a task's sandbox (its teardown); one line per thing removed. Never
        raises: a cluster out of reach must not turn a finished task into an error, and
        `harness gc` reaps what is left by label."""
        with self._lock:
            applied = self._applied.pop(spec_id, None)
        if applied is None:
            return []
        try:
            return applied.sandbox.teardown()
        except Exception as exc:  # reported, and reaped later by label
            _logger.warning(
                "Kubernetes sandbox of %s not torn down (%s); `harness gc` reaps it",
                spec_id,
                _one_line(exc),
            )
            return []

    def stop(self) -> None:
        """Tear down every sandbox still applied (the run's end)."""
        with self._lock:
            spec_ids = list(self._applied)
        for spec_id in spec_ids:
            self.release(spec_id)

    def _sandbox(
        self,
        integration: IntegrationConfig,
        service_map: ServiceMap,
        identity: ForkIdentity,
        changed: list[str],
        commit: str,
        tests: list[str],
    ) -> KubernetesFork:
        wanted = (commit, tuple(changed), tuple(tests))
        with self._lock:
            applied = self._applied.get(identity.sandbox)
        if applied is not None and (applied.commit, applied.changed, applied.tests) == wanted:
            return applied.sandbox
        if applied is not None:  # the code (or what it touches) changed: a fresh sandbox
            self.release(identity.sandbox)
        sandbox = open_fork(
            integration,
            service_map,
            changed,
            identity,
            commit,
            "policy",
            self.kubeconfig,
            tests,
        )
        with self._lock:
            self._applied[identity.sandbox] = _Applied(sandbox, *wanted)
        return sandbox


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _not_ready(problems: list[Problem], log: Path) -> GateSetupError:
    """The forks' problems as one setup failure; its title names the first one and, when the
    pod logged anything, its last log line (the escalation reason shows the real error)."""
    detail = "\n\n".join(problem.detail for problem in problems)
    write_atomic(log, detail + "\n")
    lines = problems[0].detail.strip().splitlines()
    title = lines[0]  # "fork <namespace>/<name>: <what is wrong>", the reason included
    if len(lines) > 3 and lines[2].startswith("last "):  # summary, blank, log header, lines
        title += f"; its log ends: {lines[-1].strip()}"
    return GateSetupError(
        title,
        detail,
        "read the pod's log; fix the service, its image or env (the service map's "
        "`kubernetes:`), or raise integration.kubernetes.rollout_timeout_s",
        log,
    )


def _job_output(run: JobRun) -> str:
    """What the gate's log holds: a line saying which Job ran and how it ended, then its log."""
    ending = f"{run.outcome}: {run.reason}" if run.reason else run.outcome
    code = "" if run.exit_code is None else f", exit code {run.exit_code}"
    head = f"[harness] test Job {run.namespace}/{run.name} (pod {run.pod}): {ending}{code}"
    if run.reason.startswith(TIMED_OUT_REASONS):
        head += (
            f"; its activeDeadlineSeconds is {run.deadline_s} "
            "(integration.kubernetes.job_deadline_s)"
        )
    return f"{head}\n{run.log or '(the test container logged nothing)'}"


def _completed(run: JobRun) -> Completed:
    # A failed Job is a failure even when its pod reported no (or a zero) exit code.
    exit_code = 0 if run.passed else (run.exit_code or 1)
    timed_out = run.reason.startswith(TIMED_OUT_REASONS)
    return Completed(exit_code, _job_output(run), run.duration_s, timed_out=timed_out)
