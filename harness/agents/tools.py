"""The agent tools, a public contract: replay files and recorded trajectories use these names.

Every path is relative to the sandbox's repository directory; anything resolving outside it is
refused with an error the agent can read. Outputs are bounded so no tool floods a context.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import failpoints
from harness.agents import ToolCall
from harness.sandbox import PathOutsideSandbox, Sandbox, resolve_inside
from harness.sandbox.host_files import read_regular

MAX_LIST_ENTRIES = 500
MAX_SEARCH_MATCHES = 200
MAX_RESULT_CHARS = 12_000
MAX_SEARCHED_BYTES = 2_000_000
"""Of each file, searched from its start."""
# Git metadata (a directory, or a file in a worktree) and tool caches are never listed.
SKIPPED_DIRS = {".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv"}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListFilesArgs(_Args):
    """List files under a directory of the repository (recursively, bounded)."""

    path: str = "."


class ReadFileArgs(_Args):
    """Read a file, with line numbers; optionally only lines start_line..end_line."""

    path: str
    start_line: int | None = Field(default=None, ge=1)
    end_line: int | None = Field(default=None, ge=1)


class SearchArgs(_Args):
    """Search files for a regular expression; returns path:line: text (bounded)."""

    pattern: str
    """A Python regular expression."""
    path: str = "."


class WriteFileArgs(_Args):
    """Create or overwrite a file with the given content."""

    path: str
    content: str


class EditFileArgs(_Args):
    """Replace the exact text `old` with `new`; `old` must occur exactly once in the file."""

    path: str
    old: str = Field(min_length=1)
    """Exact text that must occur exactly once in the file."""
    new: str


class RunArgs(_Args):
    """Run a shell command in the repository directory (sandboxed, no network)."""

    command: str = Field(min_length=1)
    timeout_s: float = Field(default=120, gt=0)


class FinishArgs(_Args):
    """Declare the work done, with a short summary. The harness then runs the gates itself."""

    summary: str


TOOL_ARGS: dict[str, type[_Args]] = {
    "list_files": ListFilesArgs,
    "read_file": ReadFileArgs,
    "search": SearchArgs,
    "write_file": WriteFileArgs,
    "edit_file": EditFileArgs,
    "run": RunArgs,
    "finish": FinishArgs,
}


class ToolError(Exception):
    """A failure the agent should read and act on; it never ends the attempt by itself."""


class SandboxTools:
    """Executes tool calls against one sandbox and records each as a ToolCall."""

    def __init__(self, sandbox: Sandbox, deadline: float, log_dir: Path) -> None:
        self.sandbox = sandbox
        self.deadline = deadline
        """time.monotonic() past which no `run` may go: the task's wall-clock budget."""
        self.log_dir = log_dir
        self._runs = 0

    def call(self, tool: str, args: dict[str, Any]) -> ToolCall:
        started = time.monotonic()
        try:
            result = self._dispatch(tool, args)
            ok = True
        except ToolError as exc:
            result, ok = str(exc), False
        if len(result) > MAX_RESULT_CHARS:
            half = MAX_RESULT_CHARS // 2
            cut = len(result) - MAX_RESULT_CHARS
            result = f"{result[:half]}\n[… {cut} characters cut …]\n{result[-half:]}"
        return ToolCall(
            tool=tool, args=args, ok=ok, result=result, duration_s=time.monotonic() - started
        )

    def _dispatch(self, tool: str, raw: dict[str, Any]) -> str:
        model = TOOL_ARGS.get(tool)
        if model is None:
            raise ToolError(f"unknown tool {tool!r}; tools are {', '.join(TOOL_ARGS)}")
        try:
            args = model.model_validate(raw)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ToolError(f"invalid arguments for {tool}: {fields}") from None
        try:
            return self._handlers()[tool](args)
        except PathOutsideSandbox as exc:
            raise ToolError(str(exc)) from None
        except FileNotFoundError as exc:
            raise ToolError(f"no such file: {exc.filename}") from None
        except IsADirectoryError as exc:
            raise ToolError(f"is a directory, not a file: {exc.filename}") from None

    def _handlers(self) -> dict[str, Callable[[Any], str]]:
        return {
            "list_files": self._list_files,
            "read_file": self._read_file,
            "search": self._search,
            "write_file": self._write_file,
            "edit_file": self._edit_file,
            "run": self._run,
            "finish": lambda args: args.summary,
        }

    def _walk(self, relpath: str) -> list[Path]:
        root = resolve_inside(self.sandbox.path, relpath)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise ToolError(f"no such directory: {relpath}")
        inside = self.sandbox.path.resolve()
        files: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
            for name in sorted(filenames):
                path = Path(dirpath) / name
                # Symlinks pointing out of the tree are not followed: search would read them.
                if name not in SKIPPED_DIRS and path.resolve().is_relative_to(inside):
                    files.append(path)
        return files

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.sandbox.path.resolve()))

    def _list_files(self, args: ListFilesArgs) -> str:
        files = self._walk(args.path)
        lines = [self._relative(f) for f in files[:MAX_LIST_ENTRIES]]
        if len(files) > MAX_LIST_ENTRIES:
            lines.append(f"[… {len(files) - MAX_LIST_ENTRIES} more files; list a subdirectory]")
        return "\n".join(lines)

    def _read_file(self, args: ReadFileArgs) -> str:
        lines = self.sandbox.read(args.path).splitlines()
        start = args.start_line or 1
        end = min(args.end_line or len(lines), len(lines))
        return "\n".join(f"{n:>5}  {lines[n - 1]}" for n in range(start, end + 1))

    def _search(self, args: SearchArgs) -> str:
        try:
            pattern = re.compile(args.pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {args.pattern!r}: {exc}") from None
        matches: list[str] = []
        for path in self._walk(args.path):
            # The agent's commands write the tree: a FIFO would hang a plain open, and a link
            # swapped in after the walk would lead out of it. Regular files only, unfollowed.
            data = read_regular(path, MAX_SEARCHED_BYTES)
            try:
                text = data.decode("utf-8") if data is not None else None
            except UnicodeDecodeError:
                text = None
            if text is None:
                continue  # binary, unreadable or not a regular file: not searched
            for number, line in enumerate(text.splitlines(), start=1):
                if pattern.search(line):
                    matches.append(f"{self._relative(path)}:{number}: {line.strip()[:200]}")
                    if len(matches) >= MAX_SEARCH_MATCHES:
                        return "\n".join([*matches, "[… more matches; narrow the search]"])
        return "\n".join(matches) or "no matches"

    def _write_file(self, args: WriteFileArgs) -> str:
        self.sandbox.write(args.path, args.content)
        failpoints.during()  # fault-injection tests: the harness dies mid-attempt
        return f"wrote {args.path} ({len(args.content)} characters)"

    def _edit_file(self, args: EditFileArgs) -> str:
        text = self.sandbox.read(args.path)
        count = text.count(args.old)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times; include more context"
            raise ToolError(f"edit_file {args.path}: `old` must match exactly once, {where}")
        self.sandbox.write(args.path, text.replace(args.old, args.new, 1))
        return f"edited {args.path}"

    def _run(self, args: RunArgs) -> str:
        self._runs += 1
        timeout = max(1.0, min(args.timeout_s, self.deadline - time.monotonic()))
        log = self.log_dir / f"run-{self._runs}.log"
        done = self.sandbox.run(args.command, timeout_s=timeout, log_path=log)
        status = "timed out" if done.timed_out else f"exit code {done.exit_code}"
        return f"{status} after {done.duration_s:.1f}s\n{done.output}"
