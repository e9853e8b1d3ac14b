"""Issue 18's batch figures: the demo's kind of batch with warm starts on and off, side by side.

"Off" is the policy as it was before warm starts: no sandbox pool, no warm gate caches, verify
re-running every gate, and a flaky re-run re-running the whole test gate; or, with `--before
PATH`, the harness executable of a checkout from before issue 18, with the demo policy
unchanged. "On" is the demo policy as shipped (the defaults). Each repeat runs both, in
alternating order, on fresh copies of the demo (overhead.prepare), so the host's load falls
on both alike:

    harness run <specs> --policy <policy> --concurrency 4 --runs-dir <tmp>/runs --run-id bench

`--specs demo` is the demo's own specs/ folder (4 specs); `--specs batch --count 50` makes 50
specs of the demo's kind: copies of the three examples/shop specs with replays (one verified on
attempt 2, two on attempt 1), each with its own id.

Per batch: wall time of the `harness run` process, Σ gate time, gate time per verified task,
harness overhead per task (duration - agent - gates, as overhead.py), and the set-up time per
base when the policy has a `setup:` (the demo has none).

    .venv/bin/python bench/warm_starts.py [--specs demo|batch] [--count 50] [--repeats 3]
        [--concurrency 4] [--before /work/before/.venv/bin/harness] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import re
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

SHOP_SPECS = ["add-bulk-discount", "fix-pagination", "round-tax-per-line"]


def policy_off(policy: dict[str, Any]) -> dict[str, Any]:
    """The demo policy with every warm start turned off: what harness did before issue 18."""
    off = dict(policy)
    off["sandbox"] = {**off.get("sandbox", {}), "pool": {"size": 0}}
    off["gates"] = [{**gate, "cache_dirs": []} for gate in off["gates"]]
    off["verify"] = {**off.get("verify", {}), "rerun": True}
    off["flaky"] = {**off.get("flaky", {}), "rerun": "all"}
    return off


def make_batch(work: Path, count: int) -> Path:
    """`count` copies of the shop specs (and their replays) in work/batch/, ids made unique."""
    batch = work / "batch"
    batch.mkdir()
    for n in range(count):
        name = SHOP_SPECS[n % len(SHOP_SPECS)]
        spec_id = f"{name}-{n + 1:02d}"
        text = (work / "specs" / f"{name}.md").read_text(encoding="utf-8")
        text = re.sub(r"^id: .*$", f"id: {spec_id}", text, count=1, flags=re.MULTILINE)
        (batch / f"{spec_id}.md").write_text(text, encoding="utf-8")
        shutil.copy(work / "specs" / f"{name}.replay.yaml", batch / f"{spec_id}.replay.yaml")
    return batch


def run_one(
    harness: Path, work: Path, specs: str, policy: Path, concurrency: int
) -> dict[str, Any]:
    runs = work / "runs"
    argv = [str(harness), "run", specs, "--policy", str(policy)]
    argv += ["--concurrency", str(concurrency), "--runs-dir", str(runs), "--run-id", "bench"]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:  # escalations exit 0; an error or a crash is not a figure
        raise RuntimeError(f"harness run exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    run_dir = runs / "bench"
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    tasks = summary["tasks"]
    verified = [t for t in tasks if t["outcome"] == "verified"]
    overheads = [t["duration_s"] - t["agent_s"] - t["gates_s"] for t in tasks]
    index = run_dir / "setup" / "index.jsonl"  # one line per set-up run (harness.setup)
    lines = index.read_text(encoding="utf-8").splitlines() if index.exists() else []
    setup_s = [json.loads(line)["duration_s"] for line in lines if line.strip()]
    return {
        "wall_s": wall_s,
        "tasks": len(tasks),
        "verified": len(verified),
        "outcomes": sorted({t["outcome"] for t in tasks}),
        "gates_s": sum(t["gates_s"] for t in tasks),
        "gates_per_verified_s": (
            sum(t["gates_s"] for t in verified) / len(verified) if verified else 0.0
        ),
        "gate_runs": sum(len(t["gates"]) for t in tasks),
        "overhead_mean_s": statistics.fmean(overheads),
        "overhead_share": sum(overheads) / sum(t["duration_s"] for t in tasks),
        "setup_s_per_base": setup_s,
    }


def run(
    specs: str, count: int, repeats: int, concurrency: int, before: Path | None
) -> dict[str, Any]:
    load_before = host.load()
    started = time.perf_counter()
    on_policy = yaml.safe_load((overhead.SOURCE / "policies" / "demo.yaml").read_text())
    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for n in range(repeats):
        order = ["off", "on"] if n % 2 == 0 else ["on", "off"]
        for mode in order:
            work = Path(tempfile.mkdtemp(prefix=f"harness-bench-warm-{mode}-{n}-"))
            try:
                overhead.prepare(work)
                target = str(make_batch(work, count)) if specs == "batch" else "specs"
                policy = work / f"policy-{mode}.yaml"
                harness = before if mode == "off" and before else overhead.HARNESS
                chosen = on_policy if mode == "on" or before else policy_off(on_policy)
                policy.write_text(yaml.safe_dump(chosen), encoding="utf-8")
                results[mode].append(run_one(harness, work, target, policy, concurrency))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "warm_starts",
        "specs": specs if specs == "demo" else f"batch of {count}",
        "off": f"harness before issue 18 ({before})" if before else "policy_off(demo.yaml)",
        "repeats": repeats,
        "concurrency": concurrency,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "runs": results,
        "median": {mode: _medians(runs) for mode, runs in results.items()},
        "load_before": load_before,
        "load_after": host.load(),
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ["wall_s", "gates_s", "gates_per_verified_s", "gate_runs", "overhead_mean_s"]
    keys.append("overhead_share")
    return {key: statistics.median(r[key] for r in runs) for key in keys}


def markdown(result: dict[str, Any]) -> str:
    off, on = result["median"]["off"], result["median"]["on"]
    rows = [
        ("batch wall s", "wall_s", "{:.1f}"),
        ("Σ gate s", "gates_s", "{:.1f}"),
        ("gate s per verified task", "gates_per_verified_s", "{:.2f}"),
        ("gate runs (records)", "gate_runs", "{:.0f}"),
        ("overhead per task s", "overhead_mean_s", "{:.3f}"),
        ("overhead share", "overhead_share", "{:.2%}"),
    ]
    lines = [
        f"Warm starts off against on: {result['specs']}, concurrency {result['concurrency']}, "
        f"median of {result['repeats']} paired batches ({result['elapsed_s']} s); off is "
        f"{result['off']}",
        "",
        "| figure | off (before) | on (after) | on / off |",
        "|---|---:|---:|---:|",
    ]
    for label, key, fmt in rows:
        ratio = on[key] / off[key] if off[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(off[key])} | {fmt.format(on[key])} | {ratio:.2f} |")
    verified = {m: [r["verified"] for r in runs] for m, runs in result["runs"].items()}
    setups = [s for r in result["runs"]["on"] for s in r["setup_s_per_base"]]
    lines += [
        "",
        f"Verified per batch: off {verified['off']}, on {verified['on']}. Set-up per base: "
        + (", ".join(f"{s:.1f} s" for s in setups) if setups else "none (no `setup:` in policy)"),
        "",
        host.describe_load(result["load_before"], result["load_after"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Warm starts off against on, side by side.")
    parser.add_argument("--specs", choices=["demo", "batch"], default="batch")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--before",
        type=Path,
        help="'off' runs this harness executable (a checkout from before issue 18) with the "
        "demo policy unchanged, instead of this harness with warm starts turned off",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.specs, args.count, args.repeats, args.concurrency, args.before)
    return host.report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
