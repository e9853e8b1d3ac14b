"""The local backend of integration gates: one shared baseline per run, sandboxes per task.

The baseline is every service of a map at the base commit, run from a detached worktree and
started once per run (lazily, by the first task that needs it) behind the routing layer. A
task's sandbox runs only its changed services, from its own worktree, and registers them under
its routing key: requests carrying the key reach them, everything else reaches the baseline.
Many sandboxes share one baseline without seeing each other's traffic.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config.spec import Spec
from harness.git import GitRepository
from harness.integration.config import IntegrationConfig, ServiceConfig, ServiceMap
from harness.integration.processes import (
    BASELINE,
    Launcher,
    ServiceNotReady,
    ServiceProcess,
    reserve_port,
)
from harness.integration.routing import RoutingLayer
from harness.integration.routing_key import routing_headers
from harness.sandbox.bridge import Denial

if TYPE_CHECKING:
    from harness.integration.kubernetes.gate import KubernetesIntegration

from harness.integration.kubernetes import require_kubernetes


def _start_all(
    launcher: Launcher,
    services: list[ServiceConfig],
    routing: RoutingLayer,
    *,
    instance: str,
    project: Path,
    scratch: Path,
    logs: dict[str, Path],
    ready_timeout_s: float,
    denials: list[Denial] | None = None,
) -> dict[str, ServiceProcess]:
    """Start `services` at once, then wait for each to be healthy; on any failure every one of
    them is stopped and ServiceNotReady raised."""
    started: dict[str, ServiceProcess] = {}
    try:
        for service in services:
            port = reserve_port()
            env = {service.port_env: str(port), "HARNESS_INSTANCE": instance}
            env |= {variable: routing.url(target) for variable, target in service.calls.items()}
            started[service.name] = ServiceProcess.start(
                launcher,
                service.name,
                service.command,
                instance=instance,
                port=port,
                cwd=project,
                scratch=scratch / service.name,
                log=logs[service.name],
                env=env,
                denials=denials,
            )
        for service in services:
            started[service.name].wait_ready(service.health, ready_timeout_s)
    except BaseException:
        for process in started.values():
            process.stop()
        raise
    return started


class BaselineStack:
    """Every service at the base commit, behind one routing layer listener per service."""

    def __init__(
        self, spec: Spec, services: ServiceMap, config: IntegrationConfig, where: Path
    ) -> None:
        self.spec = spec
        self.services = services
        self.config = config
        self.where = where
        self.tree = where / "tree"
        self.routing = RoutingLayer(config.baggage_key)
        self.processes: dict[str, ServiceProcess] = {}
        self._repository = GitRepository(Path(spec.git_toplevel))

    def start(self, launcher: Launcher) -> None:
        self.where.mkdir(parents=True, exist_ok=True)
        if self.tree.exists():  # left by a run that crashed; this one resumes it
            self._repository.remove_worktree(self.tree)
        self._repository.add_worktree(self.tree, None, self.spec.base_commit)
        for service in self.services.services:
            self.routing.add_service(service.name)
        self.processes = _start_all(
            launcher,
            self.services.services,
            self.routing,
            instance=BASELINE,
            project=self.tree / self.spec.subdir,
            scratch=self.where / "scratch",
            logs={s.name: self.where / "logs" / f"{s.name}.log" for s in self.services.services},
            ready_timeout_s=self.config.ready_timeout_s,
        )
        for name, process in self.processes.items():
            self.routing.set_baseline(name, process.port)

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.routing.close()
        if self.tree.exists():
            self._repository.remove_worktree(self.tree)
        shutil.rmtree(self.where / "scratch", ignore_errors=True)


class TaskFork:
    """One task's sandbox: its changed services, registered under its routing key."""

    def __init__(
        self, key: str, baseline: BaselineStack, scratch: Path, launcher: Launcher
    ) -> None:
        self.key = key
        self.baseline = baseline
        self.scratch = scratch
        self.processes: dict[str, ServiceProcess] = {}
        self.starts = 0
        self._launcher = launcher
        self._lock = threading.Lock()

    def restart(
        self,
        changed: list[ServiceConfig],
        project: Path,
        log_dir: Path,
        denials: list[Denial] | None = None,
    ) -> None:
        """Stop whatever ran before (the code may have changed since), start `changed` from
        `project` and route this key's requests for them there; what they try to reach past
        the routing layer through a proxy goes to `denials`."""
        with self._lock:
            self._stop()
            self.starts += 1
            self.processes = _start_all(
                self._launcher,
                changed,
                self.baseline.routing,
                instance=self.key,
                project=project,
                scratch=self.scratch,
                logs={s.name: log_dir / f"{s.name}-{self.starts}.log" for s in changed},
                ready_timeout_s=self.baseline.config.ready_timeout_s,
                denials=denials,
            )
            ports = {name: process.port for name, process in self.processes.items()}
            self.baseline.routing.register(self.key, ports)

    def gate_env(self) -> dict[str, str]:
        """What an integration test needs: the routing key, the headers that carry it, which
        services are sandboxed, and each service's routing layer URL."""
        headers = routing_headers(self.baseline.config.baggage_key, self.key)
        env = {
            "HARNESS_ROUTING_KEY": self.key,
            "HARNESS_BAGGAGE": headers["baggage"],
            "HARNESS_TRACEPARENT": headers["traceparent"],
            "HARNESS_TRACESTATE": headers["tracestate"],
            "HARNESS_SANDBOXED": ",".join(sorted(self.processes)),
        }
        for service in self.baseline.services.services:
            variable = "HARNESS_URL_" + service.name.upper().replace("-", "_")
            env[variable] = self.baseline.routing.url(service.name)
        return env

    def stop(self) -> None:
        with self._lock:
            self._stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _stop(self) -> None:
        self.baseline.routing.unregister(self.key)
        for process in self.processes.values():
            process.stop()
        self.processes = {}


class LocalIntegration:
    """A run's service stacks: baselines (one per repository, base and map), started on first
    use and shared by every task, and each task's sandbox. Safe to use from many tasks.

    It also holds the run's Kubernetes sandboxes (`kubernetes`, for integration.backend:
    kubernetes), so that a task's teardown (`release`) and the run's end (`stop`) are one call
    whichever backend its integration gates used. That backend is made on first use: a run
    on the local backend never imports the Kubernetes client (an optional extra)."""

    def __init__(self) -> None:
        self._kubernetes: KubernetesIntegration | None = None
        self._lock = threading.Lock()
        self._baselines: dict[str, BaselineStack] = {}
        self._failed: dict[str, ServiceNotReady] = {}
        self._starting: dict[str, threading.Lock] = {}
        self._tasks: dict[str, TaskFork] = {}
        self._launcher: Launcher | None = None
        self._stopped = False

    @property
    def kubernetes(self) -> KubernetesIntegration:
        """The run's Kubernetes sandboxes, made (and the client imported) on first use;
        InputError naming the extra when the client is not installed."""
        with self._lock:
            if self._kubernetes is None:
                require_kubernetes()
                from harness.integration.kubernetes.gate import KubernetesIntegration

                self._kubernetes = KubernetesIntegration()
            return self._kubernetes

    def fork(
        self,
        spec: Spec,
        services: ServiceMap,
        config: IntegrationConfig,
        *,
        key: str,
        run_dir: Path,
    ) -> TaskFork:
        """The task's sandbox (made on first call) over the baseline, which is started first if
        no task has started it yet. ServiceNotReady if the baseline cannot start."""
        baseline = self._baseline(spec, services, config, run_dir)
        with self._lock:
            task = self._tasks.get(spec.id)
            if task is None or task.baseline is not baseline:
                scratch = run_dir / "services" / "tasks" / spec.id
                task = TaskFork(key, baseline, scratch, self._get_launcher())
                self._tasks[spec.id] = task
            return task

    def release(self, spec_id: str) -> None:
        """Stop a task's services and drop its routes (teardown); the baseline keeps running.
        Its Kubernetes sandbox, if it has one, is torn down."""
        with self._lock:
            kubernetes = self._kubernetes
            task = self._tasks.pop(spec_id, None)
        if kubernetes is not None:
            kubernetes.release(spec_id)
        if task is not None:
            task.stop()

    def stop(self) -> None:
        """Stop every sandbox and baseline and remove their worktrees (the run's end)."""
        with self._lock:
            kubernetes = self._kubernetes
        if kubernetes is not None:
            kubernetes.stop()
        with self._lock:
            self._stopped = True
            tasks, self._tasks = list(self._tasks.values()), {}
            baselines, self._baselines = list(self._baselines.values()), {}
            launcher, self._launcher = self._launcher, None
        for task in tasks:
            task.stop()
        for baseline in baselines:
            baseline.stop()
        if launcher is not None:
            launcher.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _baseline(
        self, spec: Spec, services: ServiceMap, config: IntegrationConfig, run_dir: Path
    ) -> BaselineStack:
        ident = "\0".join(
            [spec.git_toplevel, spec.base_commit, str(spec.subdir), services.model_dump_json()]
        )
        name = "baseline-" + hashlib.sha256(ident.encode()).hexdigest()[:12]
        with self._lock:
            if self._stopped:
                raise RuntimeError("the run's services were stopped")
            starting = self._starting.setdefault(name, threading.Lock())
        # One task starts it; the others wait for it here, not on the registry's lock.
        with starting:
            with self._lock:
                if name in self._baselines:
                    return self._baselines[name]
                if name in self._failed:
                    failed = self._failed[name]
                    raise ServiceNotReady(
                        failed.service, failed.instance, failed.why, failed.log, failed.tail
                    )
                launcher = self._get_launcher()
            baseline = BaselineStack(spec, services, config, run_dir / "services" / name)
            try:
                baseline.start(launcher)
            except ServiceNotReady as exc:
                baseline.stop()
                with self._lock:
                    self._failed[name] = exc
                raise
            except BaseException:
                baseline.stop()
                raise
            with self._lock:
                if self._stopped:  # the run ended while this baseline was starting
                    baseline.stop()
                    raise RuntimeError("the run's services were stopped")
                self._baselines[name] = baseline
            return baseline

    def _get_launcher(self) -> Launcher:
        """Made on first use (under self._lock): a run without integration gates starts no
        thread. Registered with atexit so a run that never calls stop() leaks nothing."""
        if self._launcher is None:
            self._launcher = Launcher()
            atexit.register(self.stop)
        return self._launcher
