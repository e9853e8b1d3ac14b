"""`harness check`: the policy's gates on a working tree, in a sandbox, and the problems printed
as an agent gets them. The gate machinery is imported inside the command (fast `--help`)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from cli.options import PolicyOption, resolve_policy
from cli.render import console, escape, fail


def check(
    path: Annotated[Path, typer.Argument(help="A working tree (default: here).")] = Path("."),
    policy: PolicyOption = None,
    output: Annotated[
        Literal["markdown", "json"], typer.Option("--format", help="How to print problems.")
    ] = "markdown",
    runs_dir: Annotated[Path, typer.Option(help="Where gate logs are kept.")] = Path("runs"),
) -> None:
    """Run the policy's gates on a working tree, in a sandbox, and print the problems: the
    same feedback an agent gets. Exit 0 clean, 1 problems found, 2 bad input."""
    from harness.config.policy import load_policy
    from harness.errors import InputError
    from harness.feedback import compact, render_for_agent
    from harness.gates.caches import keep_check, warm_check
    from harness.gates.runner import GateRunner
    from harness.run.context import create_run_dir, new_run_id
    from harness.sandbox.limits import Confinement
    from harness.sandbox.snapshot import SnapshotSandbox

    if not path.is_dir():
        raise fail(f"{path}: not a directory (pass the working tree to check)")
    try:
        policy = resolve_policy(policy, [path])
        loaded_policy = load_policy(policy)
        check_id, check_dir = create_run_dir(runs_dir, f"check-{new_run_id()}", loaded_policy, [])
    except InputError as exc:
        raise fail(str(exc)) from None
    confinement = Confinement.of(loaded_policy.limits, loaded_policy.sandbox)
    tree = path.resolve()
    sandbox = SnapshotSandbox.of(tree, confinement)
    # The tools' caches, warm: harness's own copy from this tree's last check, else the
    # tree's own (.mypy_cache ...), read and never written; kept again after the gates.
    kept = runs_dir.resolve() / ".check-caches" / hashlib.sha256(bytes(tree)).hexdigest()[:16]
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
        warm_check(sandbox.path, sandbox.scratch, tree, kept, gates)
        result = runner.run_all(gates, attempt=0, phase="check")
        keep_check(sandbox.path, sandbox.scratch, kept, gates)
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
            console().print(
                f"{verdict:<4}  {name:<16} {escape(record.command)}",
                highlight=False,
                soft_wrap=True,
            )
        for name in skipped:
            console().print(
                f"skip  {name:<16} integration gates run in `harness run`, with the services",
                highlight=False,
            )
        if result.problems:
            # soft_wrap: the feedback must reach a pipe or a CI log exactly as an agent gets it.
            text = escape(render_for_agent(feedback, 1))
            console().print(text, highlight=False, soft_wrap=True)
        console().print(f"logs: {check_dir}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if result.passed else 1)
