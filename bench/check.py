"""Issue 18, item 5: `harness check examples/shop` against the three tools run directly in the
tree, paired runs taking turns, on a fresh copy of the demo (overhead.prepare). Four ways, each
round running all four in a rotating order, their wall times as processes:

- `bare`: in examples/shop, one after another, the demo policy's gate commands
  (`ruff check --output-format=json .`, `mypy -O json .`, `pytest -q`) with the PYTEST_ADDOPTS
  every sandbox gets (no cache provider, no langsmith plugin: the same pytest work);
  their caches are the tree's own (.mypy_cache, .ruff_cache);
- `check`: `harness check examples/shop --policy policies/demo.yaml --runs-dir <tmp>/runs`, as
  shipped: its caches from its own copy of the last check's (runs/.check-caches);
- `check-tree`: the same with runs/.check-caches removed before each run: its caches from the
  tree's own (which `bare` keeps warm);
- `check-cold`: the same with `cache_dirs: []` on every gate: no warm cache (as before).

Every process runs without PYTHONDONTWRITEBYTECODE (as a user's shell has it): harness's own
modules load from their .pyc as the tools' do; the gates in the sandbox still write none. One
warm-up round is not counted. Reported: each way's median wall time and range, and each
check way's ratio to `bare` in the same round (median, range).

    .venv/bin/python bench/check.py [--rounds 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import host
import overhead
import yaml

WAYS = ("bare", "check", "check-tree", "check-cold")
BARE = ["ruff check --output-format=json .", "mypy -O json .", "pytest -q"]
PYTEST_ADDOPTS = "-p no:cacheprovider -p no:langsmith_plugin"  # harness.sandbox's


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    return time.perf_counter() - started


def one(way: str, work: Path) -> float:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = f"{overhead.HARNESS.parent}:{env.get('PATH', '/usr/bin')}"
    if way == "bare":
        env["PYTEST_ADDOPTS"] = PYTEST_ADDOPTS
        return timed(["/bin/sh", "-c", "; ".join(BARE)], work / "examples/shop", env)
    policy = "policies/demo-cold.yaml" if way == "check-cold" else "policies/demo.yaml"
    if way == "check-tree":
        shutil.rmtree(work / "runs" / ".check-caches", ignore_errors=True)
    argv = [str(overhead.HARNESS), "check", "examples/shop", "--policy", policy]
    return timed([*argv, "--runs-dir", str(work / "runs")], work, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    before = host.load()
    walls: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        work = Path(tmp)
        overhead.prepare(work)
        policy = yaml.safe_load((work / "policies/demo.yaml").read_text(encoding="utf-8"))
        for gate in policy["gates"]:
            gate["cache_dirs"] = []
        (work / "policies/demo-cold.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
        for round_ in range(args.rounds + 1):
            order = WAYS[round_ % len(WAYS) :] + WAYS[: round_ % len(WAYS)]
            figures = {way: one(way, work) for way in order}
            print(f"round {round_}: {figures}", file=sys.stderr)
            if round_ > 0:  # round 0 warms every cache
                for way, wall in figures.items():
                    walls[way].append(wall)
    result: dict[str, Any] = {"rounds": args.rounds, "walls_s": walls}
    result["summary"] = {}
    for way in WAYS:
        ratios = [wall / bare for wall, bare in zip(walls[way], walls["bare"], strict=True)]
        result["summary"][way] = {
            "median_s": statistics.median(walls[way]),
            "range_s": [min(walls[way]), max(walls[way])],
            "ratio": statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
        }
    result["load"] = host.describe_load(before, host.load())
    return host.report(result, markdown, args.json)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['rounds']} rounds (after one warm-up), ways taking turns; {result['load']}",
        "",
        "| way | wall, median (range) | / bare, median (range) |",
        "|---|---:|---:|",
    ]
    for way, row in result["summary"].items():
        low, high = row["range_s"]
        rlow, rhigh = row["ratio_range"]
        lines.append(
            f"| {way} | {row['median_s']:.2f} s ({low:.2f}-{high:.2f}) | "
            f"{row['ratio']:.2f}x ({rlow:.2f}-{rhigh:.2f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
