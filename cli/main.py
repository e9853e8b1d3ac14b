"""The `harness` command line (typer): the composition root that wires harness/ and graphs/."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.check import check
from cli.doctor import doctor
from cli.fleet import fleet
from cli.gc import gc
from cli.history import runs, show
from cli.mcp import mcp
from cli.night import night
from cli.plan import sandbox_app
from cli.promote import promote
from cli.publish import publish
from cli.report import report
from cli.run import resume, run
from cli.serve import serve
from cli.triggers import triggers_app

# Plain click help and tracebacks (here and in `harness sandbox`): rich's help panels and
# pretty tracebacks import rich's Markdown, markdown-it and rich.traceback, more than half of
# what `harness --help` took to start (bench/startup.py). rich still prints runs and errors.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="harness: specs in, verified pull requests or escalations out.",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"harness {version('harness')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print harness's version."
        ),
    ] = False,
) -> None:
    """harness: specs in, verified pull requests or escalations out."""


# In the order `harness --help` lists them, each with a one-sentence summary for that list
# (click would cut a docstring's first sentence mid-way). Each command imports what it runs
# (the engine, graphs/, the store's drivers) inside its function, so printing help imports
# none of it.
app.command(short_help="Run specs: each task ends verified (a PR record) or escalated.")(run)
app.command(short_help="Continue an interrupted or crashed run where it stopped.")(resume)
app.command(short_help="Run N variants of one spec and rank them on evidence.")(fleet)
app.command(short_help="Publish a fleet's best (or chosen) variant as its spec's PR record.")(
    promote
)
app.command(short_help="Run specs as a night: a window, a spending cap, then a report.")(night)
app.command(short_help="Write a run's morning report (HTML, Markdown) or print it.")(report)
app.command(short_help="Receive tracker webhooks and run the tasks they admit.")(serve)
app.command(short_help="List the runs under the runs directory.")(runs)
app.command(short_help="Show a run's outcomes, or one task's story.")(show)
app.command(short_help="Check what a run needs, without running any agent.")(doctor)
app.command(short_help="Publish a finished run's tasks on the forge.")(publish)
app.command(short_help="Remove expired or orphaned sandboxes, worktrees and branches.")(gc)
app.command(short_help="Run the policy's gates on a working tree; print the problems.")(check)
app.command(short_help="Serve runs over MCP (stdio or HTTP) for agents and IDEs.")(mcp)
app.add_typer(
    triggers_app, name="triggers", short_help="Replay recorded webhooks; list the trigger ledger."
)
app.add_typer(
    sandbox_app, name="sandbox", short_help="Plan integration sandboxes (Kubernetes), for review."
)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
