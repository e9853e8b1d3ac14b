"""Integration gates on the Kubernetes backend (`integration.backend: kubernetes`), against the
API emulator (tests/k8s_emulator.py) through a kubeconfig in $KUBECONFIG: the changed service
forked and routed, the gate's command run as a Job carrying the routing key, its outcome as the
gate's record and problems, readiness failures as infrastructure, and nothing left after
teardown. Through IntegrationGates + GateRunner, and through `harness run` end to end.

The Job's log in the failing cases is real pytest output, produced here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FINISH, TinyProject, escalation_problems
from k8s_cluster import CONTEXT, NAMESPACE, integration, seed_shop, service_map, spec_of
from k8s_controllers import fails_with, jobs_finish, rolls_out
from k8s_emulator import KubeEmulator

from harness.config.policy import GateConfig
from harness.config.spec import Spec, load_spec
from harness.gates.runner import GateRunner
from harness.integration.config import IntegrationConfig
from harness.integration.gate import IntegrationGates
from harness.integration.kubernetes import manifests as m
from harness.integration.local import LocalIntegration
from harness.integration.routing_key import routing_key
from harness.sandbox.local import WorktreeSandbox

COMMAND = "pytest -q tests/integration"  # the shop map's integration tests (k8s_cluster)
GATE = {"name": "integration", "kind": "integration", "command": "false", "timeout_s": 60}
INTEGRATION = GateConfig.model_validate(GATE)
CRASH_LOG = "".join(f"booting {n}\n" for n in range(60)) + "KeyError: 'CART_DB_URL'\n"
Outcome = tuple[str, str, int, str]
KINDS = ("ConfigMap", "Service", "Pod", "Deployment", "Job", "VirtualService")


@pytest.fixture
def emulator() -> Iterator[KubeEmulator]:
    server = KubeEmulator().start()
    seed_shop(server, virtual_service=True)  # cart has a team-owned VirtualService
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(tmp_path: Path, emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = emulator.write_kubeconfig(tmp_path / "kubeconfig", (CONTEXT,), CONTEXT)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture(scope="module")
def failing_tests_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What a test Job's pod logs when one integration test fails: real pytest output."""
    root = tmp_path_factory.mktemp("test-image")
    tests = root / "tests" / "integration"
    tests.mkdir(parents=True)
    (tests / "test_cart.py").write_text(
        "def test_quote_reaches_the_sandbox():\n    assert True\n\n\n"
        "def test_bulk_orders_are_discounted():\n    total = 1250\n"
        "    assert total == 1125, 'bulk order priced at the old rate'\n",
        encoding="utf-8",
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/integration"]
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout


def config() -> IntegrationConfig:
    return integration().model_copy(update={"services": service_map()})


def harness_objects(emulator: KubeEmulator) -> list[str]:
    """Every object carrying a harness label, and every harness route in a VirtualService."""
    found = [
        f"{kind} {obj['metadata']['name']}"
        for kind in KINDS
        for obj in emulator.all(kind)
        if any(key.startswith("harness.dev/") for key in obj["metadata"].get("labels", {}))
    ]
    for vs in emulator.all("VirtualService"):
        found += [
            f"route {r['name']}" for r in vs["spec"]["http"] if r["name"].startswith("harness:")
        ]
    return found


def posts(emulator: KubeEmulator, plural: str) -> int:
    return sum(1 for r in emulator.requests if r[0] == "POST" and r[1].endswith(f"/{plural}"))


def job_env(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


# --- IntegrationGates + GateRunner ------------------------------------------------------------


def task_sandbox(tiny: TinyProject, spec_id: str) -> tuple[Spec, WorktreeSandbox]:
    spec = load_spec(tiny.add_spec(spec_id, replay=False))
    run = tiny.runs / "r1"
    box = WorktreeSandbox.provision(
        spec, f"harness/r1/{spec_id}", run / "worktrees" / spec_id, run / "scratch" / spec_id
    )
    return spec, box


def change(box: WorktreeSandbox, path: str, text: str) -> str:
    box.write(path, text)
    box.worktree.commit_all("change")
    return box.worktree.head()


def runner_for(
    services: LocalIntegration, spec: Spec, box: WorktreeSandbox, logs: Path
) -> tuple[GateRunner, GateConfig]:
    """The task graph's gate runner, and the integration gate as IntegrationGates expands it."""
    gates = IntegrationGates(
        services, spec, box, config(), run_id="r1", run_dir=logs.parent, log_dir=logs / "svc"
    )
    [gate] = gates.gates([INTEGRATION])
    assert gate.command == COMMAND
    return GateRunner(box, log_dir=logs / "gates", instance="t", prepare=gates.prepare), gate


def test_a_changed_service_is_forked_routed_and_a_passing_job_passes_the_gate(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path
) -> None:
    emulator.on_create["Deployment"] = rolls_out
    emulator.on_create["Job"] = jobs_finish(
        lambda command: ("Complete", "", 0, "2 passed in 0.31s\n")
    )
    original = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert original is not None
    spec, box = task_sandbox(tiny, "fix-cart")
    services = LocalIntegration()
    try:
        commit = change(box, "cart/pricing.py", "BULK_DISCOUNT = 0.9\n")
        runner, gate = runner_for(services, spec, box, tiny.root / "logs")
        record, problems = runner.run_once(gate, 1, "attempt")
        assert (record.passed, record.exit_code, problems) == (True, 0, [])
        assert record.command == COMMAND and record.counts == {"passed": 2}
        assert record.log is not None and "2 passed" in Path(record.log).read_text("utf-8")

        # Only cart (the changed service) is forked, from the task's commit, and routed first.
        key = routing_key("r1", "fix-cart")
        who = m.ForkIdentity("r1", "fix-cart", key)
        forks = [
            d for d in emulator.all("Deployment") if m.LABEL_SANDBOX in d["metadata"]["labels"]
        ]
        assert [d["metadata"]["name"] for d in forks] == [
            m.fork_name(who, service_map().get("cart"))
        ]
        containers = forks[0]["spec"]["template"]["spec"]["containers"]
        assert containers[0]["image"] == f"registry.example/cart:{commit}"
        vs = emulator.get("VirtualService", NAMESPACE, "cart-routes")
        assert vs is not None
        assert [r["name"] for r in vs["spec"]["http"]] == [who.route_name, "canary", "default"]
        # The Job ran the gate's command with the routing key, owned by the sandbox's owner.
        [job] = emulator.all("Job")
        assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == COMMAND
        env = job_env(job)
        assert env["HARNESS_ROUTING_KEY"] == key
        assert env["HARNESS_BAGGAGE"] == f"harness-routing-key={key}"
        assert env["HARNESS_SANDBOXED"] == "cart"
        owner = emulator.get("ConfigMap", NAMESPACE, who.owner_name)
        assert owner is not None
        assert [r["uid"] for r in job["metadata"]["ownerReferences"]] == [owner["metadata"]["uid"]]

        # The same commit again (the verify phase): the applied sandbox is kept, a new Job runs.
        again, _ = runner.run_once(gate, 1, "verify")
        assert again.passed
        assert (posts(emulator, "deployments"), posts(emulator, "jobs")) == (1, 2)

        services.release("fix-cart")  # the task's teardown
        assert harness_objects(emulator) == []
        restored = emulator.get("VirtualService", NAMESPACE, "cart-routes")
        assert restored is not None and spec_of(restored) == spec_of(original)
        assert sorted(d["metadata"]["name"] for d in emulator.all("Deployment")) == [
            "cart",
            "front",
            "pricing",
        ]
        assert services.kubernetes.fork("fix-cart") is None
    finally:
        services.stop()
        box.teardown()


def test_a_failing_job_fails_the_gate_with_its_log_and_a_new_commit_gets_a_fresh_fork(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path, failing_tests_log: str
) -> None:
    emulator.on_create["Deployment"] = rolls_out
    emulator.on_create["Job"] = jobs_finish(
        lambda command: ("Failed", "BackoffLimitExceeded", 1, failing_tests_log)
    )
    spec, box = task_sandbox(tiny, "fix-cart")
    services = LocalIntegration()
    try:
        change(box, "cart/pricing.py", "BULK_DISCOUNT = 1.0\n")
        runner, gate = runner_for(services, spec, box, tiny.root / "logs")
        record, problems = runner.run_once(gate, 1, "attempt")
        assert (record.passed, record.exit_code, record.infrastructure_failure) == (False, 1, False)
        assert record.counts == {"failed": 1, "passed": 1}
        [problem] = problems
        assert problem.category == "agent_fixable" and problem.command == COMMAND
        assert problem.test_id == "tests/integration/test_cart.py::test_bulk_orders_are_discounted"
        assert "bulk order priced at the old rate" in problem.detail  # the Job's log lines
        log = Path(record.log or "").read_text("utf-8")
        assert log.startswith("[harness] test Job shop-staging/harness-it-")
        assert "Failed: BackoffLimitExceeded, exit code 1" in log and "1 failed" in log

        # The agent's next commit: the old fork goes, a fork of the new commit comes.
        commit = change(box, "cart/pricing.py", "BULK_DISCOUNT = 0.9\n")
        runner.run_once(gate, 2, "attempt")
        forks = [
            d for d in emulator.all("Deployment") if m.LABEL_SANDBOX in d["metadata"]["labels"]
        ]
        [image] = [f["spec"]["template"]["spec"]["containers"][0]["image"] for f in forks]
        assert image == f"registry.example/cart:{commit}"
        assert posts(emulator, "deployments") == 2
        vs = emulator.get("VirtualService", NAMESPACE, "cart-routes")
        assert vs is not None
        assert sum(r["name"].startswith("harness:") for r in vs["spec"]["http"]) == 1
    finally:
        services.stop()
        box.teardown()
    assert harness_objects(emulator) == []  # the run's end tears down what teardown did not


def test_a_job_past_its_deadline_is_a_timed_out_gate_not_the_agents_failure(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path
) -> None:
    emulator.on_create["Deployment"] = rolls_out
    emulator.on_create["Job"] = jobs_finish(
        lambda command: ("Failed", "DeadlineExceeded", 137, "running...\n")
    )
    spec, box = task_sandbox(tiny, "fix-cart")
    services = LocalIntegration()
    try:
        change(box, "cart/pricing.py", "BULK_DISCOUNT = 0.9\n")
        runner, gate = runner_for(services, spec, box, tiny.root / "logs")
        record, [problem] = runner.run_once(gate, 1, "attempt")
        assert not record.passed and record.timed_out and record.infrastructure_failure
        assert (problem.category, problem.command) == ("infrastructure", COMMAND)
        assert "timed out" in problem.title
    finally:
        services.stop()
        box.teardown()


def test_a_crash_looping_fork_is_a_setup_failure_with_its_log_and_no_job_runs(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path
) -> None:
    emulator.on_create["Deployment"] = fails_with("CrashLoopBackOff", "back-off 40s", CRASH_LOG)
    spec, box = task_sandbox(tiny, "fix-cart")
    services = LocalIntegration()
    try:
        change(box, "cart/pricing.py", "BULK_DISCOUNT = 0.9\n")
        runner, gate = runner_for(services, spec, box, tiny.root / "logs")
        record, [problem] = runner.run_once(gate, 1, "attempt")
        assert not record.passed and record.infrastructure_failure
        assert record.setup_failure is not None
        assert record.setup_failure.startswith("fork shop-staging/cart-sb-")
        assert "container cart: CrashLoopBackOff: back-off 40s" in record.setup_failure
        assert record.setup_failure.endswith("its log ends: KeyError: 'CART_DB_URL'")
        assert (problem.category, problem.owner_action_required) == ("infrastructure", True)
        assert "previous instance of pod" in problem.detail and "booting 59" in problem.detail
        assert problem.log and "KeyError" in Path(problem.log).read_text("utf-8")
        assert emulator.all("Job") == []
        services.release("fix-cart")
        assert harness_objects(emulator) == []
    finally:
        services.stop()
        box.teardown()


def test_a_change_touching_no_service_does_not_apply_and_calls_no_cluster(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path
) -> None:
    spec, box = task_sandbox(tiny, "docs-only")
    services = LocalIntegration()
    try:
        change(box, "README.md", "# tiny, documented\n")
        runner, gate = runner_for(services, spec, box, tiny.root / "logs")
        record, problems = runner.run_once(gate, 1, "attempt")
        assert (record.passed, record.exit_code, problems) == (True, None, [])
        assert record.not_applicable and "touches no service" in record.not_applicable
        assert emulator.requests == []
    finally:
        services.stop()
        box.teardown()


# --- `harness run`, end to end ------------------------------------------------------------------


def write_cart(content: str) -> dict[str, Any]:
    return {"tool": "write_file", "args": {"path": "cart/pricing.py", "content": content}}


def run_cart_task(tiny: TinyProject, emulator: KubeEmulator) -> dict[str, Any]:
    """One task changing cart, two attempts at most, its only gate the integration gate."""
    tiny.write_policy(gates=[GATE], integration=config().model_dump(mode="json", exclude_none=True))
    attempts = [[write_cart("BULK = 1.0\n"), FINISH], [write_cart("BULK = 0.9\n"), FINISH]]
    tiny.add_spec("fix-cart", attempts=attempts)
    original = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    tiny.run()
    # Whatever happened, the run leaves no harness object and the team's routes as they were.
    assert harness_objects(emulator) == []
    restored = emulator.get("VirtualService", NAMESPACE, "cart-routes")
    assert original is not None and restored is not None
    assert spec_of(restored) == spec_of(original)
    return tiny.task("fix-cart")


def jobs(outcome: Outcome) -> Callable[[str], Outcome]:
    return lambda command: outcome


def test_harness_run_verifies_a_task_whose_job_passes(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path
) -> None:
    emulator.on_create["Deployment"] = rolls_out
    emulator.on_create["Job"] = jobs_finish(jobs(("Complete", "", 0, "2 passed in 0.4s\n")))
    task = run_cart_task(tiny, emulator)
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    ran = [(g["phase"], g["exit_code"], g["passed"], g["counts"]) for g in task["gates"]]
    assert ran == [("attempt", 0, True, {"passed": 2}), ("verify", 0, True, {"passed": 2})]
    gates_dir = tiny.runs / "r1" / "tasks" / "fix-cart" / "gates"
    assert "2 passed" in (gates_dir / "verify-1-integration.log").read_text("utf-8")
    # One sandbox for the commit, a Job per gate run, the key in each.
    assert (posts(emulator, "deployments"), posts(emulator, "jobs")) == (1, 2)


def test_harness_run_feeds_a_failing_job_back_then_escalates_with_its_log(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path, failing_tests_log: str
) -> None:
    emulator.on_create["Deployment"] = rolls_out
    failed = ("Failed", "BackoffLimitExceeded", 1, failing_tests_log)
    emulator.on_create["Job"] = jobs_finish(jobs(failed))
    task = run_cart_task(tiny, emulator)
    assert (task["outcome"], task["attempts"]) == ("escalated", 2)
    assert task["reason"].startswith("budget exhausted: gate 'integration' still failing")
    feedback = (tiny.runs / "r1" / "tasks" / "fix-cart" / "feedback-1.md").read_text("utf-8")
    assert "test_bulk_orders_are_discounted" in feedback
    assert "bulk order priced at the old rate" in feedback  # the Job's log, told to the agent
    [problem] = escalation_problems(tiny.runs / "r1" / "escalations" / "fix-cart.md")
    assert problem["category"] == "agent_fixable"
    assert "bulk order priced at the old rate" in problem["detail"]
    assert posts(emulator, "deployments") == 2  # one fork per attempt's commit


def test_harness_run_escalates_a_crash_looping_fork_as_infrastructure(
    tiny: TinyProject, emulator: KubeEmulator, kubeconfig: Path
) -> None:
    emulator.on_create["Deployment"] = fails_with("CrashLoopBackOff", "back-off 40s", CRASH_LOG)
    task = run_cart_task(tiny, emulator)
    assert (task["outcome"], task["attempts"]) == ("escalated", 1)  # not charged to the agent
    reason = task["reason"]
    assert reason.startswith("infrastructure: gate 'integration' could not be set up: ")
    assert "CrashLoopBackOff" in reason and "KeyError: 'CART_DB_URL'" in reason
    [problem] = escalation_problems(tiny.runs / "r1" / "escalations" / "fix-cart.md")
    assert problem["category"] == "infrastructure" and "booting 59" in problem["detail"]
    assert posts(emulator, "jobs") == 0
