"""`harness --help` start-up: before the restructuring, now, and a bare `python -c pass`.

Three commands, run with this venv's Python, interleaved round by round (the order rotating,
so none always runs first after a pause), N rounds after warm-ups that also write the .pyc
files:

- before: commit 056ba16 (the entry point was `harness.cli:app`), from a temporary detached
  `git worktree` of it, with PYTHONPATH pointing there;
- now: this checkout's `cli.main:app`;
- a bare typer app (two commands, no harness code) printing its help with rich's panels:
  what typer and rich's help cost by themselves, which harness's plain help avoids;
- `python -c pass`: the interpreter's own start.

Each sample is the child's wall time (time.perf_counter around it) and its CPU time (user +
system, from os.wait4's rusage). Medians are reported, with the goal of the restructuring
issue: `harness --help` ≤ 150 ms wall on an idle machine and ≤ 2x `python -c pass`'s CPU +
100 ms. One `python -X importtime` run of each says which heavy packages it imported.

    .venv/bin/python bench/startup.py [--runs 21] [--warmup 3] [--json PATH]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import host

SOURCE = Path(__file__).resolve().parent.parent
BEFORE = "056ba16"
"""The last commit before the restructuring (issue 10)."""
HEAVY = ("langgraph", "langchain_core", "kubernetes", "psycopg", "anthropic")
GOAL_WALL_MS = 150.0
GOAL_CPU_SLACK_MS = 100.0
HELP = "import sys; from {module} import app; sys.argv = ['harness', '--help']; app()"
BARE_TYPER = (
    "import sys, typer\n"
    "app = typer.Typer(no_args_is_help=True, add_completion=False)\n"
    "@app.command()\ndef run() -> None:\n    'Run.'\n"
    "@app.command()\ndef check() -> None:\n    'Check.'\n"
    "sys.argv = ['harness', '--help']\napp()\n"
)


@dataclass(frozen=True)
class Command:
    name: str
    argv: list[str]
    pythonpath: Path | None
    env: tuple[tuple[str, str], ...] = ()


def commands(before_tree: Path) -> list[Command]:
    python = sys.executable
    return [
        Command(
            f"`harness --help` before ({BEFORE})",
            [python, "-c", HELP.format(module="harness.cli")],
            before_tree,
        ),
        Command("`harness --help` now", [python, "-c", HELP.format(module="cli.main")], SOURCE),
        Command("a bare typer app's `--help` (rich's panels)", [python, "-c", BARE_TYPER], None),
        Command("`python -c pass`", [python, "-c", "pass"], None),
    ]


def _env(command: Command) -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONSTARTUP", "TYPER_USE_RICH")  # the help as users see it
    env = {k: v for k, v in os.environ.items() if k not in drop} | dict(command.env)
    if command.pythonpath is not None:
        # Before the venv's editable install of this checkout: that tree's packages win.
        env["PYTHONPATH"] = str(command.pythonpath)
    return env


def measure(command: Command) -> tuple[float, float]:
    """One run: (wall ms, CPU ms of the child, user + system)."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: wait4 cannot deadlock on it
        started = time.perf_counter()
        child = subprocess.Popen(
            command.argv,
            cwd=command.pythonpath or SOURCE,
            env=_env(command),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = (time.perf_counter() - started) * 1000
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{command.name} exited {child.returncode}: {tail}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def heavy_imports(command: Command) -> list[str]:
    """The heavy packages one run imports, from `python -X importtime`'s report."""
    done = subprocess.run(
        [command.argv[0], "-X", "importtime", *command.argv[1:]],
        cwd=command.pythonpath or SOURCE,
        env=_env(command),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return [package for package in HEAVY if package in names]


def run(runs: int = 21, warmup: int = 3) -> dict[str, Any]:
    before_tree = Path(tempfile.mkdtemp(prefix="harness-bench-startup-")) / "before"
    git = ["git", "-C", str(SOURCE)]
    subprocess.run(
        [*git, "worktree", "add", "--detach", "--quiet", str(before_tree), BEFORE], check=True
    )
    try:
        chosen = commands(before_tree)
        samples: dict[str, list[tuple[float, float]]] = {c.name: [] for c in chosen}
        load_before = host.load()
        for round_ in range(warmup + runs):
            shift = round_ % len(chosen)
            for command in chosen[shift:] + chosen[:shift]:
                sample = measure(command)
                if round_ >= warmup:
                    samples[command.name].append(sample)
        load_after = host.load()
        rows: list[dict[str, Any]] = []
        for command in chosen:
            walls = [wall for wall, _ in samples[command.name]]
            cpus = [cpu for _, cpu in samples[command.name]]
            rows.append(
                {
                    "command": command.name,
                    "argv": command.argv[1:],
                    "wall_ms": round(statistics.median(walls), 1),
                    "wall_min_ms": round(min(walls), 1),
                    "cpu_ms": round(statistics.median(cpus), 1),
                    "heavy_imports": heavy_imports(command),
                }
            )
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(before_tree)], check=False)
        shutil.rmtree(before_tree.parent, ignore_errors=True)
    before, now, _, bare = rows  # bare: `python -c pass`
    cpu_goal = 2 * bare["cpu_ms"] + GOAL_CPU_SLACK_MS
    return {
        "runs": runs,
        "warmup": warmup,
        "rows": rows,
        "goal": {
            "wall_ms": GOAL_WALL_MS,
            "wall_met": now["wall_ms"] <= GOAL_WALL_MS,
            "cpu_ms": round(cpu_goal, 1),
            "cpu_met": now["cpu_ms"] <= cpu_goal,
        },
        "speedup_wall": round(before["wall_ms"] / now["wall_ms"], 1),
        "load_before": load_before,
        "load_after": load_after,
    }


def markdown(result: dict[str, Any]) -> str:
    goal = result["goal"]
    lines = [
        f"### startup: `harness --help`, median of {result['runs']} runs each, interleaved",
        "",
        "| command | wall (ms) | min wall (ms) | CPU, user + sys (ms) | heavy packages imported |",
        "|---|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        heavy = ", ".join(row["heavy_imports"]) or "none"
        lines.append(
            f"| {row['command']} | {row['wall_ms']} | {row['wall_min_ms']} | {row['cpu_ms']} "
            f"| {heavy} |"
        )
    met = {True: "met", False: "NOT met"}
    lines += [
        "",
        f"- goal wall ≤ {goal['wall_ms']:.0f} ms: {met[goal['wall_met']]}; goal CPU ≤ 2x "
        f"`python -c pass` + {GOAL_CPU_SLACK_MS:.0f} ms = {goal['cpu_ms']} ms: "
        f"{met[goal['cpu_met']]}",
        f"- now {result['speedup_wall']}x faster (wall) than before",
        f"- {host.describe_load(result['load_before'], result['load_after'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    return host.report(run(args.runs, args.warmup), markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
