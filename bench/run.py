"""Run every benchmark, write the figures to bench/results/ as JSON, print them as Markdown.

    .venv/bin/python bench/run.py [--only NAME]... [--quick]      (or: make bench)

NAME: provision, overhead, feedback, model_calls, store, services, resume, startup, forge.

Figures, never pass/fail: the exit code is non-zero only when a benchmark could not run.
`--quick` runs fewer iterations (10 provisions, 1 batch, 50 store tasks, 5 service sandboxes,
1 crashed run per store, 5 start-ups of each command) to check the benchmarks themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedback
import forge
import host
import model_calls
import overhead
import provision
import resume
import services
import startup
import store_latency

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the harness benchmarks.")
    names = [
        "provision",
        "overhead",
        "feedback",
        "model_calls",
        "store",
        "services",
        "resume",
        "startup",
        "forge",
    ]
    parser.add_argument("--only", choices=names, action="append")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    chosen = args.only or names

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {"started_at": stamp, "machine": host.machine(), "results": {}}
    sections = []
    started = time.perf_counter()
    if "provision" in chosen:
        result = provision.run(iterations=10 if args.quick else 50)
        report["results"]["provision"] = result
        sections.append(provision.markdown(result))
    if "overhead" in chosen:
        result = overhead.run(repeats=1 if args.quick else 3)
        report["results"]["overhead"] = result
        sections.append(overhead.markdown(result))
    if "feedback" in chosen:
        result = feedback.run()
        report["results"]["feedback"] = result
        sections.append(feedback.markdown(result))
    if "model_calls" in chosen:
        result = model_calls.run(repeats=1, baseline=5) if args.quick else model_calls.run()
        report["results"]["model_calls"] = result
        sections.append(model_calls.markdown(result))
    if "store" in chosen:
        result = store_latency.run(iterations=50 if args.quick else 500)
        report["results"]["store"] = result
        sections.append(store_latency.markdown(result))
    if "services" in chosen:
        result = services.run(iterations=5, sandboxes=5) if args.quick else services.run()
        report["results"]["services"] = result
        sections.append(services.markdown(result))
    if "resume" in chosen:
        result = resume.run(repeats=1 if args.quick else 3)
        report["results"]["resume"] = result
        sections.append(resume.markdown(result))
    if "startup" in chosen:
        result = startup.run(runs=5 if args.quick else 21)
        report["results"]["startup"] = result
        sections.append(startup.markdown(result))
    if "forge" in chosen:
        tasks = 5 if args.quick else 20
        result = forge.measure(tasks, reviewers=False)
        report["results"]["forge"] = result
        sections.append(forge.markdown(result, tasks, reviewers=False))
    report["elapsed_s"] = round(time.perf_counter() - started, 1)

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{stamp}.json"
    text = json.dumps(report, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    (RESULTS / "latest.json").write_text(text, encoding="utf-8")

    m = report["machine"]
    print(
        f"## harness benchmarks, {stamp}\n\n"
        f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['bwrap']}, {m['git']}, "
        f"kernel {m['kernel']}\n"
    )
    print("\n\n".join(sections))
    print(f"\nwritten: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
