"""Resume time of a 50-task run crashed half-way, on SQLite and on PostgreSQL.

Each repeat sets up, in a fresh temporary directory, the tests' tiny project (tests/helpers.py
TinyProject: a 3-file git repository) with 50 specs t001…t050, each replayed as one attempt
that writes done.txt, and a policy whose only gate is `test -f done.txt`, at concurrency 1.
Then, as subprocesses of `.venv/bin/python -m cli.main`:

    harness run specs --policy policy.yaml --run-id r1 --store URL     (HARNESS_FAILPOINTS=
        provision.after@t026: the process SIGKILLs itself once task 26 is provisioned)
    harness resume r1 --store URL                                       (timed)

Figures, from the moment `harness resume` is launched (Python start-up and imports included):
- first node: until the resumed run's first node enters (events.jsonl's first `enter` at or
  after the launch; normally task 26's provision, adopted from the crashed worker);
- completion: until `harness resume` exits (the other 24 tasks run, the summary is written).
Also: how long the crashed run took to finish its 25 tasks, for the cost of a task in a run,
and how long `harness --help` takes (starting the CLI: Python and imports, nothing else).

Stores: a SQLite file (WAL) in the temporary directory; a PostgreSQL server from Debian's
packages (tests/pg.py) with fsync on, one database per repeat.

    .venv/bin/python bench/resume.py [--tasks 50] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import host

SOURCE = Path(__file__).resolve().parent.parent
# The tiny project and the throwaway PostgreSQL server are test code, not part of harness.
sys.path.insert(0, str(SOURCE / "tests"))
from helpers import TinyProject, make_tiny_repo  # noqa: E402
from pg import PostgresServer  # noqa: E402

from harness.store import open_store  # noqa: E402

HARNESS = [str(SOURCE / ".venv" / "bin" / "python"), "-m", "cli.main"]


def _harness(
    root: Path, *args: str, failpoints: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    if failpoints:
        env["HARNESS_FAILPOINTS"] = failpoints
    return subprocess.run(
        [*HARNESS, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def once(root: Path, url: str, tasks: int) -> dict[str, Any]:
    """One crashed run and its resume; seconds."""
    project = TinyProject(root)
    make_tiny_repo(project.repo)
    project.write_policy(concurrency=1)
    width = len(str(tasks)) + 1
    ids = [f"t{n:0{width}}" for n in range(1, tasks + 1)]
    for spec_id in ids:
        project.add_spec(spec_id)
    common = ["--runs-dir", str(project.runs), "--store", url]
    crash_at = ids[tasks // 2]

    started = time.perf_counter()
    crashed = _harness(
        root,
        *["run", str(project.specs), "--policy", str(root / "policy.yaml"), "--run-id", "r1"],
        *common,
        failpoints=f"provision.after@{crash_at}",
    )
    crash_run_s = time.perf_counter() - started
    if crashed.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the run was to be killed at {crash_at}: {crashed.stderr[-2000:]}")
    store = open_store(url)
    try:
        done_at_crash = sum(task.status == "done" for task in store.tasks("r1"))
    finally:
        store.close()

    started = time.perf_counter()
    _harness(root, "--help")  # for contrast: starting the CLI (imports), no store, no graph
    cli_start_s = time.perf_counter() - started

    launched = time.time()
    started = time.perf_counter()
    resumed = _harness(root, "resume", "r1", *common)
    completion_s = time.perf_counter() - started
    if resumed.returncode != 0:
        raise RuntimeError(f"harness resume failed: {resumed.stderr[-2000:]}")
    entered = [
        datetime.fromisoformat(e["ts"]).timestamp()
        for e in _events(project.runs / "r1")
        if e["event"] == "enter" and datetime.fromisoformat(e["ts"]).timestamp() >= launched
    ]
    summary = json.loads((project.runs / "r1" / "summary.json").read_text(encoding="utf-8"))
    verified = sum(task["outcome"] == "verified" for task in summary["tasks"])
    if verified != tasks:
        raise RuntimeError(f"after resume {verified} of {tasks} tasks are verified")
    return {
        "done_at_crash": done_at_crash,
        "crash_run_s": crash_run_s,
        "cli_start_s": cli_start_s,
        "first_node_s": min(entered) - launched,
        "completion_s": completion_s,
        "per_resumed_task_s": (completion_s - (min(entered) - launched)) / (tasks - done_at_crash),
    }


FIGURES = ["crash_run_s", "cli_start_s", "first_node_s", "completion_s", "per_resumed_task_s"]


def measure(new_url: Any, tasks: int, repeats: int) -> dict[str, Any]:
    samples = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
            samples.append(once(Path(tmp), new_url(Path(tmp)), tasks))
    medians = {name: statistics.median(s[name] for s in samples) for name in FIGURES}
    return {"samples": samples, "median": medians}


def run(tasks: int = 50, repeats: int = 3) -> dict[str, Any]:
    load_before = host.load()
    started = time.perf_counter()
    backends = {"sqlite": measure(lambda tmp: f"sqlite:///{tmp / 'harness.db'}", tasks, repeats)}
    server = PostgresServer.start(durable=True)
    try:
        backends["postgresql (fsync on)"] = measure(
            lambda _: server.create_database(), tasks, repeats
        )
    finally:
        server.stop()
    return {
        "tasks": tasks,
        "repeats": repeats,
        "backends": backends,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "load_before": load_before,
        "load_after": host.load(),
    }


def markdown(result: dict[str, Any]) -> str:
    half = result["tasks"] // 2
    lines = [
        f"Resume of a {result['tasks']}-task run killed after {half} tasks (concurrency 1, "
        f"median of {result['repeats']}, {result['elapsed_s']} s in all). Seconds from launching "
        "`harness resume`.",
        "",
        f"| store | run until the kill ({half} tasks) | `harness --help` | resume: first node "
        f"| resume: completion ({result['tasks'] - half} tasks) | per resumed task |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, figures in result["backends"].items():
        m = figures["median"]
        lines.append(
            f"| {label} | {m['crash_run_s']:.2f} | {m['cli_start_s']:.2f} | "
            f"{m['first_node_s']:.2f} | {m['completion_s']:.2f} | {m['per_resumed_task_s']:.3f} |"
        )
    lines += ["", host.describe_load(result["load_before"], result["load_after"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Resume time of a run crashed half-way.")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.tasks, args.repeats)
    return host.report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
