"""Issue 18, item 4: gate time per verified task on the demo, before and after "no gate run twice
for nothing", with the warm gate caches (item 2) apart, side by side. Each repeat runs every
side, in rotating order, each on a fresh copy of the demo (overhead.prepare), as

    harness run specs --policy policies/<side>.yaml --concurrency 4
        --runs-dir <tmp>/runs --run-id bench

The sides are the shipped demo policy with switches set:
- `before`: `verify: {rerun: true}`, `flaky: {rerun: all}`, `cache_dirs: []` on every gate:
  verification runs every gate again, a flaky re-run runs the whole suite, caches start cold;
- `caches`: the same with the warm caches on (as shipped): item 2 alone;
- `after`: the demo policy as shipped: warm caches, verification reusing the last attempt's runs
  on the same tree, flaky re-runs of the failed tests only.

Per verified task, from runs/bench/summary.json: `gates_s` (harness's gate time: the gate
commands, the base runs they are compared with, seeding the caches) and the gate runs
recorded. Reported: the median over repeats of the mean per verified task; and, since a busy
host moves every side's wall times together, each repeat's ratios between sides measured in
that repeat (median and range over repeats): `after / before` is items 2 and 4 together,
`caches / before` item 2 alone, `after / caches` item 4's own share. Gate runs per task do not
depend on the host's load.

    .venv/bin/python bench/gate_reuse.py [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import host
import overhead
import yaml

SIDES = ("before", "caches", "after")


def side_policy(work: Path, side: str) -> Path:
    """policies/demo.yaml with the side's switches."""
    policy = yaml.safe_load((work / "policies/demo.yaml").read_text(encoding="utf-8"))
    if side in ("before", "caches"):
        policy["verify"] = {"rerun": True}
        policy["flaky"] = {"rerun": "all"}
    if side == "before":
        for gate in policy["gates"]:
            gate["cache_dirs"] = []
    path = work / f"policies/demo-{side}.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    return path


def one_run(side: str) -> dict[str, dict[str, float]]:
    """One demo run; per verified task: gate seconds, gate runs, wall seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-gate-reuse-") as tmp:
        work = Path(tmp)
        overhead.prepare(work)
        policy = side_policy(work, side)
        argv = [str(overhead.HARNESS), "run", "specs", "--policy", str(policy)]
        argv += ["--concurrency", "4", "--runs-dir", str(work / "runs"), "--run-id", "bench"]
        done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"harness run exited {done.returncode}:\n{done.stderr[-2000:]}")
        summary = json.loads((work / "runs/bench/summary.json").read_text(encoding="utf-8"))
    return {
        task["spec_id"]: {
            "gates_s": task["gates_s"],
            "gate_runs": len([g for g in task["gates"] if g.get("not_applicable") is None]),
            "duration_s": task["duration_s"],
            "attempts": task["attempts"],
        }
        for task in summary["tasks"]
        if task["outcome"] == "verified"
    }


def summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    per_run = [statistics.mean(t["gates_s"] for t in run.values()) for run in runs if run]
    tasks = sorted({spec for run in runs for spec in run})
    return {
        "mean_gates_s": statistics.median(per_run),
        "range": [min(per_run), max(per_run)],
        "tasks": {
            spec: {
                "gates_s": statistics.median(run[spec]["gates_s"] for run in runs if spec in run),
                "gate_runs": statistics.median(
                    run[spec]["gate_runs"] for run in runs if spec in run
                ),
                "attempts": runs[0][spec]["attempts"] if spec in runs[0] else None,
            }
            for spec in tasks
        },
    }


PAIRS = (("after", "before"), ("caches", "before"), ("after", "caches"))


def paired(runs: dict[str, list[dict[str, dict[str, float]]]]) -> dict[str, dict[str, Any]]:
    """Per pair of sides, each repeat's ratio of their mean gate time per verified task."""
    means = {
        side: [statistics.mean(t["gates_s"] for t in run.values()) for run in runs[side]]
        for side in SIDES
    }
    result = {}
    for top, bottom in PAIRS:
        ratios = [a / b for a, b in zip(means[top], means[bottom], strict=True)]
        result[f"{top} / {bottom}"] = {
            "median": statistics.median(ratios),
            "range": [min(ratios), max(ratios)],
            "each": ratios,
        }
    return result


def markdown(result: dict[str, Any]) -> str:
    sides = result["sides"]
    before = sides["before"]["mean_gates_s"]
    lines = [
        f"{result['repeats']} repeats, sides rotating; {result['load']}",
        "",
        "| side | gate time per verified task (s), median (range) | vs before |",
        "|---|---:|---:|",
    ]
    for side in SIDES:
        row = sides[side]
        low, high = row["range"]
        lines.append(
            f"| {side} | {row['mean_gates_s']:.2f} ({low:.2f}-{high:.2f}) | "
            f"{row['mean_gates_s'] / before - 1:+.0%} |"
        )
    lines += ["", "| ratio, per repeat | median | range |", "|---|---:|---:|"]
    for name, ratio in result["paired"].items():
        low, high = ratio["range"]
        lines.append(f"| {name} | {ratio['median']:.2f} | {low:.2f}-{high:.2f} |")
    lines += [""]
    lines += ["| task (attempts) | " + " | ".join(f"{s}: s, runs" for s in SIDES) + " |"]
    lines += ["|---|" + "---:|" * len(SIDES)]
    for spec, row in sides["after"]["tasks"].items():
        cells = []
        for side in SIDES:
            task = sides[side]["tasks"].get(spec)
            cells.append(f"{task['gates_s']:.2f}, {task['gate_runs']:g}" if task else "-")
        lines.append(f"| {spec} ({row['attempts']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    before = host.load()
    runs: dict[str, list[dict[str, dict[str, float]]]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        order = SIDES[repeat % len(SIDES) :] + SIDES[: repeat % len(SIDES)]
        for side in order:
            runs[side].append(one_run(side))
            print(f"repeat {repeat + 1} {side}: {runs[side][-1]}", file=sys.stderr)
    result = {
        "repeats": args.repeats,
        "sides": {side: summarise(runs[side]) for side in SIDES},
        "paired": paired(runs),
        "runs": runs,
        "load": host.describe_load(before, host.load()),
    }
    return host.report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
