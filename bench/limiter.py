"""The adaptive API limiter against servers with a concurrency cap it is not told (issue #14).

50 tasks x 6 model calls, 20 tasks at once, through harness's own call path
(AnthropicAgent._call: full-jitter retries, the adaptive limiter) and the real SDK, against
the fake Messages API (tests/fake_anthropic.py) with a cap of 4, 8 and 16 requests at once,
0.2 s per request, answering 429 with `retry-after: 1` over its cap (as its tests' server
does). The limiter starts at the policy's 32, which is above every cap: it must find the cap.

Against each cap, taking turns in one run:
- `adaptive`: the run's limiter (limiter state in a SQLite store, as `harness run` has it; or
  `--state memory`);
- `oracle`: the same path with the limit set to the cap from the start, so never a 429.

Figures: tasks lost (a task with a call that failed for good; goal 0), 429s per completed
call (goal <= 0.2), and wall time against the oracle (goal <= 1.25x).

    .venv/bin/python bench/limiter.py [--tasks 50] [--calls 6] [--lanes 20] [--caps 4 8 16]
                                      [--latency 0.2] [--repeats 2] [--state store|memory]
                                      [--retry-after 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_anthropic import FakeMessagesServer, message, sequence  # noqa: E402
from limiter_calls import REQUEST, caller  # noqa: E402

from harness.agents.api_errors import CallFailed  # noqa: E402
from harness.agents.limiter import StoreLimiterState  # noqa: E402
from harness.store import open_store  # noqa: E402

CEILING = 32


def one_batch(
    cap: int, limit: int, args: argparse.Namespace, store_dir: Path, name: str
) -> dict[str, Any]:
    ok = sequence(message("ok"), repeat_last=True)
    with FakeMessagesServer(
        ok,
        api_key="test-key",
        max_concurrent=cap,
        latency_s=args.latency,
        concurrency_retry_after=args.retry_after,
    ) as server:
        store = (
            open_store(f"sqlite:///{store_dir / f'{name}.db'}") if args.state == "store" else None
        )
        state = StoreLimiterState(store, name) if store is not None else None
        # Policy defaults for retries (6 retries, 1 s initial backoff, 120 s cap).
        retry = {"initial_backoff_s": 1.0, "max_wait_s": 120}
        agent = caller(server.base_url, limit, state=state, retry=retry)

        def task(_: int) -> bool:
            try:
                for _call in range(args.calls):
                    agent._call(dict(REQUEST))
            except CallFailed:
                return False
            return True

        started = time.monotonic()
        with ThreadPoolExecutor(args.lanes) as lanes:
            done = list(lanes.map(task, range(args.tasks)))
        wall = time.monotonic() - started
        if store is not None:
            store.close()
    completed = server.call_count
    return {
        "wall_s": round(wall, 3),
        "lost": done.count(False),
        "completed_calls": completed,
        "rejected_429": server.rejected_for_concurrency,
        "per_call_429": round(server.rejected_for_concurrency / max(1, completed), 4),
        "peak_offered": server.peak_offered_concurrency,
        "limits_seen": agent.fleet.limiter.limits_seen[:40],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--lanes", type=int, default=20)
    parser.add_argument("--caps", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--state", choices=["store", "memory"], default="store")
    parser.add_argument("--retry-after", default="1", help="the cap's 429 retry-after; '' none")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.retry_after = args.retry_after or None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-limiter-") as tmp:
        for cap in args.caps:
            runs: dict[str, list[dict[str, Any]]] = {"adaptive": [], "oracle": []}
            for repeat in range(args.repeats):  # taking turns, so load hits both alike
                for side, limit in (("adaptive", CEILING), ("oracle", cap)):
                    name = f"{side}-{cap}-{repeat}"
                    runs[side].append(one_batch(cap, limit, args, Path(tmp), name))
                    print(f"cap {cap} {side} #{repeat + 1}: {runs[side][-1]}", file=sys.stderr)
            adaptive, oracle = runs["adaptive"], runs["oracle"]
            ratio = statistics.median(
                a["wall_s"] / o["wall_s"] for a, o in zip(adaptive, oracle, strict=True)
            )
            rows.append(
                {
                    "cap": cap,
                    "lost": sum(r["lost"] for r in adaptive),
                    "per_call_429": round(
                        statistics.median(r["per_call_429"] for r in adaptive), 3
                    ),
                    "adaptive_wall_s": round(statistics.median(r["wall_s"] for r in adaptive), 2),
                    "oracle_wall_s": round(statistics.median(r["wall_s"] for r in oracle), 2),
                    "ratio": round(ratio, 2),
                    "runs": runs,
                }
            )
    print(
        f"| cap | tasks lost (of {args.tasks * args.repeats}) | 429s per completed call "
        "| wall, adaptive | wall, oracle | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['cap']} | {row['lost']} | {row['per_call_429']} | {row['adaptive_wall_s']} s "
            f"| {row['oracle_wall_s']} s | {row['ratio']}x |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2, default=str
            )
        )


if __name__ == "__main__":
    main()
