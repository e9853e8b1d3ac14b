"""A fleet of 8 against 8 separate runs (issue #17): wall time, side by side, taking turns.

The fleet is `harness fleet SPEC -n 8 --concurrency 4`: one process, 8 variants as tasks of one
run, then the ranking (diffs, no held-out checks). The separate runs are 8 `harness run SPEC`
processes of the same spec, 4 at a time. Both on the tiny project (tests/helpers.py) with the
replay agent (write done.txt after a 0.5 s `sleep` in the sandbox, finish; one shell gate), real
git and bubblewrap, a fresh project each repetition. Goal: the fleet within 10 % of the runs.

    .venv/bin/python bench/fleet.py [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import FINISH, WRITE_DONE, TinyProject, make_tiny_repo  # noqa: E402

HARNESS = str(ROOT / ".venv" / "bin" / "harness")
VARIANTS, CONCURRENCY = 8, 4
WORK = [{"tool": "run", "args": {"command": "sleep 0.5"}}, WRITE_DONE, FINISH]


def project(tmp: Path) -> TinyProject:
    tiny = TinyProject(tmp)
    make_tiny_repo(tiny.repo)
    tiny.write_policy(concurrency=CONCURRENCY)
    tiny.add_spec("task", attempts=[WORK])
    return tiny


def harness(tiny: TinyProject, *args: str) -> None:
    argv = [
        HARNESS,
        *args,
        "--policy",
        str(tiny.root / "policy.yaml"),
        "--runs-dir",
        str(tiny.runs),
    ]
    done = subprocess.run(argv, cwd=tiny.root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def fleet(tmp: Path) -> float:
    tiny = project(tmp)
    started = time.monotonic()
    harness(tiny, "fleet", str(tiny.specs / "task.md"), "-n", str(VARIANTS), "--run-id", "f")
    wall = time.monotonic() - started
    outcomes = {t["outcome"] for t in tiny.summary("f")["tasks"]}
    assert outcomes == {"verified"} and len(tiny.summary("f")["tasks"]) == VARIANTS
    return wall


def separate(tmp: Path) -> float:
    tiny = project(tmp)
    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        spec = str(tiny.specs / "task.md")
        list(pool.map(lambda k: harness(tiny, "run", spec, "--run-id", f"r{k}"), range(VARIANTS)))
    wall = time.monotonic() - started
    assert all(tiny.task("task", f"r{k}")["outcome"] == "verified" for k in range(VARIANTS))
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"fleet": [], "separate": []}
    for repeat in range(args.repeats):
        for name, measure in (("fleet", fleet), ("separate", separate)):  # taking turns
            with tempfile.TemporaryDirectory(prefix=f"bench-fleet-{name}-") as tmp:
                walls[name].append(round(measure(Path(tmp)), 2))
        print(f"repeat {repeat + 1}: {walls}", file=sys.stderr)
    median = {name: statistics.median(values) for name, values in walls.items()}
    print(f"| what ({VARIANTS} tasks, concurrency {CONCURRENCY}) | wall, each repeat | median |")
    print("|---|---|---|")
    print(f"| `harness fleet -n {VARIANTS}` (one run) | {walls['fleet']} s | {median['fleet']} s |")
    print(
        f"| {VARIANTS} separate `harness run`s, {CONCURRENCY} at a time | {walls['separate']} s "
        f"| {median['separate']} s |"
    )
    print(f"\nfleet / separate: {median['fleet'] / median['separate']:.2f}")
    if args.json:
        result: dict[str, Any] = {"args": vars(args), "walls": walls, "median": median}
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
