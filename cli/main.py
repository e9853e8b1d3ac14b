"""The `harness` command line (typer + rich)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from cli.plan import sandbox_app
from harness.agents.fleet import Fleet
from harness.config.policy import AgentKind, Policy, load_policy, parse_policy, policy_changes
from harness.config.spec import Spec, load_specs
from harness.errors import InputError
from harness.feedback import compact, render_for_agent
from harness.gates.preexisting import PreexistingFailures
from harness.gates.runner import GateRunner
from harness.run.context import RunContext, check_run_id, create_run_dir, new_run_id
from harness.run.gc import collect
from harness.run.ledger import RunLedger, TaskResult
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.snapshot import SnapshotSandbox
from harness.store import RunRecord, Store, open_store, redact_url, worker_id

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(sandbox_app, name="sandbox")
console = Console()
err = Console(stderr=True)

# The workflow the CLI runs. harness/ never imports graphs/ directly: a workflow is named by
# reference, so users can point --workflow at a graph of their own.
DEFAULT_WORKFLOW = "graphs.batch:run_batch"
BatchRunner = Callable[[RunContext, list[Spec]], list[TaskResult]]

OUTCOME_STYLE = {"verified": "green", "escalated": "yellow", "error": "red"}


@app.callback()
def main() -> None:
    """harness: specs in, verified pull requests or escalations out."""


def _error_line(message: str) -> None:
    # Escaped: messages quote user input and patterns, whose [brackets] are not rich markup.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    _error_line(message)
    return typer.Exit(2)


def _load_workflow(reference: str) -> BatchRunner:
    module_name, _, attr = reference.partition(":")
    try:
        runner = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InputError(
            f"--workflow: cannot load {reference!r} ({exc}); use module:function"
        ) from None
    if not callable(runner):
        raise InputError(f"--workflow: {reference!r} is not callable")
    return runner  # type: ignore[no-any-return]


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store URL (sqlite:///… or postgresql://…). Default: $HARNESS_STORE_URL, the "
        "policy's store.url, then sqlite under --runs-dir.",
    ),
]


def _store_url(option: str | None, policy: Policy | None, runs_dir: Path) -> str:
    return (
        option
        or os.environ.get("HARNESS_STORE_URL")
        or (policy.store.url if policy else None)
        or f"sqlite:///{(runs_dir / 'harness.db').resolve()}"
    )


@app.command()
def run(
    specs: Annotated[list[Path], typer.Argument(help="Spec files or directories of specs.")],
    policy: Annotated[Path, typer.Option(help="Policy YAML.")] = Path("policies/default.yaml"),
    concurrency: Annotated[int | None, typer.Option(help="Tasks at once.", min=1)] = None,
    run_id: Annotated[str | None, typer.Option(help="Default: a timestamp.")] = None,
    agent: Annotated[AgentKind | None, typer.Option(help="Override the policy's agent.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are recorded.")] = Path("runs"),
    store: StoreOption = None,
    workflow: Annotated[str, typer.Option(hidden=True)] = DEFAULT_WORKFLOW,
) -> None:
    """Run specs through the validation loop; each ends verified (a PR record) or escalated."""
    try:
        loaded_policy = load_policy(policy)
        agent_kind = agent or loaded_policy.agent.kind
        loaded_policy.check_agent(agent_kind, policy)
        runner = _load_workflow(workflow)
        spec_set = load_specs(specs)
    except InputError as exc:
        raise _fail(str(exc)) from None
    for problem in spec_set.errors:
        _error_line(problem)
    if not spec_set.specs:
        raise _fail("no spec could be loaded; nothing was run")
    try:
        run_id, _ = check_run_id(runs_dir, run_id, loaded_policy, spec_set.specs)
        # Then the store: one that does not connect stops the run before anything is made.
        state = open_store(_store_url(store, loaded_policy, runs_dir))
        run_id, run_dir = create_run_dir(runs_dir, run_id, loaded_policy, spec_set.specs)
        state.create_run(
            RunRecord(
                run_id=run_id,
                run_dir=str(run_dir),
                policy_path=str(policy.resolve()),
                policy_text=policy.read_text(encoding="utf-8"),
                options={"agent": agent_kind, "concurrency": concurrency, "workflow": workflow},
                specs=[spec.model_dump() for spec in spec_set.specs],
                input_errors=spec_set.errors,
            ),
            [spec.id for spec in spec_set.specs],
        )
    except InputError as exc:
        raise _fail(str(exc)) from None
    ctx = _context(
        state, run_id, run_dir, loaded_policy, policy, agent_kind, concurrency, spec_set.errors
    )
    _execute(ctx, runner, spec_set.specs, "run")
    if spec_set.errors:
        raise typer.Exit(2)
    raise typer.Exit(1 if any(r.outcome == "error" for r in ctx.results()) else 0)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (its runs/ directory name).")],
    force: Annotated[
        bool, typer.Option(help="Resume even though the policy file changed since the start.")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(help="Tasks at once.", min=1)] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are recorded.")] = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Continue a run a crash interrupted, or join it as another worker: finished tasks are
    not redone; an in-flight one continues from its last completed step."""
    try:
        state = open_store(_store_url(store, None, runs_dir))
        record = state.get_run(run_id)
        if record is None:
            raise InputError(
                f"resume: no run {run_id!r} in the store {redact_url(state.url)}; list runs with "
                f"`ls {runs_dir}`, or pass --store if it used another store"
            )
        loaded_policy = _policy_for_resume(record, force)
        runner = _load_workflow(record.options.get("workflow", DEFAULT_WORKFLOW))
    except InputError as exc:
        raise _fail(str(exc)) from None
    specs = [Spec.model_validate(spec) for spec in record.specs]
    ctx = _context(
        state,
        run_id,
        Path(record.run_dir),
        loaded_policy,
        Path(record.policy_path),
        record.options["agent"],
        concurrency or record.options.get("concurrency"),
        record.input_errors,
    )
    ctx.started_at = datetime.fromtimestamp(record.created_at, UTC).isoformat(
        timespec="milliseconds"
    )
    # The run-wide spend cap counts what finished tasks already spent. (What an interrupted
    # task spent before the crash counts toward its own budget, from its checkpoint, but not
    # toward the run's.)
    for result in ctx.results():
        ctx.fleet.spend.add(result.usage)
    done = sum(task.status == "done" for task in state.tasks(run_id))
    console.print(f"resume [bold]{run_id}[/bold]: {done} of {len(specs)} task(s) already done")
    _execute(ctx, runner, specs, "resume")
    raise typer.Exit(1 if any(r.outcome == "error" for r in ctx.results()) else 0)


def _policy_for_resume(record: RunRecord, force: bool) -> Policy:
    """The run's policy: its file as it was at the start. If the file changed since, resuming
    is refused unless forced (then the file's current version is used)."""
    path = Path(record.policy_path)
    try:
        current = path.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current is not None and current != record.policy_text:
        changes = policy_changes(record.policy_text, current)
        if not force:
            raise InputError(
                f"resume: policy {path} changed since run {record.run_id} started "
                f"({'; '.join(changes)}); restore it, or pass --force to resume with the new one"
            )
        return load_policy(path)
    if current is None and not force:
        raise InputError(
            f"resume: policy {path} no longer exists; restore it, or pass --force to resume "
            "with the policy recorded when the run started"
        )
    return parse_policy(record.policy_text, path)


def _context(
    store: Store,
    run_id: str,
    run_dir: Path,
    policy: Policy,
    policy_path: Path,
    agent_kind: AgentKind,
    concurrency: int | None,
    input_errors: list[str],
) -> RunContext:
    isolation = bwrap.probe()
    if not isolation.available:
        err.print(
            f"[bold red]WARNING: sandbox isolation is OFF: {isolation.reason}. Agent and gate "
            "commands run unconfined on this host. Install bubblewrap (apt-get install "
            "bubblewrap) to confine them.[/bold red]"
        )
    # A terminal gets a live table; a log (CI, a pipe) gets one line per step instead.
    ledger = RunLedger(run_dir, run_id, listener=None if console.is_terminal else _print_step)
    return RunContext(
        run_id=run_id,
        run_dir=run_dir,
        policy=policy,
        policy_path=policy_path,
        agent_kind=agent_kind,
        concurrency=concurrency or policy.concurrency,
        ledger=ledger,
        isolation=isolation,
        fleet=Fleet.for_policy(policy),
        base_failures=PreexistingFailures(run_dir),
        store=store,
        input_errors=input_errors,
    )


def _execute(ctx: RunContext, runner: BatchRunner, specs: list[Spec], verb: str) -> None:
    console.print(
        f"{verb} [bold]{ctx.run_id}[/bold]: {len(specs)} task(s), concurrency "
        f"{ctx.concurrency}, agent {ctx.agent_kind}, isolation "
        f"{'bubblewrap' if ctx.isolation.available else 'OFF'}, store {redact_url(ctx.store.url)}",
        soft_wrap=True,
    )
    started = time.monotonic()
    try:
        with Live(
            get_renderable=lambda: _live_table(ctx.ledger),
            console=console,
            transient=True,
            auto_refresh=console.is_terminal,
        ):
            runner(ctx, specs)
    finally:
        ctx.services.stop()  # integration baselines and sandboxes: processes, worktrees
        ctx.ledger.close()
    console.print(_summary_table(ctx.results()))
    console.print(
        f"finished in {time.monotonic() - started:.1f}s · summary: {ctx.run_dir}/summary.json"
    )


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option(help="Say what would be removed; remove nothing.")] = (
        False
    ),
    runs_dir: Annotated[Path, typer.Option(help="Where runs are recorded.")] = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Tear down expired and orphaned environments (a crashed worker's), delete branches whose
    retention ended, and remove worktrees and sandbox processes no live record owns."""
    try:
        state = open_store(_store_url(store, None, runs_dir))
    except InputError as exc:
        raise _fail(str(exc)) from None
    try:
        actions = collect(state, runs_dir, owner=worker_id(), dry_run=dry_run)
    finally:
        state.close()
    verb = "would" if dry_run else "did"
    for action in actions:
        mark = "" if action.done or dry_run else " (not done)"
        console.print(
            f"{action.kind:<11} {escape(action.target)}  ({escape(action.why)}){mark}",
            highlight=False,
            soft_wrap=True,
        )
    count = sum(a.done for a in actions) if not dry_run else len(actions)
    console.print(f"gc: {verb} {count} action(s)")


@app.command()
def check(
    path: Annotated[Path, typer.Argument(help="A working tree (default: here).")] = Path("."),
    policy: Annotated[Path, typer.Option(help="Policy YAML.")] = Path("policies/default.yaml"),
    output: Annotated[
        Literal["markdown", "json"], typer.Option("--format", help="How to print problems.")
    ] = "markdown",
    runs_dir: Annotated[Path, typer.Option(help="Where gate logs are kept.")] = Path("runs"),
) -> None:
    """Run the policy's gates on a working tree, in a sandbox, and print the problems: the
    same feedback an agent gets. Exit 0 clean, 1 problems found, 2 bad input."""
    if not path.is_dir():
        raise _fail(f"{path}: not a directory (pass the working tree to check)")
    try:
        loaded_policy = load_policy(policy)
        check_id, check_dir = create_run_dir(runs_dir, f"check-{new_run_id()}", loaded_policy, [])
    except InputError as exc:
        raise _fail(str(exc)) from None
    sandbox = SnapshotSandbox.of(path.resolve())
    try:
        runner = GateRunner(
            sandbox,
            log_dir=check_dir,
            instance=f"runs/{check_id}",
            infrastructure=loaded_policy.infrastructure,
            flaky=loaded_policy.flaky,
        )
        # Integration gates need a run's services (a baseline, the changed services): not here.
        gates = [gate for gate in loaded_policy.gates if gate.kind != "integration"]
        skipped = [gate.name for gate in loaded_policy.gates if gate.kind == "integration"]
        result = runner.run_all(gates, attempt=0, phase="check")
    finally:
        sandbox.teardown()
    feedback = compact(result.problems, max_tokens=loaded_policy.feedback.max_tokens)
    if output == "json":
        document = {
            "path": str(path),
            "policy": str(policy),
            "passed": result.passed,
            "gates": [record.model_dump(exclude={"excerpt"}) for record in result.records],
            "problems": [p.as_problem_json() for p in result.problems],
            "flaky": [p.as_problem_json() for p in result.flaky],
            "skipped": skipped,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        for record in result.records:
            verdict = "pass" if record.passed else "FAIL"
            name = record.name if record.run == 1 else f"{record.name} (re-run)"
            console.print(
                f"{verdict:<4}  {name:<16} {escape(record.command)}",
                highlight=False,
                soft_wrap=True,
            )
        for name in skipped:
            console.print(
                f"skip  {name:<16} integration gates run in `harness run`, with the services",
                highlight=False,
            )
        if result.problems:
            # soft_wrap: the feedback must reach a pipe or a CI log exactly as an agent gets it.
            text = escape(render_for_agent(feedback, 1))
            console.print(text, highlight=False, soft_wrap=True)
        console.print(f"logs: {check_dir}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if result.passed else 1)


def _print_step(event: dict[str, Any]) -> None:
    if event["event"] == "enter":
        attempt = f" (attempt {event['attempt']})" if event.get("attempt") else ""
        console.print(f"  {event['spec_id']:<30} {event['node']}{attempt}", highlight=False)
    elif event["node"] == "teardown":
        console.print(f"  {event['spec_id']:<30} done", highlight=False)


def _live_table(ledger: RunLedger) -> Table:
    table = Table(title="harness run", expand=False)
    for column in ("task", "attempt", "step", "elapsed"):
        table.add_column(column)
    now = time.monotonic()
    for status in ledger.snapshot():
        step = status.outcome or status.step
        table.add_row(status.spec_id, str(status.attempt), step, f"{status.elapsed(now):.1f}s")
    return table


def _summary_table(results: list[TaskResult]) -> Table:
    table = Table(title="outcomes")
    for column in ("task", "outcome", "attempts", "reason / record"):
        table.add_column(column, overflow="fold")
    for result in results:
        style = OUTCOME_STYLE[result.outcome]
        detail = result.pr if result.outcome == "verified" else result.reason
        if result.escalation:
            detail = f"{detail}\n{result.escalation}"
        table.add_row(
            result.spec_id,
            f"[{style}]{result.outcome}[/{style}]",
            str(result.attempts),
            escape(detail or ""),
        )
    return table


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
