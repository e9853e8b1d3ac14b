"""Environment set-up (harness.setup): what a set-up per base costs, and what each task pays
to reuse it.

On a copy of examples/shop committed to a fresh repository, each round times, taking turns
(the order rotates every round), with a fresh run directory each time:

- `set-up: true`: harness's own cost of a set-up (a detached worktree of the base, the
  sandbox, one command, teardown, its records), from `EnvironmentSetup.ready` to its return;
- `set-up: venv`: `python3 -m venv $HARNESS_ENV` (pip from Python's bundled wheel, no
  network), a real set-up's smallest step;
- `set-up: venv + copy`: the same, plus `copy:` of a generated `deps/` of --copy-files small
  files (node_modules' shape), which the first task's `ready` also copies into its tree;
- `bare`: the same `python3 -m venv` on the host, unsandboxed, right after `set-up: venv`;
- `reuse`, `reuse + copy`: a second task's `ready` once the base's set-up is done: the
  lockfiles read from git, the bind, and (with `copy:`) the copy into its tree, in its
  sandbox: what every later gate phase of every task pays.

    .venv/bin/python bench/setup_env.py [--rounds 7] [--copy-files 2000] [--json PATH]
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
from collections.abc import Callable
from functools import partial
from pathlib import Path

from stats import percentile

from harness.config.spec import Spec, load_spec
from harness.sandbox.local import WorktreeSandbox
from harness.setup.config import SetupConfig
from harness.setup.environment import EnvironmentSetup, Prepared

REPO_ROOT = Path(__file__).resolve().parents[1]
IDENTITY = ["-c", "user.name=b", "-c", "user.email=b@b"]


def make_repo(where: Path) -> Path:
    repo = where / "shop"
    shutil.copytree(
        REPO_ROOT / "examples" / "shop",
        repo,
        ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"),
    )
    (repo / ".gitignore").write_text("deps/\n", encoding="utf-8")
    (repo / "requirements.txt").write_text("pytest\n", encoding="utf-8")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*IDENTITY, "commit", "-qm", "s"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    spec = where / "spec.md"
    spec.write_text("---\nid: s\ntitle: S\ntier: 1\nrepo: shop\n---\nDo it.\n", encoding="utf-8")
    return spec


def configs(copy_files: int) -> dict[str, SetupConfig]:
    make_deps = (
        f"mkdir -p deps && cd deps && i=0; while [ $i -lt {copy_files} ]; do "
        'mkdir -p "d$((i / 100))" && echo "$i" > "d$((i / 100))/f$i.js"; i=$((i + 1)); done'
    )
    venv = "python3 -m venv $HARNESS_ENV"
    base = {"lockfiles": ["requirements.txt"]}
    return {
        "set-up: true": SetupConfig.model_validate(base | {"commands": ["true"]}),
        "set-up: venv": SetupConfig.model_validate(base | {"commands": [venv]}),
        "set-up: venv + copy": SetupConfig.model_validate(
            base | {"commands": [venv, make_deps], "copy": ["deps"]}
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--copy-files", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="harness-bench-setup-"))
    try:
        spec = load_spec(make_repo(home))
        figures = measure(spec, home, configs(args.copy_files), args.rounds)
    finally:
        subprocess.run(["git", "worktree", "prune"], cwd=home / "shop", check=False)
        shutil.rmtree(home, ignore_errors=True)
    print(f"| step ({args.rounds} rounds, taking turns) | median ms | p95 ms | min ms |")
    print("|---|---|---|---|")
    for name, values in figures.items():
        ms = [v * 1000 for v in values]
        print(
            f"| {name} | {statistics.median(ms):.0f} | {percentile(ms, 95):.0f} | {min(ms):.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


def measure(
    spec: Spec, home: Path, setups: dict[str, SetupConfig], rounds: int
) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}
    steps = list(setups.items())
    counter = 0
    for round_ in range(rounds + 1):  # round 0: warm-up, not counted
        for name, config in steps[round_ % len(steps) :] + steps[: round_ % len(steps)]:
            counter += 1
            run_dir = home / f"run{counter}"
            setup = EnvironmentSetup(config, run_dir / "setup")
            first = task(spec, run_dir, "first")
            second = task(spec, run_dir, "second")
            try:
                made = timed(partial(setup.ready, spec, first))
                reused = timed(partial(setup.ready, spec, second))
            finally:
                first.teardown()
                second.teardown()
            bare = bare_venv(home) if name == "set-up: venv" else None
            if round_ == 0:
                continue
            figures.setdefault(name, []).append(made)
            if bare is not None:
                figures.setdefault("bare: python3 -m venv, unsandboxed", []).append(bare)
            reuse = "reuse + copy" if config.copies else "reuse"
            if name != "set-up: true":
                figures.setdefault(reuse, []).append(reused)
    return figures


def bare_venv(home: Path) -> float:
    """The venv step alone, on the host, for comparison: what the set-up's command costs."""
    target = home / "bare-venv"
    started = time.perf_counter()
    # harness's interpreter: the sandbox's `python3` (harness's venv is first on its PATH)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def task(spec: Spec, run_dir: Path, name: str) -> WorktreeSandbox:
    return WorktreeSandbox.provision(
        spec, f"bench/{run_dir.name}/{name}", run_dir / "w" / name, run_dir / "s" / name
    )


def timed(step: Callable[[], Prepared]) -> float:
    started = time.perf_counter()
    prepared = step()
    elapsed = time.perf_counter() - started
    if prepared.error is not None:
        sys.exit(f"set-up failed: {prepared.error}")
    return elapsed


if __name__ == "__main__":
    main()
