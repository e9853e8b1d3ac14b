"""Harness overhead per task: the demo batch at concurrency 4, minus agent and gate time.

Each repeat copies /work/main's examples/, specs/ and policies/ into a fresh temporary git
repository and runs, there, as a subprocess:

    harness run specs --policy policies/demo.yaml --concurrency 4
        --runs-dir <tmp>/runs --run-id bench        (one command line)

From runs/bench/summary.json, per task: overhead = duration_s - agent_s - gates_s, i.e. wall time
of the task not spent inside an agent attempt or a gate command (gate time includes bubblewrap
start-up, so that is *not* counted as overhead here). The median over the repeats is reported
per task.

events.jsonl (enter/exit per node, millisecond timestamps) splits the overhead by where it was
spent: in each node minus the agent/gate time inside it, between nodes (LangGraph), and outside
the task graph (before the first node, after the last).

    .venv/bin/python bench/overhead.py [--repeats 3] [--concurrency 4] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import host

SOURCE = Path(__file__).resolve().parent.parent
HARNESS = SOURCE / ".venv" / "bin" / "harness"
GOAL_SHARE = 0.05
GIT_IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "*.pyc"
)
# Where overhead goes, in pipeline order; "agent"/"gates"/"verify" mean that node's time minus the
# agent attempts or gate commands inside it.
PLACES = [
    "outside graph",
    "triage",
    "provision",
    "agent",
    "gates",
    "feedback",
    "guard",
    "verify",
    "publish",
    "escalate",
    "teardown",
    "between nodes",
]


@dataclass
class TaskFigures:
    """One task of one batch, in seconds unless named _ms."""

    spec_id: str
    outcome: str
    attempts: int
    duration_s: float
    agent_s: float
    gates_s: float
    overhead_s: float
    base_check_s: float = 0.0
    """Of gates_s: labelling a failing gate's problems against the base commit (a base worktree
    provisioned, the gate run there, torn down; or waiting for another task's shared base run).
    graphs/task.py counts it as gate time, and no gate record in summary.json covers it."""
    places_ms: dict[str, float] = field(default_factory=dict)
    """Overhead by where it was spent (see PLACES); sums to overhead_s up to ms rounding."""

    @property
    def share(self) -> float:
        return self.overhead_s / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class BatchFigures:
    wall_s: float
    """The `harness run` process, start to exit (imports, all tasks, summary)."""
    startup_s: float
    """Process start to the first node's enter event: Python imports, spec and policy loading."""
    tasks: list[TaskFigures]


def prepare(work: Path) -> None:
    """A git repository holding copies of the demo's examples/, specs/ and policies/."""
    for folder in ("examples", "specs", "policies"):
        shutil.copytree(SOURCE / folder, work / folder, ignore=COPY_IGNORE)
    for args in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "demo"]):
        subprocess.run(["git", *GIT_IDENTITY, *args], cwd=work, check=True, capture_output=True)


def run_batch(work: Path, concurrency: int) -> BatchFigures:
    runs = work / "runs"
    argv = [str(HARNESS), "run", "specs", "--policy", "policies/demo.yaml"]
    argv += ["--concurrency", str(concurrency), "--runs-dir", str(runs), "--run-id", "bench"]
    spawned = time.time()
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"harness run exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    run_dir = runs / "bench"
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    events = [
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    first_event = min(_ts(e) for e in events)
    tasks = [_task_figures(task, events, run_dir) for task in summary["tasks"]]
    return BatchFigures(wall_s=wall_s, startup_s=first_event - spawned, tasks=tasks)


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def _task_figures(task: dict[str, Any], events: list[dict[str, Any]], run_dir: Path) -> TaskFigures:
    spec_id = task["spec_id"]
    duration, agent, gates = task["duration_s"], task["agent_s"], task["gates_s"]
    mine = [e for e in events if e["spec_id"] == spec_id]
    # Nodes of one task run one after another, so enters and exits pair up in order.
    node_s: dict[str, float] = defaultdict(float)
    opened: dict[str, float] = {}
    for event in mine:
        if event["event"] == "enter":
            opened[event["node"]] = _ts(event)
        elif event["event"] == "exit":
            node_s[event["node"]] += _ts(event) - opened.pop(event["node"])
    unknown = sorted(set(node_s) - set(PLACES))
    if unknown:  # its time would silently drop out of the breakdown
        raise RuntimeError(f"task graph nodes missing from PLACES: {unknown}")
    span = _ts(mine[-1]) - _ts(mine[0])
    gate_by_phase: dict[str, float] = defaultdict(float)
    for gate in task["gates"]:
        gate_by_phase[gate["phase"]] += gate["duration_s"]
    # gates_s minus every gate record: the base-commit check, timed inside the gates node.
    base_check = max(0.0, gates - sum(gate_by_phase.values()))
    attempts_s = sum(
        json.loads(path.read_text(encoding="utf-8"))["duration_s"]
        for path in (run_dir / "tasks" / spec_id).glob("attempt-*.json")
    )
    places = {
        "outside graph": duration - span,
        "between nodes": span - sum(node_s.values()),
    }
    inner = {
        "agent": attempts_s,
        "gates": gate_by_phase["attempt"] + base_check,
        "verify": gate_by_phase["verify"],
    }
    for name in PLACES:
        if name in node_s:
            places[name] = node_s[name] - inner.get(name, 0.0)
    return TaskFigures(
        spec_id=spec_id,
        outcome=task["outcome"],
        attempts=task["attempts"],
        duration_s=duration,
        agent_s=agent,
        gates_s=gates,
        overhead_s=duration - agent - gates,
        base_check_s=base_check,
        places_ms={k: round(v * 1000, 1) for k, v in places.items()},
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def aggregate(batches: list[BatchFigures]) -> dict[str, Any]:
    """Per task, the median over the repeats of each figure; then means over tasks."""
    by_task: dict[str, list[TaskFigures]] = defaultdict(list)
    for batch in batches:
        for task in batch.tasks:
            by_task[task.spec_id].append(task)
    tasks: list[dict[str, Any]] = []
    for spec_id, runs in by_task.items():
        places = {
            p: round(_median([r.places_ms.get(p, 0.0) for r in runs]), 1)
            for p in PLACES
            if any(p in r.places_ms for r in runs)
        }
        tasks.append(
            {
                "spec_id": spec_id,
                "outcomes": sorted({r.outcome for r in runs}),
                "attempts": _median([r.attempts for r in runs]),
                "duration_s": round(_median([r.duration_s for r in runs]), 3),
                "agent_s": round(_median([r.agent_s for r in runs]), 3),
                "gates_s": round(_median([r.gates_s for r in runs]), 3),
                "base_check_s": round(_median([r.base_check_s for r in runs]), 3),
                "overhead_ms": round(_median([r.overhead_s * 1000 for r in runs]), 1),
                "overhead_ms_all": [round(r.overhead_s * 1000, 1) for r in runs],
                "share": round(_median([r.share for r in runs]), 4),
                "share_all": [round(r.share, 4) for r in runs],
                "ran_agent": all(r.attempts > 0 for r in runs),
                "places_ms": places,
            }
        )
    mean_share = statistics.fmean(t["share"] for t in tasks)
    agent_tasks = [t for t in tasks if t["ran_agent"]]
    mean_share_agent = statistics.fmean(t["share"] for t in agent_tasks) if agent_tasks else 0.0
    total_overhead = sum(t["overhead_ms"] for t in tasks) / 1000
    total_duration = sum(t["duration_s"] for t in tasks)
    places_total = {
        p: round(sum(t["places_ms"].get(p, 0.0) for t in tasks), 1)
        for p in PLACES
        if any(p in t["places_ms"] for t in tasks)
    }
    return {
        "tasks": tasks,
        "mean_share": round(mean_share, 4),
        "mean_share_agent_tasks": round(mean_share_agent, 4),
        "pooled_share": round(total_overhead / total_duration, 4) if total_duration else 0.0,
        "places_ms_total": places_total,
        "wall_s": [round(b.wall_s, 2) for b in batches],
        "startup_s": [round(b.startup_s, 2) for b in batches],
    }


def run(repeats: int = 3, concurrency: int = 4, keep: bool = False) -> dict[str, Any]:
    if not HARNESS.exists():
        raise RuntimeError(f"{HARNESS} not found; run `make setup` first")
    load_before = host.load()
    started = time.perf_counter()
    batches = []
    for n in range(repeats):
        work = Path(tempfile.mkdtemp(prefix=f"harness-bench-overhead-{n}-"))
        try:
            prepare(work)
            batches.append(run_batch(work, concurrency))
        finally:
            if keep:
                print(f"kept {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    result = aggregate(batches)
    return {
        "benchmark": "overhead",
        "repeats": repeats,
        "concurrency": concurrency,
        "command": "harness run specs --policy policies/demo.yaml --concurrency "
        f"{concurrency} --runs-dir <tmp>/runs --run-id bench",
        "elapsed_s": round(time.perf_counter() - started, 1),
        **result,
        "goal": {"metric": "mean overhead share of task duration", "target": GOAL_SHARE},
        "goal_met": result["mean_share"] <= GOAL_SHARE,
        "goal_met_agent_tasks": result["mean_share_agent_tasks"] <= GOAL_SHARE,
        "load_before": load_before,
        "load_after": host.load(),
        "batches": [
            {**asdict(b), "tasks": [asdict(t) | {"share": t.share} for t in b.tasks]}
            for b in batches
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Overhead: demo batch, concurrency {result['concurrency']}, median of "
        f"{result['repeats']} batches (batch wall s: {result['wall_s']}; process start → first "
        f"node s: {result['startup_s']}), {result['elapsed_s']} s",
        "",
        "| task | outcome | attempts | duration s | agent s | gates s | of which base check s "
        "| overhead ms | share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in result["tasks"]:
        lines.append(
            f"| {t['spec_id']} | {'/'.join(t['outcomes'])} | {t['attempts']:g} "
            f"| {t['duration_s']:.2f} | {t['agent_s']:.2f} | {t['gates_s']:.2f} "
            f"| {t['base_check_s']:.2f} | {t['overhead_ms']:.0f} | {t['share']:.1%} |"
        )
    lines += [
        "",
        f"Mean share, all tasks: {result['mean_share']:.1%}; tasks that ran an agent: "
        f"{result['mean_share_agent_tasks']:.1%}; pooled (Σ overhead / Σ duration): "
        f"{result['pooled_share']:.2%}. Goal ≤ {GOAL_SHARE:.0%}: "
        f"{'met' if result['goal_met'] else 'NOT met'} (all tasks), "
        f"{'met' if result['goal_met_agent_tasks'] else 'NOT met'} (agent tasks).",
        "",
        "Where the overhead goes (ms; medians over the repeats, so a row need not add up exactly",
        "to the task's overhead; node names mean the node's time minus agent/gate time inside it):",
        "",
        *_places_table(result),
        "",
        host.describe_load(result["load_before"], result["load_after"]),
    ]
    return "\n".join(lines)


def _places_table(result: dict[str, Any]) -> list[str]:
    places = list(result["places_ms_total"])
    lines = ["| task | " + " | ".join(places) + " |", "|---|" + "---:|" * len(places)]
    for task in result["tasks"]:
        cells = [f"{task['places_ms'][p]:.0f}" if p in task["places_ms"] else "-" for p in places]
        lines.append(f"| {task['spec_id']} | " + " | ".join(cells) + " |")
    totals = [f"**{v:.0f}**" for v in result["places_ms_total"].values()]
    lines.append("| **all tasks** | " + " | ".join(totals) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Harness overhead per task, demo batch.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.concurrency, args.keep)
    return host.report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
