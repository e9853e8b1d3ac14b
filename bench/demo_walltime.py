"""The full demo's wall time before and after issue 11's hardening, side by side in one run.

Each side is a clone of this repository at one commit, in a temporary directory (so the demo's
task branches land in the clones, never in this checkout), run by this venv's Python with the
clone first on PYTHONPATH (harness is installed editable from this checkout). The demos
take turns, `--rounds` times each (each side going first in turn), so all see the same machine
load; each round's ratio to before is reported too:

    python -m cli.main run specs/ --policy policies/demo.yaml --runs-dir <tmp>

Before is the parent of the first hardening commit (9462f84, host git never entering a nested
repository), after is HEAD. Wall time includes the process's start-up; each run's task
outcomes are reported beside it, since a faster run that verified less would be no figure.

    .venv/bin/python bench/demo_walltime.py [--rounds 4] [--before a7d8448] [--after HEAD]
                                            [--side NAME=COMMIT]... [--json PATH]

`--side` adds commits in between, to tell which change costs what; every side's ratio is to
before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host

REPOSITORY = Path(__file__).resolve().parent.parent
PRE_HARDENING = "a7d8448"
GOAL_RATIO = 1.05


def clone_at(commit: str, where: Path) -> str:
    """A clone of this repository at `commit` in `where`; its full sha."""
    subprocess.run(["git", "clone", "--quiet", str(REPOSITORY), str(where)], check=True)
    sha = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["git", "-C", str(where), "checkout", "--quiet", "--detach", sha], check=True)
    return sha


def run_demo(clone: Path, runs_dir: Path) -> tuple[float, dict[str, str]]:
    """The demo's wall time in seconds and each task's outcome."""
    env = os.environ | {"PYTHONPATH": str(clone)}
    argv = [sys.executable, "-m", "cli.main", "run", "specs/", "--policy", "policies/demo.yaml"]
    started = time.perf_counter()
    done = subprocess.run(
        [*argv, "--runs-dir", str(runs_dir)], cwd=clone, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    summaries = list(runs_dir.glob("*/summary.json"))
    if done.returncode != 0 or len(summaries) != 1:
        sys.exit(f"demo in {clone} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    tasks = json.loads(summaries[0].read_text(encoding="utf-8"))["tasks"]
    return elapsed, {task["spec_id"]: task["outcome"] for task in tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--before", default=PRE_HARDENING)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument(
        "--side", action="append", default=[], metavar="NAME=COMMIT", help="a commit in between"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    wanted = {"before": args.before, **dict(side.split("=", 1) for side in args.side)}
    wanted["after"] = args.after
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        sides = {name: Path(tmp, name) for name in wanted}
        commits = {name: clone_at(wanted[name], clone)[:7] for name, clone in sides.items()}
        times: dict[str, list[float]] = {name: [] for name in sides}
        outcomes: dict[str, list[dict[str, str]]] = {name: [] for name in sides}
        for round_number in range(args.rounds):
            order = list(sides.items())
            shift = round_number % len(order)  # each side goes first in turn
            for name, clone in order[shift:] + order[:shift]:
                elapsed, outcome = run_demo(clone, Path(tmp, f"runs-{name}-{round_number}"))
                times[name].append(elapsed)
                outcomes[name].append(outcome)
                print(f"round {round_number + 1} {name}: {elapsed:.2f} s", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in times.items()}
    before = times["before"]
    ratios = {
        name: {
            "of_medians": round(medians[name] / medians["before"], 3),
            "per_round": [round(a / b, 3) for a, b in zip(values, before, strict=True)],
            "median_of_rounds": round(
                statistics.median(a / b for a, b in zip(values, before, strict=True)), 3
            ),
        }
        for name, values in times.items()
        if name != "before"
    }
    ratio = ratios["after"]["of_medians"]
    report = {
        "machine": host.machine(),
        "rounds": args.rounds,
        "commits": commits,
        "wall_s": {
            name: {
                "median": round(medians[name], 2),
                "min": round(min(values), 2),
                "max": round(max(values), 2),
                "all": [round(value, 2) for value in values],
            }
            for name, values in times.items()
        },
        "outcomes": {name: runs[0] for name, runs in outcomes.items()},
        "outcomes_stable": {
            name: all(run == runs[0] for run in runs) for name, runs in outcomes.items()
        },
        "ratio_to_before": ratios,
        "goal": f"after <= +{(GOAL_RATIO - 1) * 100:.0f}%: "
        + ("met" if ratio <= GOAL_RATIO else "not met"),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
