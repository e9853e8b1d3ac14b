"""Any tool's `path:line[:col]: message` lines, for custom gates no other parser knows."""

from __future__ import annotations

import re
from collections.abc import Iterator

from harness.parsers.builder import ProblemBuilder
from harness.problems import Problem

# Long lines are data dumps, not findings; skipping them bounds the regex work per line.
MAX_LINE_CHARS = 2000
_LOCATED = re.compile(
    r"^\s*(?P<path>[^\s:\"'<>()\[\]]+):(?P<line>\d+)(?::(?P<col>\d+))?:\s*(?P<msg>\S.*)$"
)


def parse(text: str, builder: ProblemBuilder) -> Iterator[Problem]:
    for raw in text.splitlines():
        if len(raw) > MAX_LINE_CHARS or ":" not in raw:
            continue
        match = _LOCATED.match(raw)
        if match is None:
            continue
        # Only files that exist under root: timestamps (12:30:45: …) and URLs look the same.
        path = builder.relative(match["path"])
        if not builder.is_file(path):
            continue
        yield builder.problem(
            "gate-failed",
            match["msg"].strip(),
            path=path,
            line=int(match["line"]) or None,
            column=int(match["col"]) if match["col"] else None,
        )
