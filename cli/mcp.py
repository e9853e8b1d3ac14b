"""`harness mcp`: the MCP server (harness/mcp/) on stdio or streamable HTTP, over the runs of
the project in the current directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from cli.options import RunsDirOption, StoreOption, store_url
from cli.render import err as console
from cli.render import fail


def mcp(
    transport: Annotated[
        Literal["stdio", "http"],
        typer.Option(help="stdio (a client starts harness mcp) or streamable HTTP."),
    ] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP: the address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: the port.", min=1, max=65535)] = 8765,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Serve harness's runs over MCP: start runs and fleets, poll them, read their problems,
    logs, diffs, evidence and reports, promote, cancel. The project is the current directory."""
    try:
        from harness.mcp.launcher import RunLauncher
        from harness.mcp.reader import RunsReader
        from harness.mcp.server import build_server, project_paths
    except ImportError:
        raise fail("harness mcp needs the official MCP SDK: pip install 'harness[mcp]'") from None
    from harness.errors import InputError
    from harness.store import open_store

    if transport == "http" and host not in ("127.0.0.1", "::1", "localhost"):
        # The MCP endpoint has no authentication: whoever reaches it can start runs.
        console().print(
            f"[yellow]warning: harness mcp listens on {host}, not loopback, without "
            "authentication: anyone who reaches it can start and cancel runs[/yellow]",
            soft_wrap=True,
        )
    root, runs = project_paths(Path.cwd(), runs_dir)
    try:
        state = open_store(store_url(store, None, runs))
    except InputError as exc:
        raise fail(str(exc)) from None
    # The runs it starts are `harness run` in processes of their own (harness/mcp/launcher.py).
    launcher = RunLauncher(root, runs, [sys.executable, "-m", "cli.main"], store)
    server = build_server(RunsReader(root, runs, state), launcher)
    try:
        if transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=host, port=port)
    finally:
        launcher.stop_all()
