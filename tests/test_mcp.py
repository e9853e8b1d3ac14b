"""`harness mcp`, driven by the official SDK's own client over stdio and streamable HTTP, against
the real server in a process of its own, on the tiny project with the replay agent: runs
started over MCP are ordinary runs (summary, store record, task branches)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import FINISH, WRITE_DONE, TinyProject, make_tiny_repo, run_cli
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from harness.store import open_store

REPO_ROOT = Path(__file__).resolve().parent.parent

TOOLS = {
    "start_run",
    "start_fleet",
    "get_status",
    "list_runs",
    "list_tasks",
    "get_problems",
    "get_logs",
    "get_diff",
    "get_evidence",
    "get_report",
    "promote",
    "cancel",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    """ok (verified), bad (escalated: writes nothing, the gate fails twice), slow (sleeps in
    its sandbox, for cancel)."""
    tiny = TinyProject(tmp_path_factory.mktemp("mcp"))
    make_tiny_repo(tiny.repo)
    tiny.write_policy(interrupt_grace_s=1)  # cancel waits for the grace: keep it short
    tiny.add_spec("ok")
    tiny.add_spec("bad", attempts=[[FINISH], [FINISH]])
    # Sleeps the first time only: resumed after a cancel, its attempt goes straight on (the
    # interrupted attempt's files are kept).
    slow = {
        "tool": "run",
        "args": {"command": "test -f started || { touch started; sleep 60; }", "timeout_s": 90},
    }
    tiny.add_spec("slow", attempts=[[slow, WRITE_DONE, FINISH]])
    return tiny


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    assert result.structured_content is not None, result
    content: dict[str, Any] = result.structured_content
    return content.get("result", content) if set(content) == {"result"} else content


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def poll_until_done(client: Client, run_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = structured(await client.call_tool("get_status", {"run_id": run_id}))
        if status["done"]:
            return status
        assert time.monotonic() < deadline, status
        await anyio.sleep(0.2)


def stdio_server(project: TinyProject) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "cli.main", "mcp", "--runs-dir", "runs"],
        cwd=str(project.root),
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_stdio_runs_polls_and_reads_a_run(project: TinyProject) -> None:
    async def session() -> None:
        async with Client(stdio_server(project)) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            for name in TOOLS - {"start_run", "start_fleet", "promote", "cancel"}:
                assert tools[name].annotations and tools[name].annotations.read_only_hint, name
            cancel = tools["cancel"].annotations
            assert cancel and cancel.destructive_hint and not cancel.read_only_hint
            assert "run_id" in tools["get_diff"].input_schema["properties"]
            assert "spec_id" in tools["get_diff"].input_schema["properties"]

            started = structured(
                await client.call_tool(
                    "start_run",
                    {
                        "spec_paths": ["specs/ok.md", "specs/bad.md"],
                        "policy": "policy.yaml",
                        "idempotency_key": "stdio-1",
                    },
                )
            )
            run_id = started["run_id"]
            assert started["started"] is True
            again = structured(
                await client.call_tool(
                    "start_run",
                    {
                        "spec_paths": ["specs/ok.md"],
                        "policy": "policy.yaml",
                        "idempotency_key": "stdio-1",
                    },
                )
            )
            assert (again["run_id"], again["started"]) == (run_id, False)

            status = await poll_until_done(client, run_id)
            outcomes = {t["spec_id"]: t["outcome"] for t in status["tasks"]}
            assert outcomes == {"ok": "verified", "bad": "escalated"}
            assert status["status"] == "finished"

            problems = structured(
                await client.call_tool("get_problems", {"run_id": run_id, "spec_id": "bad"})
            )["problems"]
            assert problems and all({"type", "title"} <= set(p) for p in problems), problems
            assert any("done.txt" in json.dumps(p) for p in problems), problems
            assert (
                structured(
                    await client.call_tool("get_problems", {"run_id": run_id, "spec_id": "ok"})
                )["problems"]
                == []
            )

            diff = structured(
                await client.call_tool("get_diff", {"run_id": run_id, "spec_id": "ok"})
            )
            assert "+++ b/done.txt" in diff["text"] and "done.txt" in diff["stat"], diff

            logs = structured(
                await client.call_tool("get_logs", {"run_id": run_id, "spec_id": "bad"})
            )
            assert {entry["gate"] for entry in logs["logs"]} == {"done"}
            page = structured(
                await client.call_tool(
                    "get_logs", {"run_id": run_id, "spec_id": "bad", "gate": "done", "limit": 5}
                )
            )
            assert page["attempt"] == 2 and len(page["text"]) <= 5

            evidence = structured(
                await client.call_tool("get_evidence", {"run_id": run_id, "spec_id": "ok"})
            )
            assert evidence["result"]["outcome"] == "verified" and evidence["record"]
            assert str(project.root) not in json.dumps(evidence)  # no host paths
            report = await client.call_tool("get_report", {"run_id": run_id})
            assert not report.is_error and "ok" in text(report)

            listed = structured(await client.call_tool("list_runs", {}))
            assert run_id in [run["run_id"] for run in listed["runs"]]

            # cancel of a finished run resolves, and says so
            done = structured(await client.call_tool("cancel", {"run_id": run_id}))
            assert done["cancelled"] is False and "already finished" in done["note"]

            # bad arguments: tool errors naming the argument; the server keeps going
            bad = [
                ("get_status", {"run_id": "no-such-run"}, "run_id"),
                ("get_problems", {"run_id": run_id, "spec_id": "nope"}, "spec_id"),
                ("get_logs", {"run_id": run_id, "spec_id": "ok", "limit": 0}, "limit"),
                ("get_logs", {"run_id": run_id, "spec_id": "ok", "gate": "nope"}, "gate"),
                (
                    "start_run",
                    {"spec_paths": ["specs/ok.md"], "policy": "../../etc/passwd"},
                    "policy",
                ),
                (
                    "start_run",
                    {"spec_paths": ["specs/none.md"], "policy": "policy.yaml"},
                    "spec_paths",
                ),
                (
                    "start_run",
                    {
                        "spec_text": "---\nid: x\nacceptance: [rm -rf /]\n---\n",
                        "policy": "policy.yaml",
                    },
                    "acceptance",
                ),
                ("cancel", {"run_id": "no-such-run"}, "run_id"),
            ]
            for tool, args, named in bad:
                result = await client.call_tool(tool, args)
                assert result.is_error, (tool, args)
                assert named in text(result), (tool, text(result))
            assert structured(await client.call_tool("list_runs", {}))["runs"]

            resources = {str(r.uri) for r in (await client.list_resources()).resources}
            assert {"harness://runs", "harness://specs"} <= resources
            read = await client.read_resource(f"harness://runs/{run_id}")
            assert run_id in read.contents[0].text  # type: ignore[union-attr]
            with pytest.raises(MCPError, match="no run 'nope'"):
                await client.read_resource("harness://runs/nope")
            specs = await client.read_resource("harness://specs")
            assert "specs/ok.md" in specs.contents[0].text  # type: ignore[union-attr]

    anyio.run(session)
    # The same durable run as from the CLI: its summary, its store record, its task branch.
    summary = project.summary(run_id := project_run_id(project, "stdio-1"))
    assert {t["spec_id"] for t in summary["tasks"]} == {"ok", "bad"}
    store = open_store(f"sqlite:///{project.runs / 'harness.db'}")
    assert store.get_run(run_id) is not None


def project_run_id(project: TinyProject, key: str) -> str:
    import hashlib

    return "mcp-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def http_server(project: TinyProject) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "mcp", "--transport", "http", "--port", str(port)],
        cwd=project.root,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "harness mcp --transport http did not listen"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(30)


def test_http_cancel_stops_a_running_run_resumably(project: TinyProject, http_server: str) -> None:
    async def session() -> str:
        async with Client(http_server) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            started = structured(
                await client.call_tool(
                    "start_run", {"spec_paths": ["specs/slow.md"], "policy": "policy.yaml"}
                )
            )
            run_id: str = started["run_id"]
            # Until its agent is in the sleep: then cancel stops it mid-attempt.
            deadline = time.monotonic() + 60
            while "agent" not in json.dumps(
                structured(await client.call_tool("get_status", {"run_id": run_id}))["tasks"]
            ):
                assert time.monotonic() < deadline
                await anyio.sleep(0.1)
            # Waiting in get_status sends progress notifications: tasks ended of all, steps.
            progress: list[tuple[float, float | None, str | None]] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append((done, total, message))

            waited = structured(
                await client.call_tool(
                    "get_status", {"run_id": run_id, "wait_s": 1.2}, progress_callback=on_progress
                )
            )
            assert waited["done"] is False
            assert progress and progress[0][:2] == (0, 1), progress
            assert "slow: agent (attempt 1)" in (progress[0][2] or ""), progress
            cancelled = structured(await client.call_tool("cancel", {"run_id": run_id}))
            assert cancelled["cancelled"] is True, cancelled
            status = cancelled["status"]
            assert status["done"] and status["status"] == "interrupted", status
            assert [t["outcome"] for t in status["tasks"]] == ["interrupted"]
            # cancelling it again still resolves
            again = structured(await client.call_tool("cancel", {"run_id": run_id}))
            assert again["cancelled"] is False
            bad = await client.call_tool("get_diff", {"run_id": run_id})
            assert bad.is_error and "spec_id" in text(bad)
            return run_id

    run_id = anyio.run(session)
    # interrupted, not failed: the store still has it pending, so `harness resume` takes it
    store = open_store(f"sqlite:///{project.runs / 'harness.db'}")
    assert [task.status for task in store.tasks(run_id)] == ["pending"]
    resumed = run_cli(["resume", run_id, "--runs-dir", str(project.runs)], cwd=project.root)
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    assert project.task("slow", run_id)["outcome"] == "verified"


def test_http_fleet_runs_ranks_and_promotes(project: TinyProject, http_server: str) -> None:
    async def session() -> tuple[str, dict[str, Any]]:
        async with Client(http_server) as client:
            started = structured(
                await client.call_tool(
                    "start_fleet", {"spec_path": "specs/ok.md", "n": 2, "policy": "policy.yaml"}
                )
            )
            run_id: str = started["run_id"]
            status = await poll_until_done(client, run_id)
            assert sorted(t["spec_id"] for t in status["tasks"]) == ["ok/v1", "ok/v2"], status
            tasks = structured(await client.call_tool("list_tasks", {"run_id": run_id}))["tasks"]
            assert sorted(t["rank"] for t in tasks) == [1, 2], tasks
            bad = await client.call_tool(
                "promote", {"run_id": run_id, "spec_id": "ok", "variant": 9}
            )
            assert bad.is_error and "9" in text(bad), text(bad)
            promoted = structured(
                await client.call_tool("promote", {"run_id": run_id, "spec_id": "ok"})
            )
            return run_id, promoted

    run_id, promoted = anyio.run(session)
    assert (project.runs / run_id / "prs" / "ok.md").is_file(), promoted


INSPECTOR = REPO_ROOT / ".cache/mcp-inspector/node_modules/.bin/mcp-inspector"


def inspector(project: TinyProject, *args: str) -> Any:
    """The MCP Inspector's CLI mode (npm @modelcontextprotocol/inspector, a client nobody here
    wrote) starting `harness mcp` over stdio in the project; its JSON answer."""
    if not INSPECTOR.exists():
        pytest.fail(f"{INSPECTOR} is missing: run `make mcp-inspector` (make test does)")
    harness = [sys.executable, "-m", "cli.main", "mcp"]
    done = subprocess.run(
        [str(INSPECTOR), "--cli", *harness, *args],
        cwd=project.root,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_the_mcp_inspector_lists_the_tools_and_gets_a_cli_runs_status(
    project: TinyProject,
) -> None:
    listed = inspector(project, "--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == TOOLS
    # A run made by `harness run`, not over MCP: the server sees it all the same.
    assert project.run(str(project.specs / "ok.md"), run_id="cli-run").exit_code == 0
    status = inspector(
        project,
        "--method",
        "tools/call",
        "--tool-name",
        "get_status",
        "--tool-arg",
        "run_id=cli-run",
    )
    assert not status.get("isError"), status
    answer = status.get("structuredContent") or json.loads(status["content"][0]["text"])
    assert answer["status"] == "finished"
    assert [(t["spec_id"], t["outcome"]) for t in answer["tasks"]] == [("ok", "verified")]
