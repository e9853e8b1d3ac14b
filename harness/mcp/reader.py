"""What `harness mcp`'s read-only tools answer: runs, tasks, problems, logs, diffs, evidence and
reports, read back from runs/<id>/, the store and git, never changed.

Everything returned is redacted (harness.redact) and says no host path: records are named
relative to the runs directory, and the project's own directory is written `<project>`. A path
a client names is never joined onto the disk: logs are chosen from the task's own listing.
An unknown run, spec or gate is a `ToolError` (the client sees `isError`), naming the argument.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from mcp.server.mcpserver.exceptions import ToolError

from harness import redact
from harness.errors import InfrastructureError, InputError
from harness.git import BranchReader
from harness.run.history import RunView, load_run, run_ids, task_story
from harness.run.ledger import TaskResult
from harness.store import Store

T = TypeVar("T")

PAGE_CHARS = 20_000
"""Default page size of logs and diffs: large enough for a gate's failure, small enough for a
model's context."""

PROBLEM_JSON = re.compile(r"As application/problem\+json:\n\n```json\n(.*?)\n```", re.DOTALL)
"""Where an escalation record keeps its problems (harness.publish.render)."""

LOG_NAME = re.compile(r"^(?P<phase>[a-z]+)-(?P<attempt>\d+)-(?P<gate>.+?)(?:-run\d+)?\.log$")
"""A gate's log under tasks/<spec>/gates/: `<phase>-<attempt>-<gate>[-run<n>].log`."""


@dataclass(frozen=True)
class RunsReader:
    """Read-side views of the runs under `runs_dir`, for one project at `root`."""

    root: Path
    runs_dir: Path
    store: Store

    # --- helpers ------------------------------------------------------------------------------

    def clean(self, value: T) -> T:
        """`value` with secrets redacted and host paths written relative (see the docstring)."""
        text = json.dumps(value)
        for path, name in ((self.runs_dir.resolve(), "runs"), (self.root.resolve(), "<project>")):
            text = text.replace(json.dumps(str(path))[1:-1], name)
        return cast(T, redact.current().value(json.loads(text)))

    def run(self, run_id: str) -> RunView:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ToolError(f"run_id: {run_id!r} is not a run id; list_runs lists them")
        view = load_run(self.runs_dir, run_id, self.store)
        if view is None:
            raise ToolError(f"run_id: no run {run_id!r}; list_runs lists the runs")
        return view

    def result(self, view: RunView, spec_id: str) -> TaskResult | None:
        """The task's result (None while it runs); ToolError when the run has no such task."""
        found = next((r for r in view.results if r.spec_id == spec_id), None)
        if found is None and spec_id not in view.unended:
            known = sorted([r.spec_id for r in view.results] + list(view.unended))
            raise ToolError(f"spec_id: run {view.run_id} has no task {spec_id!r}; it has {known}")
        return found

    # --- the tools ----------------------------------------------------------------------------

    def status(self, run_id: str) -> dict[str, Any]:
        view = self.run(run_id)
        tasks = [
            {
                "spec_id": r.spec_id,
                "outcome": r.outcome,
                "reason": r.reason,
                "attempts": r.attempts,
            }
            for r in view.results
        ] + [
            {"spec_id": spec, "outcome": None, "step": step}
            for spec, step in sorted(view.unended.items())
        ]
        return self.clean(
            {
                "run_id": view.run_id,
                "status": view.status,
                "done": view.status in ("finished", "interrupted") and not view.unended,
                "started_at": view.started_at,
                "counts": dict(view.counts()),
                "cost_usd": round(view.usage.cost_usd, 4),
                "tasks": tasks,
            }
        )

    def list_runs(self, limit: int) -> dict[str, Any]:
        ids = run_ids(self.runs_dir)[-limit:] if limit > 0 else []
        runs = []
        for run_id in reversed(ids):  # newest first
            view = load_run(self.runs_dir, run_id, self.store)
            if view is not None:
                runs.append(
                    {
                        "run_id": run_id,
                        "status": view.status,
                        "started_at": view.started_at,
                        "counts": dict(view.counts()),
                    }
                )
        return self.clean({"runs": runs})

    def list_tasks(self, run_id: str) -> dict[str, Any]:
        view = self.run(run_id)
        tasks: list[dict[str, Any]] = [r.model_dump(mode="json") for r in view.results]
        tasks += [{"spec_id": s, "outcome": None, "step": step} for s, step in view.unended.items()]
        return self.clean({"run_id": run_id, "tasks": tasks})

    def problems(self, run_id: str, spec_id: str) -> dict[str, Any]:
        """The task's last problems as RFC 9457 objects: its escalation record's (a verified
        or unended task has none to act on)."""
        view = self.run(run_id)
        result = self.result(view, spec_id)
        problems: list[dict[str, Any]] = []
        record = self._record(result.escalation if result else None)
        if record is not None:
            match = PROBLEM_JSON.search(record.read_text("utf-8"))
            problems = json.loads(match.group(1)) if match else []
        return self.clean(
            {
                "run_id": run_id,
                "spec_id": spec_id,
                "outcome": result.outcome if result else None,
                "problems": problems,
            }
        )

    def logs(
        self,
        run_id: str,
        spec_id: str,
        gate: str | None,
        attempt: int | None,
        offset: int,
        limit: int,
    ) -> dict[str, Any]:
        """Without `gate`: the task's gate logs. With it: one page of that gate's log (the
        last attempt's unless `attempt` is given), redacted."""
        view = self.run(run_id)
        self.result(view, spec_id)
        listing = self._gate_logs(view, spec_id)
        if gate is None:
            return self.clean(
                {"run_id": run_id, "spec_id": spec_id, "logs": [entry for entry, _ in listing]}
            )
        chosen = [
            (entry, path)
            for entry, path in listing
            if entry["gate"] == gate and (attempt is None or entry["attempt"] == attempt)
        ]
        if not chosen:
            gates = sorted({entry["gate"] for entry, _ in listing})
            what = f"gate {gate!r}" + (f" at attempt {attempt}" if attempt is not None else "")
            raise ToolError(f"gate: task {spec_id} has no log of {what}; it has {gates}")
        entry, path = chosen[-1]
        return self._page(
            {"run_id": run_id, "spec_id": spec_id, **entry},
            path.read_text("utf-8", errors="replace"),
            offset,
            limit,
        )

    def diff(self, run_id: str, spec_id: str, offset: int, limit: int) -> dict[str, Any]:
        """The task branch's change over the spec's base (made as reports make it: no external
        diff, no textconv, no filters), one page of it."""
        view = self.run(run_id)
        result = self.result(view, spec_id)
        record = self.store.get_run(run_id)
        spec = next((s for s in (record.specs if record else []) if s.get("id") == spec_id), None)
        head = {"run_id": run_id, "spec_id": spec_id, "branch": result.branch if result else None}
        if result is None or not result.branch or spec is None:
            return self._page(head | {"stat": ""}, "", offset, limit)
        try:
            reader = BranchReader(Path(spec["git_toplevel"]))
            tip = reader.heads(result.branch).get(result.branch)
            stat, diff = reader.diff_with_stat(spec["base_commit"], tip) if tip else ("", "")
        except (InfrastructureError, OSError, KeyError):
            stat, diff = "", ""
        return self._page(head | {"stat": stat}, diff, offset, limit)

    def evidence(self, run_id: str, spec_id: str) -> dict[str, Any]:
        """What harness measured of the task: its result (gates, attempts, cost), its attempts'
        stories, and its PR or escalation record."""
        view = self.run(run_id)
        result = self.result(view, spec_id)
        story = task_story(view, spec_id)
        record = self._record(result.pr or result.escalation) if result else None
        attempts = [
            {
                "number": a.number,
                "agent": a.agent,
                "stop_reason": a.stop_reason,
                "error": a.error,
                "duration_s": a.duration_s,
                "cost_usd": a.cost_usd,
                "steps": a.steps,
                "gates": [g.model_dump(mode="json") for g in a.gates],
            }
            for a in (story.attempts if story else [])
        ]
        return self.clean(
            {
                "run_id": run_id,
                "spec_id": spec_id,
                "result": result.model_dump(mode="json") if result else None,
                "path": story.path if story else [],
                "attempts": attempts,
                "verify": [g.model_dump(mode="json") for g in story.verify] if story else [],
                "record": record.read_text("utf-8") if record else None,
            }
        )

    def report(self, run_id: str) -> str:
        from harness.report.markdown import render_markdown
        from harness.report.model import build_report

        self.run(run_id)
        try:
            report = build_report(self.runs_dir, run_id, self.store)
        except InputError as exc:
            raise ToolError(f"run_id: {exc}") from None
        return self.clean(render_markdown(report))

    def specs(self) -> list[str]:
        """The project's spec files (under <project>/specs), relative to the project."""
        folder = self.root / "specs"
        if not folder.is_dir():
            return []
        return sorted(
            str(path.relative_to(self.root))
            for path in folder.rglob("*.md")
            if path.is_file() and not path.is_symlink() and path.name != "README.md"
        )

    def spec_text(self, name: str) -> str:
        listed = {Path(spec).name: spec for spec in self.specs()}
        if name not in listed:
            raise ToolError(f"spec: no spec file {name!r} under specs/; it has {sorted(listed)}")
        return self.clean((self.root / listed[name]).read_text("utf-8"))

    # --- internals ----------------------------------------------------------------------------

    def _record(self, named: str | None) -> Path | None:
        """A PR or escalation record a result names, when it is a file inside the runs
        directory (a result's path is never followed outside it)."""
        if not named:
            return None
        runs = self.runs_dir.resolve()
        for candidate in (Path(named), self.root / named, runs.parent / named):
            path = candidate.resolve()
            if path.is_relative_to(runs) and path.is_file():
                return path
        return None

    def _gate_logs(self, view: RunView, spec_id: str) -> list[tuple[dict[str, Any], Path]]:
        folder = view.run_dir / "tasks" / spec_id / "gates"
        found: list[tuple[dict[str, Any], Path]] = []
        if not folder.is_dir():
            return found
        for path in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime):
            match = LOG_NAME.match(path.name)
            if match and path.is_file() and not path.is_symlink():
                entry = {
                    "gate": match["gate"],
                    "phase": match["phase"],
                    "attempt": int(match["attempt"]),
                    "name": path.name,
                    "chars": path.stat().st_size,
                }
                found.append((entry, path))
        return found

    def _page(self, head: dict[str, Any], text: str, offset: int, limit: int) -> dict[str, Any]:
        text = redact.current().text(text)
        page = text[offset : offset + limit]
        following = offset + len(page)
        result = self.clean(head | {"offset": offset, "total_chars": len(text), "text": page})
        result["next_offset"] = following if following < len(text) else None
        return dict(result)
