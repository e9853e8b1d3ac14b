"""`harness report`: a run as a reviewer reads it in the morning: a self-contained HTML file
(html.py), a Markdown digest (markdown.py), both from one `Report` (model.py); the terminal
summary is the CLI's (cli/report.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.report.html import render_html
from harness.report.markdown import render_markdown
from harness.report.model import Report, build_report
from harness.run.ledger import write_atomic
from harness.store import Store

__all__ = ["Report", "ReportPaths", "build_report", "write_reports"]


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path


def write_reports(
    runs_dir: Path, run_id: str, store: Store | None, previous: str | None = None
) -> ReportPaths:
    """runs/<run-id>/report.html and report.md; InputError when the run has no records."""
    report = build_report(runs_dir, run_id, store, previous)
    return write_built(report)


def write_built(report: Report) -> ReportPaths:
    paths = ReportPaths(report.run_dir / "report.html", report.run_dir / "report.md")
    write_atomic(paths.html, render_html(report))
    write_atomic(paths.markdown, render_markdown(report))
    return paths
