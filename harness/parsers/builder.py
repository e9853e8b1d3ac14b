"""ProblemBuilder: one gate run's facts, copied into every problem its parsers find."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.config.policy import GateConfig
from harness.parsers.context import format_context, inside_root, read_source_lines
from harness.problems import Location, Problem, problem_type

TITLES = {
    "lint-violation": "Lint violation",
    "type-error": "Type error",
    "test-failure": "Test failed",
    "test-error": "Test error",
    "gate-failed": "Gate failed",
    "uncaught-exception": "Uncaught exception",
}
CONTEXT_RADIUS = 3
# Lines of a file kept for context; many findings in one file then read it once.
CACHED_LINES = 20_000
# A problem is one finding; a longer detail is a dump (the full output is in `log`).
MAX_DETAIL_CHARS = 4000


@dataclass
class ProblemBuilder:
    gate: GateConfig
    root: Path
    exit_code: int | None
    log: str | None
    instance: str
    _sources: dict[str, list[str] | None] = field(default_factory=dict)
    _files: dict[str, bool] = field(default_factory=dict)

    def problem(
        self,
        slug: str,
        detail: str,
        *,
        code: str | None = None,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        test_id: str | None = None,
    ) -> Problem:
        location = None
        context = None
        if path:
            path = self.relative(path)
            location = Location(path=path, line=line, column=column)
            context = self.context(path, line) if line is not None else None
        return Problem(
            type=problem_type(slug),
            title=TITLES[slug],
            detail=detail.strip()[:MAX_DETAIL_CHARS] or TITLES[slug],
            instance=self.instance,
            gate=self.gate.name,
            command=self.gate.command,
            exit_code=self.exit_code,
            code=code,
            location=location,
            test_id=test_id,
            context=context,
            category="agent_fixable",
            log=self.log,
        )

    def relative(self, raw: str) -> str:
        """`raw` relative to root when it lies inside it (tools print absolute paths, or paths
        relative to the working directory); otherwise unchanged, e.g. a stdlib frame."""
        text = raw.strip()
        try:
            path = Path(text)
            absolute = path if path.is_absolute() else self.root / path
            for base, candidate in (
                (os.path.abspath(self.root), os.path.abspath(absolute)),
                (os.path.realpath(self.root), os.path.realpath(absolute)),
            ):
                if Path(candidate).is_relative_to(base):
                    return Path(candidate).relative_to(base).as_posix()
        except (OSError, ValueError):
            pass
        return text

    def is_file(self, relpath: str) -> bool:
        """Whether root/relpath is a regular file inside root; cached, output repeats paths."""
        if relpath not in self._files:
            self._files[relpath] = inside_root(self.root, relpath) is not None
        return self._files[relpath]

    def in_repo(self, relpath: str) -> bool:
        """A file of the project itself: inside root, and not an installed package in a venv."""
        parts = Path(relpath).parts
        if "site-packages" in parts or "dist-packages" in parts:
            return False
        return self.is_file(relpath)

    def context(self, relpath: str, line: int) -> str | None:
        if relpath not in self._sources:
            self._sources[relpath] = read_source_lines(self.root, relpath, upto=CACHED_LINES)
        lines = self._sources[relpath]
        if lines is None:
            return None
        if line + CONTEXT_RADIUS > len(lines) == CACHED_LINES:
            lines = read_source_lines(self.root, relpath, upto=line + CONTEXT_RADIUS) or []
        return format_context(lines, line, CONTEXT_RADIUS)
