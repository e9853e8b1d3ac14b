"""Source lines around a finding, numbered, read from the worktree for the agent to see."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import BinaryIO

# A minified file can hold megabytes on one line: read lines in bounded pieces and show only
# the start of each, so context costs the same whatever the file looks like.
MAX_LINE_BYTES = 4096
MAX_LINE_CHARS = 200


def source_context(root: Path, path: str, line: int, radius: int = 3) -> str | None:
    """Lines `line`±`radius` of root/path as `  47 | code`, the line itself marked `>`.

    None when the path is absolute or resolves outside root, the file is missing or not a
    regular file, or the line is past its end. Bad bytes are replaced, never an error.
    """
    lines = read_source_lines(root, path, upto=line + radius)
    return None if lines is None else format_context(lines, line, radius)


def read_source_lines(root: Path, path: str, *, upto: int) -> list[str] | None:
    """The first `upto` lines of root/path (each cut to MAX_LINE_CHARS), or None if refused."""
    file = inside_root(root, path)
    if file is None:
        return None
    try:
        with file.open("rb") as handle:
            return [_decode(raw) for raw in islice(_bounded_lines(handle), max(upto, 0))]
    except OSError:
        return None


def format_context(lines: list[str], line: int, radius: int = 3) -> str | None:
    if not 1 <= line <= len(lines):
        return None
    first, last = max(1, line - radius), min(len(lines), line + radius)
    width = len(str(last))
    rows = [
        f"{'>' if number == line else ' '} {number:>{width}} | {lines[number - 1]}".rstrip()
        for number in range(first, last + 1)
    ]
    return "\n".join(rows)


def inside_root(root: Path, path: str) -> Path | None:
    """root/path as a regular file that resolves inside root (symlinks followed), else None."""
    if not path or "\0" in path or Path(path).is_absolute():
        return None
    try:
        resolved_root = root.resolve()
        candidate = (resolved_root / path).resolve()
        if not candidate.is_relative_to(resolved_root) or not candidate.is_file():
            return None
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop (3.11)
        return None
    return candidate


def _bounded_lines(handle: BinaryIO) -> Iterator[bytes]:
    while raw := handle.readline(MAX_LINE_BYTES):
        if not raw.endswith(b"\n"):
            # Skip the rest of an over-long line so the numbering stays right.
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield raw


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + "…"
