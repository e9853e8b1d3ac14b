"""The `harness` command line (typer): the composition root that wires harness/ and graphs/."""

from __future__ import annotations

import sys

import typer

from cli.check import check
from cli.doctor import doctor
from cli.gc import gc
from cli.history import runs, show
from cli.plan import sandbox_app
from cli.publish import publish
from cli.run import resume, run

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


@app.callback()
def main() -> None:
    """harness: specs in, verified pull requests or escalations out."""


# In the order `harness --help` lists them. Each command imports what it runs (the engine,
# graphs/, the store's drivers) inside its function, so printing help imports none of it.
app.command()(run)
app.command()(resume)
app.command()(runs)
app.command()(show)
app.command()(doctor)
app.command()(publish)
app.command()(gc)
app.command()(check)
app.add_typer(sandbox_app, name="sandbox")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
