"""The agent tools (a public contract) against a real sandbox: results, and readable errors."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from harness.agents import ToolCall
from harness.agents.tools import SandboxTools
from harness.sandbox.local import WorktreeSandbox


@pytest.fixture
def tools(sandbox: WorktreeSandbox, tmp_path: Path) -> SandboxTools:
    lines = "".join(f"line {n}\n" for n in range(1, 11))
    sandbox.write("src/numbers.txt", lines)
    sandbox.write("src/app.py", "def greet():\n    return 'hello'\n\n\ngreet()\ngreet()\n")
    sandbox.write("docs/notes.md", "nothing to see\n")
    deadline = time.monotonic() + 120  # the task's wall-clock budget, as a monotonic time
    return SandboxTools(sandbox, deadline=deadline, log_dir=tmp_path / "tool-logs")


def ok(tools: SandboxTools, tool: str, **args: Any) -> str:
    call = tools.call(tool, args)
    assert call.ok, f"{tool} failed: {call.result}"
    return call.result


def refused(tools: SandboxTools, tool: str, **args: Any) -> ToolCall:
    call = tools.call(tool, args)
    assert not call.ok, f"{tool} {args} should have failed: {call.result}"
    assert call.result.strip(), "a tool error needs a message the agent can read"
    return call


def test_read_file_whole(tools: SandboxTools) -> None:
    result = ok(tools, "read_file", path="src/numbers.txt")
    assert result.splitlines()[0] == "    1  line 1"
    assert result.splitlines()[-1] == "   10  line 10"


def test_read_file_line_range(tools: SandboxTools) -> None:
    result = ok(tools, "read_file", path="src/numbers.txt", start_line=3, end_line=5)
    assert result.splitlines() == ["    3  line 3", "    4  line 4", "    5  line 5"]


def test_read_file_range_past_the_end_is_clipped(tools: SandboxTools) -> None:
    result = ok(tools, "read_file", path="src/numbers.txt", start_line=9, end_line=50)
    assert result.splitlines() == ["    9  line 9", "   10  line 10"]


def test_read_missing_file_is_a_tool_error(tools: SandboxTools) -> None:
    call = refused(tools, "read_file", path="src/nope.txt")
    assert "no such file" in call.result


def test_read_a_directory_is_a_tool_error(tools: SandboxTools) -> None:
    call = refused(tools, "read_file", path="src")
    assert "directory" in call.result


def test_write_file_creates_parents(tools: SandboxTools, sandbox: WorktreeSandbox) -> None:
    result = ok(tools, "write_file", path="new/deep/file.txt", content="fresh\n")
    assert "new/deep/file.txt" in result
    assert (sandbox.path / "new" / "deep" / "file.txt").read_text(encoding="utf-8") == "fresh\n"


def test_write_file_overwrites(tools: SandboxTools, sandbox: WorktreeSandbox) -> None:
    ok(tools, "write_file", path="docs/notes.md", content="replaced\n")
    assert (sandbox.path / "docs" / "notes.md").read_text(encoding="utf-8") == "replaced\n"


def test_edit_file_replaces_exactly_one_match(
    tools: SandboxTools, sandbox: WorktreeSandbox
) -> None:
    ok(tools, "edit_file", path="src/app.py", old="return 'hello'", new="return 'hi'")
    text = (sandbox.path / "src" / "app.py").read_text(encoding="utf-8")
    assert "return 'hi'" in text
    assert "hello" not in text


def test_edit_file_with_no_match_is_a_tool_error(
    tools: SandboxTools, sandbox: WorktreeSandbox
) -> None:
    before = (sandbox.path / "src" / "app.py").read_text(encoding="utf-8")
    call = refused(tools, "edit_file", path="src/app.py", old="goodbye", new="x")
    assert "not found" in call.result
    assert "src/app.py" in call.result
    assert (sandbox.path / "src" / "app.py").read_text(encoding="utf-8") == before


def test_edit_file_with_two_matches_is_a_tool_error(
    tools: SandboxTools, sandbox: WorktreeSandbox
) -> None:
    before = (sandbox.path / "src" / "app.py").read_text(encoding="utf-8")
    call = refused(tools, "edit_file", path="src/app.py", old="greet()\n", new="run()\n")
    assert "2 times" in call.result
    assert (sandbox.path / "src" / "app.py").read_text(encoding="utf-8") == before


def test_list_files(tools: SandboxTools) -> None:
    listed = ok(tools, "list_files").splitlines()
    assert {"src/numbers.txt", "src/app.py", "docs/notes.md", "README.md"} <= set(listed)
    assert not any(line.startswith(".git/") for line in listed)
    assert ok(tools, "list_files", path="src").splitlines() == ["src/app.py", "src/numbers.txt"]


def test_list_files_hides_git_metadata(tools: SandboxTools) -> None:
    """In a worktree `.git` is a file (a pointer to the repository's git dir), not a folder;
    it is git's metadata all the same, and not part of the project the agent works on."""
    assert ".git" not in ok(tools, "list_files").splitlines()


def test_list_files_of_a_missing_directory_is_a_tool_error(tools: SandboxTools) -> None:
    refused(tools, "list_files", path="no-such-dir")


def test_search(tools: SandboxTools) -> None:
    result = ok(tools, "search", pattern=r"line 1\d?$", path="src")
    assert result.splitlines() == ["src/numbers.txt:1: line 1", "src/numbers.txt:10: line 10"]
    assert ok(tools, "search", pattern="zebra") == "no matches"


def test_search_with_a_bad_regex_is_a_tool_error(tools: SandboxTools) -> None:
    call = refused(tools, "search", pattern="([unclosed")
    assert "regular expression" in call.result


def test_run_returns_exit_code_and_output(tools: SandboxTools, tmp_path: Path) -> None:
    result = ok(tools, "run", command="echo out; echo err >&2; exit 3")
    assert result.startswith("exit code 3")
    assert "out" in result and "err" in result
    log = tmp_path / "tool-logs" / "run-1.log"
    assert "out" in log.read_text(encoding="utf-8")


def test_run_timeout_is_reported(tools: SandboxTools) -> None:
    result = ok(tools, "run", command="sleep 20", timeout_s=1)
    assert result.startswith("timed out")


def test_finish_returns_the_summary(tools: SandboxTools) -> None:
    assert ok(tools, "finish", summary="all done") == "all done"


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("read_file", {"path": "../README.md"}),
        ("read_file", {"path": "/etc/passwd"}),
        ("write_file", {"path": "../escaped.txt", "content": "x"}),
        ("write_file", {"path": "/tmp/escaped.txt", "content": "x"}),
        ("edit_file", {"path": "../README.md", "old": "#", "new": "x"}),
        ("list_files", {"path": ".."}),
        ("search", {"pattern": "root", "path": "/etc"}),
    ],
)
def test_paths_outside_the_sandbox_are_refused(
    tools: SandboxTools, sandbox: WorktreeSandbox, tool: str, args: dict[str, Any]
) -> None:
    call = refused(tools, tool, **args)
    assert "refused" in call.result or "relative" in call.result
    assert not (sandbox.path.parent / "escaped.txt").exists()
    assert not Path("/tmp/escaped.txt").exists()


def test_symlink_to_a_file_outside_is_refused(
    tools: SandboxTools, sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42\n", encoding="utf-8")
    (sandbox.path / "leak.txt").symlink_to(secret)
    refused(tools, "read_file", path="leak.txt")
    refused(tools, "edit_file", path="leak.txt", old="TOPSECRET", new="x")
    assert secret.read_text(encoding="utf-8") == "TOPSECRET-42\n"


def test_search_does_not_read_through_a_symlink_to_outside(
    tools: SandboxTools, sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    """read_file refuses `leak.txt`; search must not hand out the same content."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42\n", encoding="utf-8")
    (sandbox.path / "leak.txt").symlink_to(secret)
    call = tools.call("search", {"pattern": "TOPSECRET"})
    assert "TOPSECRET-42" not in call.result


def test_unknown_tool(tools: SandboxTools) -> None:
    call = refused(tools, "delete_everything")
    assert "unknown tool" in call.result
    assert "read_file" in call.result  # tells the agent what exists


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("read_file", {}, "path"),
        ("read_file", {"path": 3}, "path"),
        ("read_file", {"path": "README.md", "start_line": 0}, "start_line"),
        ("write_file", {"path": "a.txt"}, "content"),
        ("edit_file", {"path": "README.md", "old": "", "new": "x"}, "old"),
        ("run", {"command": "true", "shell": "bash"}, "shell"),
        ("run", {"command": "true", "timeout_s": -1}, "timeout_s"),
    ],
)
def test_bad_arguments_are_tool_errors(
    tools: SandboxTools, tool: str, args: dict[str, Any], field: str
) -> None:
    call = refused(tools, tool, **args)
    assert "invalid arguments" in call.result
    assert field in call.result


def test_huge_results_are_capped(tools: SandboxTools) -> None:
    result = ok(tools, "run", command="head -c 100000 /dev/zero | tr '\\0' y")
    assert len(result) < 13_000
    assert "characters cut" in result


def test_a_fifo_in_the_tree_is_refused_without_blocking_harness(
    tools: SandboxTools, sandbox: WorktreeSandbox
) -> None:
    # Opening a FIFO with no writer blocks: harness's host process must never do that.
    os.mkfifo(sandbox.path / "pipe")
    assert "not a regular file" in refused(tools, "read_file", path="pipe").result
    assert "not a regular file" in refused(tools, "write_file", path="pipe", content="x").result
    assert stat.S_ISFIFO(os.lstat(sandbox.path / "pipe").st_mode)
