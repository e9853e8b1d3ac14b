"""Integration sandboxes, local backend, on examples/mesh (front → catalog → pricing):

1. ready time: a task's sandbox with one changed Python service (pricing), from asking for it
   (`IntegrationGates.prepare`: diff → changed services → start under bubblewrap → health →
   route) to routed and healthy, over a warm shared baseline; p50/p95 over N fresh tasks.
2. 20 sandboxes at once on one baseline, each with its own change to pricing, each running an
   integration gate (pytest, in its sandbox) that checks its keyed quote comes from its own
   pricing and a concurrent keyless quote from the baseline: correct gates / 20.
3. memory with those 20 up: RSS (and PSS) summed over every service process (bubblewrap, sh,
   python) of the baseline and the 20 sandboxes, against 20 full copies of the stack started
   for real (each all three services); their ratio.

    .venv/bin/python bench/services.py [--iterations 30] [--sandboxes 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import host
from stats import percentile

from harness.config.policy import GateConfig
from harness.config.spec import Spec, load_spec
from harness.gates.runner import GateRunner
from harness.integration.config import IntegrationConfig
from harness.integration.gate import IntegrationGates
from harness.integration.local import LocalIntegration, TaskFork
from harness.integration.processes import descendants
from harness.integration.routing_key import routing_key
from harness.integration.servicemap import load_service_map
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.local import WorktreeSandbox

ROOT = Path(__file__).resolve().parents[1]
GOAL_READY_MS = 1000.0
CONFIG = IntegrationConfig(services_file="harness-services.yaml")
GATE = GateConfig(name="integration", kind="integration", command="pytest -q integration")
IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
BASE_TOTAL = "return unit_cents * quantity\n"
CHECK = """from concurrent.futures import ThreadPoolExecutor

from mesh_client import Mesh


def test_own_pricing_with_the_key_baseline_without(mesh: Mesh) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        keyed = pool.submit(mesh.get, "/quote/MUG?qty=2", keyed=True)
        plain = pool.submit(mesh.get, "/quote/MUG?qty=2", keyed=False)
        assert keyed.result()["total_cents"] == 2500 - {cents}
        assert plain.result()["total_cents"] == 2500
"""


class Mesh:
    """examples/mesh copied into a throwaway git repository, with specs beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "mesh"
        shutil.copytree(ROOT / "examples" / "mesh", self.repo)
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "m"]):
            subprocess.run(["git", *IDENTITY, *args], cwd=self.repo, check=True)
        self.run_dir = root / "runs" / "bench"

    def spec(self, spec_id: str) -> Spec:
        path = self.root / "specs" / f"{spec_id}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            f"---\nid: {spec_id}\ntitle: bench\ntier: 1\nrepo: ../mesh\n---\nBench.\n", "utf-8"
        )
        return load_spec(path)

    def sandbox(self, spec: Spec, cents: int) -> WorktreeSandbox:
        """A worktree whose pricing charges `cents` less per line, with a test checking it."""
        box = WorktreeSandbox.provision(
            spec,
            f"bench/{spec.id}",
            self.run_dir / "worktrees" / spec.id,
            self.run_dir / "scratch" / spec.id,
        )
        pricing = box.read("mesh/pricing.py")
        # Lines of 2 or more only: the mesh's own test of a single unit still holds.
        changed = f"{BASE_TOTAL[:-1]} - ({cents} if quantity > 1 else 0)\n"
        box.write("mesh/pricing.py", pricing.replace(BASE_TOTAL, changed))
        box.write(
            f"integration/test_bench_{spec.id.replace('-', '_')}.py", CHECK.format(cents=cents)
        )
        box.worktree.commit_all("bench change")
        return box

    def gates(
        self, services: LocalIntegration, spec: Spec, box: WorktreeSandbox
    ) -> IntegrationGates:
        return IntegrationGates(
            services,
            spec,
            box,
            CONFIG,
            run_id="bench",
            run_dir=self.run_dir,
            log_dir=self.run_dir / "tasks" / spec.id,
        )

    def fork(self, services: LocalIntegration, spec: Spec) -> TaskFork:
        """The task's sandbox that its gate's `prepare` made (`sandbox()` returns that one)."""
        service_map = load_service_map(spec, CONFIG)
        assert service_map is not None
        key = routing_key("bench", spec.id)
        return services.fork(spec, service_map, CONFIG, key=key, run_dir=self.run_dir)


def ready_times(mesh: Mesh, services: LocalIntegration, iterations: int) -> dict[str, Any]:
    """Fresh tasks (new routing keys) over one worktree with pricing changed."""
    spec = mesh.spec("ready")
    box = mesh.sandbox(spec, cents=1)
    started = time.perf_counter()
    mesh.gates(services, spec, box).prepare(GATE)  # starts the baseline: not counted
    baseline_ms = (time.perf_counter() - started) * 1000
    services.release(spec.id)
    totals: list[float] = []
    healthy: list[float] = []
    try:
        for n in range(iterations + 3):
            task = spec.model_copy(update={"id": f"ready-{n}"})
            started = time.perf_counter()
            mesh.gates(services, task, box).prepare(GATE)
            elapsed = (time.perf_counter() - started) * 1000
            [process] = mesh.fork(services, task).processes.values()
            services.release(task.id)
            if n >= 3 and process.ready_s is not None:  # 3 warm-ups: page cache, imports
                totals.append(elapsed)
                healthy.append(process.ready_s * 1000)
    finally:
        box.teardown()
    return {
        "baseline_first_start_ms": round(baseline_ms, 1),
        "prepare_ms": _describe(totals),
        "start_to_healthy_ms": _describe(healthy),
    }


def concurrent_sandboxes(mesh: Mesh, services: LocalIntegration, count: int) -> dict[str, Any]:
    """`count` tasks at once, each: prepare its sandbox, run its integration gate."""
    specs = [mesh.spec(f"task-{n:02d}") for n in range(count)]
    boxes = [mesh.sandbox(spec, cents=n + 1) for n, spec in enumerate(specs)]

    def one(n: int) -> tuple[bool, float, str]:
        gates = mesh.gates(services, specs[n], boxes[n])
        [gate] = gates.gates([GATE])
        logs = mesh.run_dir / "gates" / specs[n].id
        runner = GateRunner(boxes[n], log_dir=logs, instance="bench", prepare=gates.prepare)
        record, _ = runner.run_once(gate, attempt=1, phase="attempt")
        # The mesh's 2 routing tests and this sandbox's own check, all passed.
        correct = record.passed and record.counts.get("passed") == 3
        return correct, record.setup_s, record.excerpt[-400:]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count)))
    wall = time.perf_counter() - started
    shared = _memory([mesh.fork(services, spec) for spec in specs])  # while all are still up
    return {
        "sandboxes": count,
        "correct": sum(ok for ok, _, _ in results),
        "wall_s": round(wall, 1),
        "ready_under_load_ms": _describe([setup * 1000 for _, setup, _ in results]),
        "failures": [tail for ok, _, tail in results if not ok][:3],
        "shared": shared,
        "_boxes": boxes,
    }


def full_copies(mesh: Mesh, count: int) -> dict[str, float]:
    """`count` whole stacks (every service), each as its own baseline; their memory."""
    spec = mesh.spec("copy")
    service_map = load_service_map(spec, CONFIG)
    assert service_map is not None
    stacks: list[LocalIntegration] = []
    forks: list[TaskFork] = []
    try:
        for n in range(count):
            stack = LocalIntegration()  # its own baseline: every service, nothing shared
            stacks.append(stack)
            run_dir = mesh.root / str(n)
            forks.append(stack.sandbox(spec, service_map, CONFIG, key=f"copy-{n}", run_dir=run_dir))
        totals = [_memory([fork]) for fork in forks]
        return {key: round(sum(t[key] for t in totals), 1) for key in totals[0]}
    finally:
        for stack in stacks:
            stack.stop()


def _memory(forks: list[TaskFork]) -> dict[str, float]:
    """RSS and PSS (MiB) summed over every service process of `forks` and their baselines
    (each counted once: sandboxes share one)."""
    baselines = {id(fork.baseline): fork.baseline for fork in forks}.values()
    stacks = [fork.processes for fork in forks] + [b.processes for b in baselines]
    pids: set[int] = set()
    for process in (process for processes in stacks for process in processes.values()):
        pids |= {process.process.pid, *descendants(process.process.pid)}
    rss = pss = 0
    for pid in pids:
        rss += _kib(f"/proc/{pid}/status", "VmRSS:")
        pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss:")
    return {
        "processes": len(pids),
        "rss_mib": round(rss / 1024, 1),
        "pss_mib": round(pss / 1024, 1),
    }


def _kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _describe(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def run(iterations: int = 30, sandboxes: int = 20) -> dict[str, Any]:
    if not bwrap.probe().available:
        raise RuntimeError(f"bubblewrap is needed: {bwrap.probe().reason}")
    work = Path(tempfile.mkdtemp(prefix="harness-bench-services-"))
    services = LocalIntegration()
    boxes: list[WorktreeSandbox] = []
    try:
        mesh = Mesh(work)
        result: dict[str, Any] = {"load_before": host.load()}
        result["ready"] = ready_times(mesh, services, iterations)
        concurrent = concurrent_sandboxes(mesh, services, sandboxes)
        boxes = concurrent.pop("_boxes")
        result["concurrent"] = concurrent
        result["full_copies"] = full_copies(mesh, sandboxes)
        shared, full = concurrent["shared"], result["full_copies"]
        result["memory_ratio"] = {
            "rss": round(shared["rss_mib"] / full["rss_mib"], 3),
            "pss": round(shared["pss_mib"] / full["pss_mib"], 3),
        }
        result["load_after"] = host.load()
        return result
    finally:
        services.stop()
        for box in boxes:
            box.teardown()
        shutil.rmtree(work, ignore_errors=True)


def markdown(result: dict[str, Any]) -> str:
    ready, conc, full = result["ready"], result["concurrent"], result["full_copies"]
    n = conc["sandboxes"]

    def spread(figures: dict[str, float]) -> str:
        return f"{figures['p50']} / {figures['p95']} ms (n={figures['n']})"

    def memory(figures: dict[str, float]) -> str:
        return (
            f"RSS {figures['rss_mib']} MiB, PSS {figures['pss_mib']} MiB "
            f"({figures['processes']:.0f} processes)"
        )

    goal = "met" if ready["prepare_ms"]["p50"] < GOAL_READY_MS else "NOT met"
    ratio = result["memory_ratio"]
    rows = [
        ("sandbox ready, 1 changed Python service, p50 / p95", spread(ready["prepare_ms"])),
        (f"goal: p50 under {GOAL_READY_MS:.0f} ms", goal),
        ("of which process start → healthy, p50 / p95", spread(ready["start_to_healthy_ms"])),
        ("baseline (3 services) first start", f"{ready['baseline_first_start_ms']} ms"),
        (f"{n} sandboxes at once: integration gates correct", f"{conc['correct']}/{n}"),
        (f"{n} sandboxes at once: wall time, all gates", f"{conc['wall_s']} s"),
        ("sandbox ready under that load, p50 / p95", spread(conc["ready_under_load_ms"])),
        (f"memory: 1 baseline + {n} sandboxes", memory(conc["shared"])),
        (f"memory: {n} full copies of the stack", memory(full)),
        ("memory ratio, shared / full copies", f"RSS {ratio['rss']}, PSS {ratio['pss']}"),
    ]
    lines = ["### services: integration sandboxes over a shared baseline (examples/mesh)", ""]
    lines += ["| figure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--sandboxes", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.iterations, args.sandboxes)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
