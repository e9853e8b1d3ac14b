"""`harness runs` and `harness show RUN_ID [SPEC]`: the runs under the runs directory, one
run's outcomes again, or one task's story (see harness.run.history). They read; nothing is
changed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import RunsDirOption, StoreOption, store_url
from cli.render import console, escape, fail, plural, summary_table

if TYPE_CHECKING:
    from harness.run.history import RunView, TaskStory
    from harness.run.ledger import GateSummary
    from harness.store import Store


def runs(runs_dir: RunsDirOption = Path("runs"), store: StoreOption = None) -> None:
    """List the runs recorded under the runs directory, oldest first: id, start, status,
    outcomes and model cost."""
    from rich.table import Table

    from harness.run.history import load_run, run_ids

    state = _store(store, runs_dir)
    table = Table(title=f"runs in {runs_dir}")
    for column in ("run", "started", "status", "tasks", "cost"):
        table.add_column(column)
    try:
        views = [load_run(runs_dir, run_id, state) for run_id in run_ids(runs_dir)]
    finally:
        if state is not None:
            state.close()
    for view in views:
        if view is not None:
            table.add_row(
                view.run_id,
                _when(view.started_at),
                view.status,
                _counts(view),
                f"${view.usage.cost_usd:.2f}",
            )
    if not table.rows:
        console().print(f"no runs in {runs_dir}", highlight=False, soft_wrap=True)
        return
    console().print(table)


def show(
    run_id: Annotated[str, typer.Argument(help="The run (its directory name under runs/).")],
    spec: Annotated[
        str | None, typer.Argument(help="A task's spec id: its story instead of the run's.")
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Print a run's outcomes table again, or one task's story: its attempts, gates,
    problems, cost and records."""
    from harness.run.history import load_run, task_story

    state = _store(store, runs_dir)
    try:
        view = load_run(runs_dir, run_id, state)
    finally:
        if state is not None:
            state.close()
    if view is None:
        raise fail(f"show: no run {run_id!r} in {runs_dir}; `harness runs` lists the runs there")
    hint = f"`harness resume {run_id}{_runs_dir_option(runs_dir)}` continues it"
    if spec is None:
        _print_run(view, hint)
        return
    story = task_story(view, spec)
    if story is None:
        tasks = ", ".join([r.spec_id for r in view.results] + list(view.unended)) or "none"
        raise fail(f"show: run {run_id} has no task {spec!r}; its tasks: {tasks}")
    _print_story(view, story, hint)


def _store(option: str | None, runs_dir: Path) -> Store | None:
    """The store holding the runs' task records, when it opens (an unfinished run's ended
    tasks are there); without it, what runs/ holds is shown."""
    from harness.errors import InputError
    from harness.store import open_store

    url = store_url(option, None, runs_dir)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None  # no store there: nothing to add, and nothing is created
    try:
        return open_store(url)
    except InputError:
        return None


def _when(iso: str | None) -> str:
    if not iso:
        return "?"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _counts(view: RunView) -> str:
    counted = view.counts()
    order = ["verified", "escalated", "error", "deferred", "interrupted", "not ended"]
    names = sorted(counted, key=lambda name: order.index(name) if name in order else 99)
    return ", ".join(f"{counted[name]} {name}" for name in names) or "no tasks"


def _runs_dir_option(runs_dir: Path) -> str:
    return "" if runs_dir == Path("runs") else f" --runs-dir {runs_dir}"


def _print_run(view: RunView, hint: str) -> None:
    console().print(
        f"run [bold]{view.run_id}[/bold]: {view.status}, started {_when(view.started_at)}, "
        f"{plural(len(view.results) + len(view.unended), 'task')}, "
        f"cost ${view.usage.cost_usd:.2f}",
        highlight=False,
        soft_wrap=True,
    )
    if view.results:
        console().print(summary_table(view.results))
    for spec_id, step in view.unended.items():
        console().print(
            f"  {spec_id:<30} not ended (last step: {step})", highlight=False, soft_wrap=True
        )
    if view.status in ("unfinished", "interrupted"):
        console().print(hint, highlight=False, soft_wrap=True)
    elif deferred := [result for result in view.results if result.outcome == "deferred"]:
        due = min(result.retry_at or "" for result in deferred)
        console().print(
            f"{plural(len(deferred), 'task')} deferred by the model API: `harness resume "
            f"{view.run_id}` continues them after {_when(due)} (with --now, at once)",
            highlight=False,
            soft_wrap=True,
        )


def _print_story(view: RunView, story: TaskStory, hint: str) -> None:
    result = story.result
    if result is None:
        last = story.path[-1] if story.path else "queued"
        console().print(
            f"task [bold]{story.spec_id}[/bold] (run {view.run_id}): not ended; last step: {last}",
            highlight=False,
        )
    else:
        console().print(
            f"task [bold]{story.spec_id}[/bold] (run {view.run_id}): {result.outcome} after "
            f"{plural(result.attempts, 'attempt')} (agent {result.agent}) in "
            f"{result.duration_s:.1f}s; agent {result.agent_s:.1f}s, gates {result.gates_s:.1f}s, "
            f"cost ${result.usage.cost_usd:.2f} ({plural(result.usage.calls, 'model call')})",
            highlight=False,
            soft_wrap=True,
        )
    for attempt in story.attempts:
        error = f": {attempt.error}" if attempt.error else ""
        _line(
            f"attempt {attempt.number}: agent {attempt.agent}, {plural(attempt.steps, 'step')}, "
            f"{attempt.stop_reason}{error}, {attempt.duration_s:.1f}s, "
            f"${attempt.cost_usd:.2f}",
            indent=2,
        )
        for gate in attempt.gates:
            _line(_gate_line(gate), indent=4)
        if attempt.feedback is not None:
            _line(f"problems fed back: {_shown(attempt.feedback)}", indent=4)
    if story.verify:
        _line("verify (all gates again, on the committed tree):", indent=2)
        for gate in story.verify:
            _line(_gate_line(gate), indent=4)
    elif result is not None and result.verify_reused is not None:
        _line(result.verify_reused.line(), indent=2)
    if result is not None:
        if result.reason:
            _line(f"reason: {result.reason}", indent=2)
        records = [("PR record", result.pr), ("escalation", result.escalation)]
        records += [("branch", result.branch)]
        for name, value in records:
            if value:
                _line(f"{name}: {value}", indent=2)
    elif story.path:
        _line("steps so far: " + " → ".join(story.path), indent=2)
        _line(hint, indent=2)


def _gate_line(gate: GateSummary) -> str:
    if gate.not_applicable:
        verdict = f"not run ({gate.not_applicable})"
    elif gate.setup_failure:
        verdict = f"not run: setup failed ({gate.setup_failure})"
    elif gate.passed:
        verdict = "pass"
    else:
        verdict = f"FAIL (exit {gate.exit_code})"
    counts = ", ".join(f"{n} {name}" for name, n in gate.counts.items())
    rerun = f" (re-run {gate.run})" if gate.run > 1 else ""
    detail = f"  {counts}" if counts else ""
    return f"{gate.name + rerun:<20} {verdict}{detail}  {gate.duration_s:.1f}s"


def _line(text: str, indent: int) -> None:
    console().print(" " * indent + escape(text), highlight=False, soft_wrap=True)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
