"""Whole runs against a fake Messages API that pushes back, repeated (issue #14): how many of
20 tasks are verified, run after run.

Each repetition is `harness run` (in-process, the CLI's own path) on 20 tiny tasks (write
done.txt, finish: two model calls each; one shell-command gate) at concurrency 10, with the
anthropic agent against the fake Messages API (tests/fake_anthropic.py) that admits 4
requests at once (429 with `retry-after: 1` over it), answers 0.3 s later, and sheds 15 % of
what it admits with 529 (seeded per repetition). Real git and bubblewrap; a fresh project and
store each time.

    .venv/bin/python bench/limiter_runs.py [--repeats 5] [--tasks 20] [--shed 0.15] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_anthropic import FakeMessagesServer, ReplayScript, shedding  # noqa: E402
from helpers import TinyProject, make_tiny_repo  # noqa: E402
from test_limiter_e2e import KEY, write_policy  # noqa: E402


def one_run(tmp: Path, tasks: int, shed: float, seed: int) -> dict[str, Any]:
    make_tiny_repo(tmp / "repo")
    tiny = TinyProject(tmp)
    for n in range(tasks):
        tiny.add_spec(f"task-{n:02d}")
    write_policy(tiny)
    script = shedding(ReplayScript(tiny.specs), shed, seed=seed)
    with FakeMessagesServer(script, api_key=KEY, max_concurrent=4, latency_s=0.3) as server:
        os.environ["ANTHROPIC_API_KEY"] = KEY
        os.environ["ANTHROPIC_BASE_URL"] = server.base_url
        started = time.monotonic()
        result = tiny.run()
        wall = time.monotonic() - started
        statuses = Counter(request.status for request in server.requests)
    outcomes = Counter(task["outcome"] for task in tiny.summary()["tasks"])
    return {
        "exit_code": result.exit_code,
        "outcomes": dict(outcomes),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--shed", type=float, default=0.15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS"):
        os.environ.pop(name, None)
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-limiter-runs-") as tmp:
            runs.append(one_run(Path(tmp), args.tasks, args.shed, seed=repeat))
        print(f"run {repeat + 1}: {runs[-1]}", file=sys.stderr)
    print("| run | exit | verified | other outcomes | 429s | 529s | wall |")
    print("|---|---|---|---|---|---|---|")
    for n, run in enumerate(runs, 1):
        outcomes = dict(run["outcomes"])
        verified = outcomes.pop("verified", 0)
        print(
            f"| {n} | {run['exit_code']} | {verified}/{args.tasks} | {outcomes or '-'} "
            f"| {run['statuses'].get('429', 0)} | {run['statuses'].get('529', 0)} "
            f"| {run['wall_s']} s |"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2, default=str))


if __name__ == "__main__":
    main()
