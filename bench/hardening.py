"""Per-command cost of the sandbox hardening (issue 11, items 2 and 3): `true` in a sandbox,
before and after, interleaved in one process so all variants see the same machine load.

    before        the pre-hardening command line: the host bound read-only (`--ro-bind / /`)
                  with tmpfs holes over /tmp, /run, /var/tmp; no cap-drop, seccomp or limits
    after         `ConfinedDirectory.run("true")`, everything on: the allowlisted view, the
                  host-side prelude (rlimits, seccomp fd), `--cap-drop ALL`, `--seccomp`, a
                  size-capped /tmp, started by the sandbox's spawner in its memory + pids
                  cgroups (joined once, when the spawner started)
    after-no-cg   the same argv started by harness itself, in no cgroup (what a machine
                  without cgroups pays)
    join-per-cmd  the same argv started by harness, its first process joining a pooled
                  memory + pids cgroup pair (`echo $$ > cgroup.procs`): the design before the
                  spawner, for comparison

Also timed: building the seccomp filter (once per harness process), and a sandbox's first
command (`first-cmd`: a new `ConfinedDirectory`, so its spawner starts and joins the cgroups;
the cgroups come from the pool), against its later ones.

    .venv/bin/python bench/hardening.py [--iterations 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from stats import percentile

from harness.sandbox import bubblewrap as bwrap
from harness.sandbox import seccomp
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.limits import SandboxLimits, cgroups_usable, take_cgroups
from harness.sandbox.process import run_process

GOAL_EXTRA_MS = 5.0


def before_argv(binary: str, worktree: Path, scratch: Path) -> list[str]:
    """The argv `bwrap.wrap` built before the hardening (commit 9462f84), for "true"."""
    argv = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    hidden = [Path("/tmp"), Path("/run"), Path("/var/tmp")]
    for path in hidden:
        if path.is_dir():
            argv += ["--tmpfs", str(path)]
    for path in bwrap.needed_host_paths():
        if any(path.is_relative_to(h) for h in hidden) and path.exists():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--bind", str(worktree), str(worktree), "--bind", str(scratch), str(scratch)]
    argv += ["--unshare-all", "--die-with-parent", "--new-session", "--chdir", str(worktree)]
    return [*argv, "/bin/sh", "-c", "true"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    probe = bwrap.probe()
    if not probe.available:
        sys.exit(f"bubblewrap is needed: {probe.reason}")
    started = time.perf_counter()
    built = seccomp.build_filter()
    filter_ms = (time.perf_counter() - started) * 1000
    with tempfile.TemporaryDirectory(prefix="bench-hardening-") as tmp:
        worktree, scratch = Path(tmp, "worktree"), Path(tmp, "scratch")
        worktree.mkdir()
        scratch.mkdir()
        box = ConfinedDirectory(worktree, worktree, scratch)
        env = bwrap.sandbox_env(scratch)
        old = before_argv(probe.reason, worktree, scratch)
        new = bwrap.wrap(
            probe.reason, "true", cwd=worktree, writable=[worktree, scratch],
            readable=bwrap.needed_host_paths(),
        )  # fmt: skip
        groups = take_cgroups(SandboxLimits())
        joins = " && ".join(f"echo $$ > {group}/cgroup.procs" for group in groups)
        joined = ["/bin/sh", "-c", f'{joins} && exec "$@"', "join", *new] if groups else new

        def first_command() -> int:
            fresh = ConfinedDirectory(worktree, worktree, scratch)
            return fresh.run("true", timeout_s=30).exit_code  # its spawner stops with it

        variants: dict[str, Callable[[], int]] = {
            "before": lambda: run_process(old, cwd=worktree, env=env, timeout_s=30).exit_code,
            "after": lambda: box.run("true", timeout_s=30).exit_code,
            "after-no-cg": lambda: run_process(new, cwd=worktree, env=env, timeout_s=30).exit_code,
            "join-per-cmd": lambda: (
                run_process(joined, cwd=worktree, env=env, timeout_s=30).exit_code
            ),
            "first-cmd": first_command,
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for iteration in range(args.iterations + 5):
            for name, run in variants.items():
                begin = time.perf_counter()
                code = run()
                elapsed = (time.perf_counter() - begin) * 1000
                if code != 0:
                    sys.exit(f"{name}: `true` exited {code}")
                if iteration >= 5:  # warm-up not counted
                    samples[name].append(elapsed)
    report = {
        "iterations": args.iterations,
        "seccomp_filter": {"built_ms": round(filter_ms, 1), "state": built.reason},
        "cgroups": cgroups_usable() or "a pooled memory + pids cgroup pair per sandbox",
        "ms": {
            name: {
                "p50": round(statistics.median(values), 2),
                "p90": round(percentile(values, 90), 2),
                "mean": round(statistics.fmean(values), 2),
            }
            for name, values in samples.items()
        },
    }
    extra = statistics.median(samples["after"]) - statistics.median(samples["before"])
    report["extra_p50_ms"] = round(extra, 2)
    report["goal"] = f"<= +{GOAL_EXTRA_MS} ms per command: {'met' if extra <= 5 else 'not met'}"
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
