"""Publishing on GitHub: API calls and wall time per published task, against the loopback
GitHub stand-in (tests/forge_github.py: real git smart HTTP, REST validated against GitHub's
OpenAPI description), through githubkit and harness's reconciler as a run uses them.

Each of N tasks gets its own commit on its own branch in a local repository whose origin is
the stand-in. Per task, timed with `time.perf_counter`, each case in turn:

    new PR      converge(): ls-remote, push, look the PR up, open it, label it, verdict, comment
    no-op       converge() again, nothing changed: what a re-publish costs

The stand-in's own serving time (schema validation, `git http-backend`) is summed, and the
wall time less it reported too: harness, githubkit and the git client.

Counted per task (the most any task needed): REST reads and writes (from the stand-in's log)
and git HTTP requests (ls-remote: 1; a push: 3). The
GitHubForge (one per repository, as a run makes it) is built once, outside the clock. Goal:
a new PR with its verdict in at most 6 API calls; a no-op in at most 2 reads and 0 writes.

    .venv/bin/python bench/forge.py [--tasks 20] [--reviewers] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stats import percentile

SOURCE = Path(__file__).resolve().parent.parent
# The stand-in is test code (tests/forge_github.py), not part of the harness package.
sys.path.insert(0, str(SOURCE / "tests"))
from forge_github import GitHubStandIn  # noqa: E402

from harness.config.forge import GitHubConfig  # noqa: E402
from harness.publish.github import GitHubForge  # noqa: E402
from harness.publish.reconcile import Desired, converge  # noqa: E402

IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
TOKEN_ENV = "BENCH_FORGE_TOKEN"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def desired(task: int, sha: str, reviewers: bool) -> Desired:
    return Desired(
        spec_id=f"task-{task:03d}",
        branch=f"harness/bench/task-{task:03d}",
        sha=sha,
        base="main",
        title=f"Task {task}",
        body="## Gate evidence\n\n" + "| gate | exit |\n|---|---|\n| tests | 0 |\n" * 20,
        draft=False,
        labels=("harness",),
        reviewers=("octocat",) if reviewers else (),
        verdict="success",
        summary="verified by harness on attempt 1: every gate passed on this commit",
        record=f"runs/bench/prs/task-{task:03d}.md",
    )


def measure(tasks: int, reviewers: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="harness-bench-forge-") as tmp:
        root = Path(tmp)
        forge = GitHubStandIn(root / "forge")
        with forge.serving():
            repo = root / "repo"
            repo.mkdir()
            git(repo, "init", "-q", "-b", "main")
            (repo / "README.md").write_text("bench\n", encoding="utf-8")
            git(repo, "add", "-A")
            git(repo, *IDENTITY, "commit", "-q", "-m", "base")
            git(repo, "remote", "add", "origin", forge.git_url)
            os.environ[TOKEN_ENV] = forge.token
            config = GitHubConfig(api_url=forge.api_url, token_env=TOKEN_ENV)
            client = GitHubForge(config, repo, "origin", source="bench")
            client.push(git(repo, "rev-parse", "HEAD"), "main", expected=None)
            shas = []
            for task in range(tasks):
                git(repo, "checkout", "-q", "-b", f"harness/bench/task-{task:03d}", "main")
                (repo / f"change-{task}.txt").write_text(f"{task}\n", encoding="utf-8")
                git(repo, "add", "-A")
                git(repo, *IDENTITY, "commit", "-q", "-m", f"task {task}")
                shas.append(git(repo, "rev-parse", "HEAD"))
            git(repo, "checkout", "-q", "main")
            cases: dict[str, dict[str, list[float]]] = {}
            for task, sha in enumerate(shas):
                want = desired(task, sha, reviewers)
                for case in ("new PR", "no-op"):
                    calls, gits = len(forge.calls), len(forge.git_requests)
                    served = forge.server_s
                    started = time.perf_counter()
                    outcome = converge(client, want)
                    wall = time.perf_counter() - started
                    made = forge.calls[calls:]
                    assert outcome.stale is None
                    figures = cases.setdefault(case, {})
                    for name, value in (
                        ("wall_s", wall),
                        ("client_s", wall - (forge.server_s - served)),
                        ("reads", sum(not c.write for c in made)),
                        ("writes", sum(c.write for c in made)),
                        ("git_requests", len(forge.git_requests) - gits),
                    ):
                        figures.setdefault(name, []).append(float(value))
            assert len(forge.open_pulls()) == tasks
    return {
        case: {
            "api_calls": int(max(f["reads"]) + max(f["writes"])),
            "reads": int(max(f["reads"])),
            "writes": int(max(f["writes"])),
            "git_requests": int(max(f["git_requests"])),
            "wall_ms_p50": percentile(f["wall_s"], 50) * 1000,
            "wall_ms_p95": percentile(f["wall_s"], 95) * 1000,
            "client_ms_p50": percentile(f["client_s"], 50) * 1000,
        }
        for case, f in cases.items()
    }


def markdown(results: dict[str, Any], tasks: int, reviewers: bool) -> str:
    lines = [
        f"Publishing on the loopback GitHub stand-in, {tasks} tasks"
        + (", one reviewer requested" if reviewers else ""),
        "",
        "| case | API calls (reads + writes) | git requests | wall p50 | wall p95 "
        "| of p50, outside the stand-in |",
        "|---|---|---|---|---|---|",
    ]
    for case, r in results.items():
        lines.append(
            f"| {case} | {r['api_calls']} ({r['reads']} + {r['writes']}) | {r['git_requests']} "
            f"| {r['wall_ms_p50']:.1f} ms | {r['wall_ms_p95']:.1f} ms "
            f"| {r['client_ms_p50']:.1f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--reviewers", action="store_true", help="Request one reviewer too.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = measure(args.tasks, args.reviewers)
    print(markdown(results, args.tasks, args.reviewers))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
