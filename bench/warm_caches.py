"""Issue 18, item 2: the demo's first-attempt gate time against its second attempt's, with warm
gate caches (the demo policy as shipped) and without (the same policy with `cache_dirs: []` on
every gate), side by side: each repeat runs both, in alternating order, each on a fresh copy of
the demo (overhead.prepare), as

    harness run specs --policy policies/<demo|demo-cold>.yaml --concurrency 4
        --runs-dir <tmp>/runs --run-id bench

Per task with two attempts (fix-pagination, round-tax-per-line), from runs/bench:
- `tools`: the gates that ran in both attempts, their records' durations less their set-up
  time, summed (summary.json): the tools' own time, the figure the issue quotes (mypy 5.3 s then
  0.4 s);
- `seed`: those gates' set-up time: seeding their caches, with waiting for their base runs
  (which the replay agent, done in milliseconds, does not hide as a model's minutes would);
- `phase`: the `gates` node's wall time (events.jsonl): the whole gate phase, with waiting for
  the base runs, seeding the caches, and comparing with the base.
Each is reported as attempt 1, attempt 2 and their ratio (median over repeats, with the range).

    .venv/bin/python bench/warm_caches.py [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import host
import overhead
import yaml

SIDES = ("warm", "cold")


def cold_policy(work: Path) -> Path:
    """policies/demo.yaml with `cache_dirs: []` on every gate: no warm cache anywhere."""
    policy = yaml.safe_load((work / "policies/demo.yaml").read_text(encoding="utf-8"))
    for gate in policy["gates"]:
        gate["cache_dirs"] = []
    path = work / "policies/demo-cold.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    return path


def one_run(side: str) -> dict[str, dict[str, list[float]]]:
    """One demo run; per two-attempt task: tools and phase seconds of attempts 1 and 2."""
    with tempfile.TemporaryDirectory(prefix="bench-warm-caches-") as tmp:
        work = Path(tmp)
        overhead.prepare(work)
        policy = "policies/demo.yaml" if side == "warm" else str(cold_policy(work))
        argv = [str(overhead.HARNESS), "run", "specs", "--policy", policy, "--concurrency", "4"]
        argv += ["--runs-dir", str(work / "runs"), "--run-id", "bench"]
        done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"harness run exited {done.returncode}:\n{done.stderr[-2000:]}")
        run_dir = work / "runs" / "bench"
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        events = [
            json.loads(line)
            for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    figures: dict[str, dict[str, list[float]]] = {}
    for task in summary["tasks"]:
        runs = [g for g in task["gates"] if g.get("phase", "attempt") == "attempt"]
        by_attempt = [{g["name"]: g for g in runs if g["attempt"] == n} for n in (1, 2)]
        both = [name for name in by_attempt[0] if name in by_attempt[1]]
        if not both:
            continue
        own = [[by_attempt[n][name] for name in both] for n in (0, 1)]
        figures[task["spec_id"]] = {
            "tools": [sum(g["duration_s"] - g.get("setup_s", 0.0) for g in gs) for gs in own],
            "seed": [sum(g.get("setup_s", 0.0) for g in gs) for gs in own],
            "phase": _phases(events, task["spec_id"]),
        }
    return figures


def _phases(events: list[dict[str, Any]], spec_id: str) -> list[float]:
    """The first two `gates` nodes' wall times of a task."""
    times = [
        (datetime.fromisoformat(e["ts"]).timestamp(), e["event"])
        for e in events
        if e["spec_id"] == spec_id and e["node"] == "gates"
    ]
    enters = [t for t, kind in times if kind == "enter"]
    exits = [t for t, kind in times if kind == "exit"]
    return [out - start for start, out in zip(enters, exits, strict=False)][:2]


def summarise(runs: list[dict[str, dict[str, list[float]]]]) -> dict[str, Any]:
    tasks = sorted({spec for run in runs for spec in run})
    result: dict[str, Any] = {}
    for spec in tasks:
        for kind in ("tools", "seed", "phase"):
            pairs = [run[spec][kind] for run in runs if spec in run and len(run[spec][kind]) == 2]
            if not pairs:
                continue
            ratios = [first / second for first, second in pairs if second > 0] or [float("nan")]
            result[f"{spec} {kind}"] = {
                "first_s": statistics.median(p[0] for p in pairs),
                "second_s": statistics.median(p[1] for p in pairs),
                "ratio": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
                "n": len(pairs),
            }
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['repeats']} repeats, sides alternating; {result['load']}",
        "",
        "| task, what | side | attempt 1 (s) | attempt 2 (s) | 1st / 2nd (range) |",
        "|---|---|---:|---:|---:|",
    ]
    for key in result["sides"]["warm"]:
        for side in SIDES:
            row = result["sides"][side].get(key)
            if row is None:
                continue
            low, high = row["ratio_range"]
            lines.append(
                f"| {key} | {side} | {row['first_s']:.2f} | {row['second_s']:.2f} | "
                f"{row['ratio']:.2f}x ({low:.2f}-{high:.2f}) |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    before = host.load()
    runs: dict[str, list[dict[str, dict[str, list[float]]]]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in SIDES if repeat % 2 == 0 else tuple(reversed(SIDES)):
            runs[side].append(one_run(side))
            print(f"repeat {repeat + 1} {side}: {runs[side][-1]}", file=sys.stderr)
    result = {
        "repeats": args.repeats,
        "sides": {side: summarise(runs[side]) for side in SIDES},
        "runs": runs,
        "load": host.describe_load(before, host.load()),
    }
    return host.report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
