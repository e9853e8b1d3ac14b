"""`harness report` on a 200-task run: the time to build the report (records, git reads) and to
render its HTML and Markdown, and the files' sizes. Goals (issue #16): under 2 s, and the HTML
under 5 MB with the diffs collapsed.

The run is synthetic but made of real parts: a git repository with one branch per task (each
changing --files files by --lines lines, so the diffs are real git output), a SQLite store with
the run's record (each spec's repository and base), and under runs/<id>/ a summary.json with
200 TaskResults (75 % verified, 15 % escalated, 5 % error, 5 % skipped), attempt records,
feedback files, gate logs, and escalation records with their problems. Each repetition builds
and renders the report from scratch.

    .venv/bin/python bench/report.py [--tasks 200] [--files 3] [--lines 60] [--repeats 5]
                                     [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import host
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

from harness.agents import Usage
from harness.report.html import diff_html, render_html
from harness.report.markdown import render_markdown
from harness.report.model import build_report
from harness.run.ledger import GateSummary, NightSummary, RunSummary, TaskResult
from harness.store import RunRecord, open_store

RUN_ID = "bench-night"
IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", *IDENTITY, *args],
        cwd=repo,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def outcome_of(index: int) -> str:
    share = index % 20
    return (
        "escalated"
        if share < 3
        else "error"
        if share == 3
        else "skipped"
        if share == 4
        else "verified"
    )


def make_run(root: Path, tasks: int, files: int, lines: int) -> tuple[Path, str]:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for number in range(files):
        body = "".join(f"value_{line} = {line}\n" for line in range(lines))
        (repo / f"module_{number}.py").write_text(body, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    run_dir = root / "runs" / RUN_ID
    results, specs = [], []
    for index in range(tasks):
        spec_id, outcome = f"task-{index:03d}", outcome_of(index)
        branch = f"harness/{RUN_ID}/{spec_id}"
        specs.append({"id": spec_id, "git_toplevel": str(repo), "base_commit": base})
        task_dir = run_dir / "tasks" / spec_id
        (task_dir / "gates").mkdir(parents=True)
        gates: list[GateSummary] = []
        if outcome != "skipped":
            git(repo, "checkout", "-q", "-b", branch, base)
            for number in range(files):
                changed = "".join(
                    f"value_{line} = {line * (index + 2)}  # task {index}\n"
                    for line in range(lines)
                )
                (repo / f"module_{number}.py").write_text(changed, encoding="utf-8")
            git(repo, "commit", "-qam", f"harness: attempt 1 of {spec_id}")
            git(repo, "checkout", "-q", "main")
            attempts = 2 if outcome == "escalated" else 1
            for attempt in range(1, attempts + 1):
                passed = outcome == "verified" or (attempt < attempts and False)
                gates.append(
                    GateSummary(
                        name="tests",
                        kind="test",
                        phase="attempt",
                        attempt=attempt,
                        exit_code=0 if passed else 1,
                        duration_s=1.5,
                        passed=passed,
                    )
                )
                record = {
                    "number": attempt,
                    "agent": "anthropic",
                    "stop_reason": "finished",
                    "summary": f"Changed **{files} modules**; see `module_0.py`.",
                    "usage": {"cost_usd": 0.12},
                    "duration_s": 30.0,
                    "steps": [],
                }
                (task_dir / f"attempt-{attempt}.json").write_text(json.dumps(record), "utf-8")
                (task_dir / "gates" / f"attempt-{attempt}-tests.log").write_text("ok\n" * 50)
                if not passed:
                    feedback = "## What happened\n### tests\n" + "".join(
                        f"- tests/test_m.py::test_{n}: AssertionError: {n} != {n + 1}\n"
                        for n in range(5)
                    )
                    (task_dir / f"feedback-{attempt}.md").write_text(feedback, "utf-8")
        escalation = None
        if outcome == "escalated":
            problems = [
                {
                    "type": "urn:harness:problem:gate-failed",
                    "title": "Gate failed",
                    "detail": f"test_{n} failed",
                    "gate": "tests",
                    "category": "agent_fixable",
                    "retryable": True,
                    "owner_action_required": False,
                }
                for n in range(5)
            ]
            block = f"```json\n{json.dumps(problems)}\n```"
            text = f"# Escalated\n\nAs application/problem+json:\n\n{block}\n"
            path = run_dir / "escalations" / f"{spec_id}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
            escalation = f"runs/{RUN_ID}/escalations/{spec_id}.md"
        results.append(
            TaskResult(
                spec_id=spec_id,
                title=f"Task {index}",
                tier=2,
                outcome=outcome,
                reason=None if outcome == "verified" else f"{outcome}: the reason for {spec_id}",
                attempts=0 if outcome == "skipped" else 1,
                agent="anthropic",
                branch=None if outcome == "skipped" else branch,
                pr=f"runs/{RUN_ID}/prs/{spec_id}.md" if outcome == "verified" else None,
                escalation=escalation,
                gates=gates,
                duration_s=95.0,
                usage=Usage(cost_usd=0.0 if outcome == "skipped" else 0.12),
            )
        )
    summary = RunSummary(
        run_id=RUN_ID,
        started_at="2026-12-03T22:00:00+00:00",
        finished_at="2026-12-04T05:40:00+00:00",
        policy="policy.yaml",
        isolation="bubblewrap",
        tasks=results,
        night=NightSummary(until="2026-12-04T06:00:00+00:00", budget_usd=40.0, spent_usd=22.8),
    )
    (run_dir / "summary.json").write_text(summary.model_dump_json(), "utf-8")
    (run_dir / "events.jsonl").write_text("", "utf-8")
    url = f"sqlite:///{root / 'runs' / 'harness.db'}"
    store = open_store(url)
    store.create_run(
        RunRecord(
            run_id=RUN_ID,
            run_dir=str(run_dir),
            policy_path="policy.yaml",
            policy_text="",
            specs=specs,
        ),
        [spec["id"] for spec in specs],
    )
    store.close()
    return root / "runs", url


def formatters(report: Any, repeats: int) -> dict[str, float]:
    """The report's diffs highlighted by Pygments' HtmlFormatter and by diff_html (the
    report's: DiffLexer tokens grouped into spans), taking turns; median seconds for all."""
    diffs = [card.diff for card in report.cards if card.diff]
    html_formatter = HtmlFormatter(cssclass="diff")
    times: dict[str, list[float]] = {"HtmlFormatter": [], "diff_html": []}
    for _ in range(repeats):
        started = time.perf_counter()
        for diff in diffs:
            highlight(diff, DiffLexer(), html_formatter)
        times["HtmlFormatter"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for diff in diffs:
            diff_html(diff)
        times["diff_html"].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(tasks: int, files: int, lines: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        runs_dir, url = make_run(Path(tmp), tasks, files, lines)
        rounds = []
        load_before = host.load()
        for _ in range(repeats):
            store = open_store(url)
            started = time.perf_counter()
            report = build_report(runs_dir, RUN_ID, store)
            built = time.perf_counter()
            html = render_html(report)
            rendered = time.perf_counter()
            markdown = render_markdown(report)
            finished = time.perf_counter()
            store.close()
            rounds.append(
                {
                    "build_s": built - started,
                    "html_s": rendered - built,
                    "markdown_s": finished - rendered,
                    "total_s": finished - started,
                    "html_bytes": len(html.encode()),
                    "markdown_bytes": len(markdown.encode()),
                }
            )
        highlighting = formatters(report, repeats)
        load_after = host.load()
    return {
        "load": host.describe_load(load_before, load_after),
        "highlighting_s": highlighting,
        "tasks": tasks,
        "files_per_task": files,
        "lines_per_file": lines,
        "rounds": rounds,
        "median": {key: statistics.median(r[key] for r in rounds) for key in rounds[0]},
    }


def markdown(result: dict[str, Any]) -> str:
    m, h = result["median"], result["highlighting_s"]
    return "\n".join(
        [
            f"### report: {result['tasks']} tasks, {result['files_per_task']} files x "
            f"{result['lines_per_file']} lines changed per task (median of "
            f"{len(result['rounds'])})",
            "",
            "| build (records, git) | HTML render | Markdown render | total | report.html "
            "| report.md |",
            "|---|---|---|---|---|---|",
            f"| {m['build_s']:.2f} s | {m['html_s']:.2f} s | {m['markdown_s']:.3f} s | "
            f"{m['total_s']:.2f} s | {m['html_bytes'] / 1e6:.2f} MB | "
            f"{m['markdown_bytes'] / 1e3:.0f} kB |",
            "",
            f"Highlighting the {result['tasks']} diffs, taking turns: Pygments' HtmlFormatter "
            f"{h['HtmlFormatter']:.2f} s, the report's diff_html {h['diff_html']:.2f} s "
            f"(x{h['HtmlFormatter'] / h['diff_html']:.1f}). Load: {result['load']}.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--lines", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    return host.report(
        measure(args.tasks, args.files, args.lines, args.repeats), markdown, args.json
    )


if __name__ == "__main__":
    raise SystemExit(main())
