"""The local publisher: a task's PR or escalation as a Markdown record under the run's
directory (runs/<run-id>/prs/<spec-id>.md, runs/<run-id>/escalations/<spec-id>.md); the branch
it names is in the spec's repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.publish import Escalation, PullRequest
from harness.publish.render import render_escalation, render_pr
from harness.run.ledger import write_atomic


class LocalPublisher:
    name = "local"

    def __init__(self, run_dir: Path, relative: Callable[[Path], str]) -> None:
        self.run_dir = run_dir
        self.relative = relative
        """How records name paths (relative to the runs/ parent)."""

    def open_pr(self, pr: PullRequest) -> str:
        # Written whole, atomically, on every call: the same evidence gives the same record.
        return self._write("prs", pr.spec.id, render_pr(pr))

    def escalate(self, escalation: Escalation) -> str:
        return self._write("escalations", escalation.spec.id, render_escalation(escalation))

    def _write(self, folder: str, spec_id: str, text: str) -> str:
        path = self.run_dir / folder / f"{spec_id}.md"
        write_atomic(path, text)
        return self.relative(path)
