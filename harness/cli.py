"""The `harness` command line (typer + rich)."""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from harness.agents.fleet import Fleet
from harness.baseline import BaseFailures
from harness.errors import InputError
from harness.feedback import compact, render_for_agent
from harness.gates import GateRunner
from harness.ledger import RunLedger, TaskResult
from harness.policy import AgentKind, load_policy
from harness.run import RunContext, create_run_dir, new_run_id
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.snapshot import SnapshotSandbox
from harness.spec import Spec, load_specs

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
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


@app.command()
def run(
    specs: Annotated[list[Path], typer.Argument(help="Spec files or directories of specs.")],
    policy: Annotated[Path, typer.Option(help="Policy YAML.")] = Path("policies/default.yaml"),
    concurrency: Annotated[int | None, typer.Option(help="Tasks at once.", min=1)] = None,
    run_id: Annotated[str | None, typer.Option(help="Default: a timestamp.")] = None,
    agent: Annotated[AgentKind | None, typer.Option(help="Override the policy's agent.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are recorded.")] = Path("runs"),
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
        run_id, run_dir = create_run_dir(runs_dir, run_id, loaded_policy, spec_set.specs)
    except InputError as exc:
        raise _fail(str(exc)) from None

    isolation = bwrap.probe()
    if not isolation.available:
        err.print(
            f"[bold red]WARNING: sandbox isolation is OFF: {isolation.reason}. Agent and gate "
            "commands run unconfined on this host. Install bubblewrap (apt-get install "
            "bubblewrap) to confine them.[/bold red]"
        )
    # A terminal gets a live table; a log (CI, a pipe) gets one line per step instead.
    live = console.is_terminal
    ledger = RunLedger(run_dir, run_id, listener=None if live else _print_step)
    ctx = RunContext(
        run_id=run_id,
        run_dir=run_dir,
        policy=loaded_policy,
        policy_path=policy,
        agent_kind=agent_kind,
        concurrency=concurrency or loaded_policy.concurrency,
        ledger=ledger,
        isolation=isolation,
        fleet=Fleet.for_policy(loaded_policy),
        base_failures=BaseFailures(run_dir),
        input_errors=spec_set.errors,
    )
    console.print(
        f"run [bold]{run_id}[/bold]: {len(spec_set.specs)} task(s), concurrency "
        f"{ctx.concurrency}, agent {ctx.agent_kind}, isolation "
        f"{'bubblewrap' if isolation.available else 'OFF'}",
        soft_wrap=True,
    )
    started = time.monotonic()
    try:
        with Live(
            get_renderable=lambda: _live_table(ledger),
            console=console,
            transient=True,
            auto_refresh=live,
        ):
            results = runner(ctx, spec_set.specs)
    finally:
        ledger.close()
    console.print(_summary_table(results))
    console.print(
        f"finished in {time.monotonic() - started:.1f}s · summary: {run_dir}/summary.json"
    )
    if spec_set.errors:
        raise typer.Exit(2)
    raise typer.Exit(1 if any(r.outcome == "error" for r in results) else 0)


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
        result = runner.run_all(loaded_policy.gates, attempt=0, phase="check")
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
