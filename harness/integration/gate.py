"""The integration gate of one task: the commands it runs, and what each run is prepared with.

A `kind: integration` gate runs the spec's `integration:` commands, else the service map's
`tests`, else its own command. Before each run the task's changed services are (re)started in
its sandbox over the shared baseline, and the command gets the routing key, the headers that
carry it and the routing layer's URL of every service. With `integration.backend: kubernetes`
the changed services are forked in the cluster instead and the command runs there as a Job
(harness.integration.kubernetes.gate, imported only then: the client is an optional extra). A
repository without a service map has nothing to integrate: the gate passes as not applicable,
and its record says so.
"""

from __future__ import annotations

from pathlib import Path

from harness.config.policy import GateConfig
from harness.config.spec import Spec
from harness.gates.runner import GateEnvironment, GateSetupError
from harness.integration.changes import changed_services
from harness.integration.config import IntegrationConfig, ServiceMap
from harness.integration.local import LocalIntegration
from harness.integration.processes import BASELINE, ServiceNotReady
from harness.integration.routing_key import routing_key
from harness.integration.servicemap import load_service_map
from harness.sandbox import Completed, TaskSandbox
from harness.sandbox.bridge import Denial, Egress


class IntegrationGates:
    def __init__(
        self,
        services: LocalIntegration,
        spec: Spec,
        sandbox: TaskSandbox,
        config: IntegrationConfig,
        *,
        run_id: str,
        run_dir: Path,
        log_dir: Path,
    ) -> None:
        self.services = services
        self.spec = spec
        self.sandbox = sandbox
        self.config = config
        self.run_id = run_id
        self.key = routing_key(run_id, spec.id)
        self.run_dir = run_dir
        self.log_dir = log_dir
        """Where the sandboxed services' logs go (one file per service and start)."""
        self.service_map = load_service_map(spec, config)

    def gates(self, gates: list[GateConfig]) -> list[GateConfig]:
        """`gates` with each integration gate given its test commands (one gate per command,
        suffixed -1, -2… when there are several)."""
        commands = self.spec.integration or (self.service_map.tests if self.service_map else [])
        expanded: list[GateConfig] = []
        for gate in gates:
            if gate.kind != "integration" or self.service_map is None or not commands:
                expanded.append(gate)
            elif len(commands) == 1:
                expanded.append(gate.model_copy(update={"command": commands[0]}))
            else:
                expanded += [
                    gate.model_copy(update={"name": f"{gate.name}-{n}", "command": command})
                    for n, command in enumerate(commands, start=1)
                ]
        return expanded

    def prepare(self, gate: GateConfig) -> GateEnvironment:
        """For an integration gate: the sandbox's services restarted from the task's committed
        tree, and the environment its tests need (on Kubernetes: the tests' outcome, run as a
        Job). Other gates need nothing."""
        if gate.kind != "integration":
            return GateEnvironment()
        if self.service_map is None:
            return GateEnvironment(not_applicable=self._no_map())
        if self.config.backend == "kubernetes":
            return self._on_kubernetes(gate, self.service_map)
        try:
            task = self.services.fork(
                self.spec, self.service_map, self.config, key=self.key, run_dir=self.run_dir
            )
            base = self.spec.base_commit
            changed = changed_services(self.service_map, self.sandbox.worktree, base)
            # The changed services run the agent's code too: what they try is the gate's.
            denials: list[Denial] = []
            task.restart(changed, self.sandbox.path, self.log_dir, denials)
        except ServiceNotReady as exc:
            if exc.exit_code is not None and exc.instance != BASELINE:
                return GateEnvironment(ran=_broken_by_the_change(exc))
            raise GateSetupError(
                str(exc),
                f"The last lines of its log ({exc.log}):\n\n{exc.tail or '(empty)'}",
                "read the service's log; fix the service, its `command` or `health` in the "
                "service map, or raise integration.ready_timeout_s",
                exc.log,
            ) from exc
        env = task.gate_env()
        # The routing layer's ports, bridged into the gate's own network namespace: nothing
        # else is reachable, and what it tries through a proxy is refused and recorded.
        urls = [url for name, url in env.items() if name.startswith("HARNESS_URL_")]
        egress = Egress.to_urls(urls)
        egress.denials = denials
        return GateEnvironment(env=env, egress=egress)

    def _on_kubernetes(self, gate: GateConfig, service_map: ServiceMap) -> GateEnvironment:
        """The changed services forked in the cluster and the gate's command run as a Job
        (see harness.integration.kubernetes.gate); torn down by `services.release`. The
        backend is imported here, on its first use: it is an optional extra."""
        from harness.integration.kubernetes.manifests import ForkIdentity

        changed = changed_services(service_map, self.sandbox.worktree, self.spec.base_commit)
        commands = self.spec.integration or service_map.tests
        return self.services.kubernetes.run_gate(
            gate,
            integration=self.config,
            service_map=service_map,
            identity=ForkIdentity(self.run_id, self.spec.id, self.key),
            changed=[service.name for service in changed],
            commit=self.sandbox.worktree.head(),
            # Every integration command of the task, so one applied sandbox serves each gate;
            # a gate keeping its own command (no list to expand it from) gets its own.
            tests=commands if gate.command in commands else [gate.command],
            log_dir=self.log_dir,
        )

    def _no_map(self) -> str:
        if self.config.services_file is None:
            return "the policy names no service map (integration.services or services_file)"
        return (
            f"{self.spec.repo} has no service map ({self.config.services_file} is not in its "
            f"base commit {self.spec.base_commit[:12]}): it has no services to integrate"
        )


def _broken_by_the_change(exc: ServiceNotReady) -> Completed:
    """A changed service that exits at start while the baseline runs the same service fine
    from the base commit: the change broke it, so the gate fails with the service's own output
    (its traceback becomes problems the agent can act on), charged to the attempt. A service
    that never answers its health check stays infrastructure: that may be the machine."""
    output = f"{exc}\nThe last lines of its log ({exc.log}):\n{exc.tail or '(empty)'}\n"
    return Completed(exit_code=exc.exit_code or 1, output=output, duration_s=0.0)
