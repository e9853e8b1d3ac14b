"""Store write latency: what one task's bookkeeping costs on SQLite and on PostgreSQL.

Each backend gets a fresh store (SQLite: a file in a temporary directory, WAL, synchronous=FULL
by default; PostgreSQL: a throwaway server from Debian's packages on 127.0.0.1 via tests/pg.py,
with fsync on, and again with the tests' fsync=off settings for comparison). One thread then
walks N tasks through what a worker does, timing every store call on its own:

    claim_task → allocate_env → transition provisioning → heartbeat → begin_effect
    → finish_effect → transition ready → get_env (a read, for contrast) → complete_task

A few warm-up tasks run first and are not counted.

    .venv/bin/python bench/store_latency.py [--iterations 500] [--warmup 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import host
from stats import percentile

SOURCE = Path(__file__).resolve().parent.parent
# The throwaway PostgreSQL server is test code (tests/pg.py), not part of the harness package.
sys.path.insert(0, str(SOURCE / "tests"))
from pg import PostgresServer  # noqa: E402

from harness.store import EnvRecord, RunRecord, Store, open_store, worker_id  # noqa: E402

OPERATIONS = [
    "claim_task",
    "allocate_env",
    "transition",
    "heartbeat",
    "begin_effect",
    "finish_effect",
    "get_env",
    "complete_task",
]


def walk(store: Store, iterations: int, warmup: int) -> dict[str, list[float]]:
    """Every store call of `iterations` tasks, in ms by operation (warm-up tasks dropped)."""
    total = warmup + iterations
    spec_ids = [f"t{i:05}" for i in range(total)]
    run = RunRecord(run_id="bench", run_dir="runs/bench", policy_path="p.yaml", policy_text="")
    store.create_run(run, spec_ids)
    owner = worker_id()
    samples: dict[str, list[float]] = defaultdict(list)

    def timed(name: str, keep: bool, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        value = call(*args, **kwargs)
        if keep:
            samples[name].append((time.perf_counter() - started) * 1000)
        return value

    for index in range(total):
        keep = index >= warmup
        task = timed("claim_task", keep, store.claim_task, "bench", owner, 600)
        assert task is not None, "ran out of tasks"
        spec_id = task.spec_id
        env = EnvRecord(
            env_id=f"bench-{spec_id}",
            run_id="bench",
            spec_id=spec_id,
            kind="worktree",
            expires_at=time.time() + 3600,
            artifacts={"worktree": f"/tmp/bench/{spec_id}"},
        )
        key = f"commit:bench:{spec_id}:1"
        timed("allocate_env", keep, store.allocate_env, env)
        timed("transition", keep, store.transition, env.env_id, "provisioning")
        timed("heartbeat", keep, store.heartbeat, "bench", spec_id, owner, 600)
        timed("begin_effect", keep, store.begin_effect, key, "commit")
        timed("finish_effect", keep, store.finish_effect, key, {"sha": "0" * 40})
        branch = {"branch": f"b/{spec_id}"}
        timed("transition", keep, store.transition, env.env_id, "ready", artifacts=branch)
        timed("get_env", keep, store.get_env, env.env_id)
        timed("complete_task", keep, store.complete_task, "bench", spec_id, owner, {})
    return samples


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def measure(url: str, iterations: int, warmup: int) -> dict[str, Any]:
    started = time.perf_counter()
    store = open_store(url)
    open_ms = (time.perf_counter() - started) * 1000
    try:
        samples = walk(store, iterations, warmup)
    finally:
        store.close()
    writes = [ms for name, values in samples.items() if name != "get_env" for ms in values]
    return {
        "open_ms": open_ms,
        "stats_ms": {name: summarise(samples[name]) for name in OPERATIONS},
        "all_writes_ms": summarise(writes),
    }


def run(iterations: int = 500, warmup: int = 20) -> dict[str, Any]:
    load_before = host.load()
    started = time.perf_counter()
    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        backends["sqlite (WAL, synchronous=FULL)"] = measure(
            f"sqlite:///{Path(tmp) / 'harness.db'}", iterations, warmup
        )
    for label, durable in [("postgresql (fsync on)", True), ("postgresql (fsync off)", False)]:
        server = PostgresServer.start(durable=durable)
        try:
            backends[label] = measure(server.create_database(), iterations, warmup)
        finally:
            server.stop()
    return {
        "iterations": iterations,
        "warmup": warmup,
        "backends": backends,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "load_before": load_before,
        "load_after": host.load(),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Store latency: {result['iterations']} tasks (+{result['warmup']} warm-up) per backend, "
        f"one thread, {result['elapsed_s']} s. ms per call, p50 / p95 (max).",
        "",
        "| operation | " + " | ".join(result["backends"]) + " |",
        "|---|" + "---:|" * len(result["backends"]),
    ]
    for name in [*OPERATIONS, "all_writes"]:
        cells = []
        for figures in result["backends"].values():
            s = figures["all_writes_ms"] if name == "all_writes" else figures["stats_ms"][name]
            cells.append(f"{s['p50']:.2f} / {s['p95']:.2f} ({s['max']:.1f})")
        label = "**every write**" if name == "all_writes" else f"`{name}`"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    opened = ", ".join(f"{k} {v['open_ms']:.0f} ms" for k, v in result["backends"].items())
    lines += [
        "",
        f"Opening the store (connect, create tables): {opened}. "
        + host.describe_load(result["load_before"], result["load_after"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Store write latency, SQLite and PostgreSQL.")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.iterations, args.warmup)
    return host.report(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
