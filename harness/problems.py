"""Problems: the one currency of feedback, escalation records, PR evidence and `harness check`.

Shaped as RFC 9457 problem details (type, title, status, detail, instance) plus harness's
extensions. Parsers turn each tool's machine output into problems; compaction and rendering
for the agent live in harness/feedback.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

Category = Literal["agent_fixable", "flaky", "infrastructure", "policy"]

PROBLEM_TYPE_PREFIX = "urn:harness:problem:"


class Location(BaseModel):
    path: str
    """Relative to the spec's repo directory (the gate's working directory)."""
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.path, *(str(n) for n in (self.line, self.column) if n is not None)]
        return ":".join(parts)


class ProblemItem(BaseModel):
    """One of many findings of the same type, grouped under one problem's `errors`."""

    message: str
    code: str | None = None
    location: Location | None = None
    test_id: str | None = None
    context: str | None = None


class Problem(BaseModel):
    type: str
    """A URI naming the kind of problem, e.g. urn:harness:problem:gate-failed."""
    title: str
    """Short, the same for every problem of this type."""
    detail: str
    """What happened this time, in a sentence or an excerpt."""
    status: int | None = None
    instance: str | None = None
    """Where it happened: runs/<run-id>/<spec-id>/<phase>-<attempt>/<gate>."""
    gate: str | None = None
    command: str | None = None
    exit_code: int | None = None
    code: str | None = None
    """The tool's own code: a ruff rule (F401), a mypy error code (arg-type), an exception."""
    location: Location | None = None
    test_id: str | None = None
    """A failing test's node id, e.g. tests/test_cart.py::test_total."""
    context: str | None = None
    """Source lines around `location` (±3, numbered), read from the worktree."""
    errors: list[ProblemItem] = []
    """Many findings of one type, e.g. every E501 in a file."""
    category: Category = "agent_fixable"
    retryable: bool = True
    owner_action_required: bool = False
    retry_after_s: float | None = None
    pre_existing: bool = False
    """Already failing on the untouched base; still has to pass before the task is verified."""
    log: str | None = None
    """Path of the full raw output."""

    def key(self) -> tuple[str | None, ...]:
        """Identity across attempts and against base: line numbers move, this does not."""
        path = self.location.path if self.location else None
        return (self.type, self.gate, self.code, path, self.test_id, _normalised(self.detail))

    def as_problem_json(self) -> dict[str, Any]:
        """The application/problem+json object (unset members left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def _normalised(detail: str) -> str | None:
    # The first line only: later lines carry line numbers, timings and addresses.
    first = detail.strip().splitlines()[0] if detail.strip() else ""
    return first[:200] or None


def problem_type(slug: str) -> str:
    return PROBLEM_TYPE_PREFIX + slug


def render_markdown(problems: list[Problem]) -> str:
    """Compact Markdown for humans reading records."""
    sections: list[str] = []
    for problem in problems:
        lines = [f"### {problem.title}"]
        if problem.command is not None:
            ending = "" if problem.exit_code is None else f" (exit code {problem.exit_code})"
            lines.append(f"- command: `{problem.command}`{ending}")
        if problem.location is not None:
            lines.append(f"- at: `{problem.location}`")
        if problem.test_id is not None:
            lines.append(f"- test: `{problem.test_id}`")
        lines.append(f"- category: {problem.category}")
        if problem.pre_existing:
            lines.append("- pre-existing: already failing on the base commit")
        if problem.log:
            lines.append(f"- full output: {problem.log}")
        lines += ["", "```text", problem.detail.rstrip(), "```"]
        if problem.context:
            lines += ["", "```text", problem.context.rstrip(), "```"]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def one_liners(problems: list[Problem]) -> list[str]:
    """Each problem in one line, where and what: for records that list many."""

    def line(problem: Problem) -> str:
        where = problem.test_id or (str(problem.location) if problem.location else problem.gate)
        first = problem.detail.strip().splitlines()[0][:120] if problem.detail.strip() else ""
        # pytest's message already starts with the exception name that is the code.
        code = f" {problem.code}" if problem.code and not first.startswith(problem.code) else ""
        return f"{where}{code}: {first}"

    return [line(problem) for problem in problems]
