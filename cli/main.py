"""The `harness` command line (typer + rich)."""

from __future__ import annotations

import sys

import typer

from cli.check import check
from cli.gc import gc
from cli.plan import sandbox_app
from cli.run import resume, run

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """harness: specs in, verified pull requests or escalations out."""


# In the order `harness --help` lists them. Each command imports what it runs (the engine,
# graphs/, the store's drivers) inside its function, so printing help imports none of it.
app.command()(run)
app.command()(resume)
app.command()(gc)
app.command()(check)
app.add_typer(sandbox_app, name="sandbox")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
