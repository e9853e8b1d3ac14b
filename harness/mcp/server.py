"""`harness mcp`: harness's runs as MCP tools and resources, on the official SDK's MCPServer.

Long operations (start_run, start_fleet) answer at once with the run id; get_status is the
polling tool. Read-only tools are annotated so; cancel is the one destructive tool, and it
always resolves: a finished run answers that it had finished. Bad arguments, an unknown run or
spec, are tool errors (`isError`) naming the argument; the server keeps running.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from harness.mcp.launcher import RunLauncher
from harness.mcp.reader import PAGE_CHARS, RunsReader

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
STARTS = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
PUBLISHES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
STOPS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)

MAX_WAIT_S = 300.0
"""get_status's longest wait: within a client's usual request timeout."""
POLL_S = 0.5

RunId = Annotated[str, Field(description="A run's id (list_runs lists them).")]
SpecId = Annotated[str, Field(description="A task's spec id within the run (list_tasks).")]
Offset = Annotated[int, Field(ge=0, description="Where the page starts, in characters.")]
Limit = Annotated[int, Field(ge=1, le=200_000, description="The page's size, in characters.")]


def fleets_available() -> bool:
    """Whether this harness has fleets (harness.fleet and its promote)."""
    return importlib.util.find_spec("harness.fleet.promote") is not None


def build_server(reader: RunsReader, launcher: RunLauncher) -> MCPServer:
    """The server, its tools and resources over `reader` and `launcher`."""
    server: MCPServer = MCPServer(
        "harness",
        instructions=(
            "harness runs coding agents on specs in sandboxes and holds their work to "
            "deterministic gates. start_run returns a run id at once: poll get_status until "
            "done, then read get_problems, get_diff, get_evidence, get_report."
        ),
    )

    @server.tool(annotations=STARTS)
    def start_run(
        policy: Annotated[str, Field(description="The policy file, relative to the project.")],
        spec_paths: Annotated[
            list[str] | None, Field(description="Spec files or folders, relative to the project.")
        ] = None,
        spec_text: Annotated[
            str | None, Field(description="One inline spec (front matter + body) instead.")
        ] = None,
        idempotency_key: Annotated[
            str | None, Field(description="The same key answers the same run, started once.")
        ] = None,
    ) -> dict[str, Any]:
        """Start a run of specs; returns its run id at once (poll get_status)."""
        run_id, started = launcher.start_run(spec_paths or [], spec_text, policy, idempotency_key)
        return {"run_id": run_id, "started": started, **_status_or_starting(run_id)}

    @server.tool(annotations=STARTS)
    def start_fleet(
        spec_path: Annotated[str, Field(description="The spec file, relative to the project.")],
        policy: Annotated[str, Field(description="The policy file, relative to the project.")],
        n: Annotated[int, Field(ge=1, le=64, description="How many variants.")] = 3,
        vary: Annotated[
            list[str] | None, Field(description="KEY=V1,V2 lists, e.g. model=a,b (as --vary).")
        ] = None,
        first_verified: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a fleet of N variants of one spec; returns its run id at once."""
        if not fleets_available():
            raise ToolError("start_fleet: fleets are not available in this harness")
        run_id, started = launcher.start_fleet(
            spec_path, n, vary or [], first_verified, policy, idempotency_key
        )
        return {"run_id": run_id, "started": started, **_status_or_starting(run_id)}

    def _status_or_starting(run_id: str) -> dict[str, Any]:
        try:
            return {"status": get_status_now(run_id)}
        except ToolError:  # its process ended before making the run: get_status says why
            return {"status": {"run_id": run_id, "process": launcher.process_state(run_id)}}

    def get_status_now(run_id: str) -> dict[str, Any]:
        process = launcher.process_state(run_id)
        try:
            status = reader.status(run_id)
        except ToolError:
            if process is None:
                raise
            # Its process ended, or is still setting up, before the run existed.
            status = reader.clean({"run_id": run_id, "status": "starting", "done": False})
            if not process["running"]:
                status |= {"status": "failed to start", "done": True}
        if process is not None:
            status["process"] = reader.clean(process)
            if process["running"]:
                status["done"] = False
        return status

    @server.tool(name="get_status", annotations=READ_ONLY)
    async def get_status_tool(
        run_id: RunId,
        ctx: Context,
        wait_s: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_WAIT_S,
                description="Wait up to this long for the run to end, sending progress "
                "notifications (tasks ended of all) meanwhile; 0: answer at once.",
            ),
        ] = 0,
    ) -> dict[str, Any]:
        """A run's status (finished, interrupted, running, unfinished), each task's outcome or
        current step, and `done`: the polling tool for runs started here or elsewhere."""
        deadline = time.monotonic() + wait_s
        status = await anyio.to_thread.run_sync(get_status_now, run_id)
        while not status["done"] and time.monotonic() < deadline:
            tasks = status.get("tasks", [])
            ended = sum(task.get("outcome") is not None for task in tasks)
            steps = ", ".join(f"{t['spec_id']}: {t['step']}" for t in tasks if t.get("step"))
            await ctx.report_progress(ended, len(tasks) or None, steps or status["status"])
            await anyio.sleep(POLL_S)
            status = await anyio.to_thread.run_sync(get_status_now, run_id)
        return status

    @server.tool(annotations=READ_ONLY)
    def list_runs(
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many.")] = 50,
    ) -> dict[str, Any]:
        """The runs under the runs directory, newest first."""
        return reader.list_runs(limit)

    @server.tool(annotations=READ_ONLY)
    def list_tasks(run_id: RunId) -> dict[str, Any]:
        """A run's tasks: each ended one's result (summary.json's line), each other's step."""
        return reader.list_tasks(run_id)

    @server.tool(annotations=READ_ONLY)
    def get_problems(run_id: RunId, spec_id: SpecId) -> dict[str, Any]:
        """A task's last problems, as RFC 9457 problem objects."""
        return reader.problems(run_id, spec_id)

    @server.tool(annotations=READ_ONLY)
    def get_logs(
        run_id: RunId,
        spec_id: SpecId,
        gate: Annotated[
            str | None, Field(description="A gate's name; omitted: the list of logs.")
        ] = None,
        attempt: Annotated[int | None, Field(ge=1, description="Default: the last.")] = None,
        offset: Offset = 0,
        limit: Limit = PAGE_CHARS,
    ) -> dict[str, Any]:
        """A task's gate logs: the list, or one page of one gate's log (redacted)."""
        return reader.logs(run_id, spec_id, gate, attempt, offset, limit)

    @server.tool(annotations=READ_ONLY)
    def get_diff(
        run_id: RunId, spec_id: SpecId, offset: Offset = 0, limit: Limit = PAGE_CHARS
    ) -> dict[str, Any]:
        """The task branch's diff over its base, with its stat, one page at a time."""
        return reader.diff(run_id, spec_id, offset, limit)

    @server.tool(annotations=READ_ONLY)
    def get_evidence(run_id: RunId, spec_id: SpecId) -> dict[str, Any]:
        """What harness measured of a task: gates per attempt, verification, cost, time, and
        its PR or escalation record."""
        return reader.evidence(run_id, spec_id)

    @server.tool(annotations=READ_ONLY)
    def get_report(run_id: RunId) -> str:
        """The run's morning report, in Markdown."""
        return reader.report(run_id)

    @server.tool(annotations=PUBLISHES)
    def promote(
        run_id: RunId,
        spec_id: Annotated[str, Field(description="The fleet's spec id (before /v<k>).")],
        variant: Annotated[int | None, Field(ge=1, description="Default: the top one.")] = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Publish a fleet's variant (default: the top-ranked) as the spec's PR."""
        if not fleets_available():
            raise ToolError("promote: fleets are not available in this harness")
        reader.run(run_id)
        code, output = launcher.promote(run_id, spec_id, variant, force)
        if code != 0:
            raise ToolError(reader.clean(output.strip().splitlines()[-1] if output else "failed"))
        return reader.clean({"run_id": run_id, "spec_id": spec_id, "output": output})

    @server.tool(annotations=STOPS)
    def cancel(run_id: RunId) -> dict[str, Any]:
        """Stop a run started here: its tasks stop cleanly, keep their work and end
        `interrupted` (`harness resume` continues them). Always resolves: a run that had
        already finished answers so."""
        had_process = launcher.process_state(run_id) is not None
        if not had_process:
            reader.run(run_id)  # an unknown run is a tool error
        stopped = launcher.cancel(run_id)
        status = get_status_now(run_id)
        if stopped:
            note = "stopped; `harness resume` continues its unfinished tasks"
        elif status.get("done"):
            note = f"nothing to cancel: the run had already {status['status']}"
        else:
            note = "not started by this server: stop it where it runs (Ctrl-C or SIGTERM)"
        return {"run_id": run_id, "cancelled": stopped, "note": note, "status": status}

    @server.resource("harness://runs", mime_type="application/json")
    def runs_resource() -> dict[str, Any]:
        """The runs, newest first."""
        return reader.list_runs(500)

    @server.resource("harness://runs/{run_id}", mime_type="application/json")
    def run_resource(run_id: str) -> dict[str, Any]:
        """A run's status."""
        try:
            return reader.status(run_id)
        except ToolError as exc:  # an unknown run, task or spec: not found, not a crash
            raise ResourceNotFoundError(str(exc)) from None

    @server.resource("harness://runs/{run_id}/tasks/{spec_id}", mime_type="application/json")
    def task_resource(run_id: str, spec_id: str) -> dict[str, Any]:
        """A task's evidence."""
        try:
            return reader.evidence(run_id, spec_id)
        except ToolError as exc:  # an unknown run, task or spec: not found, not a crash
            raise ResourceNotFoundError(str(exc)) from None

    @server.resource("harness://runs/{run_id}/report", mime_type="text/markdown")
    def report_resource(run_id: str) -> str:
        """A run's report."""
        try:
            return reader.report(run_id)
        except ToolError as exc:  # an unknown run, task or spec: not found, not a crash
            raise ResourceNotFoundError(str(exc)) from None

    @server.resource("harness://specs", mime_type="application/json")
    def specs_resource() -> list[str]:
        """The project's spec files."""
        return reader.specs()

    @server.resource("harness://specs/{name}", mime_type="text/markdown")
    def spec_resource(name: str) -> str:
        """One spec file of the project, by file name."""
        try:
            return reader.spec_text(name)
        except ToolError as exc:  # an unknown run, task or spec: not found, not a crash
            raise ResourceNotFoundError(str(exc)) from None

    return server


def project_paths(root: Path, runs_dir: Path) -> tuple[Path, Path]:
    """The project's directory and its runs directory, absolute."""
    root = root.resolve()
    return root, (root / runs_dir).resolve()
