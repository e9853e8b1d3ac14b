"""`harness report`: a run as a reviewer reads it in the morning (see README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.store import Store


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path


def write_reports(
    runs_dir: Path, run_id: str, store: Store | None, previous: str | None = None
) -> ReportPaths:
    return ReportPaths(runs_dir / run_id / "report.html", runs_dir / run_id / "report.md")
