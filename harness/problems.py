"""Problems: the one currency of feedback, escalation records and PR evidence.

Shaped as RFC 9457 problem details (type, title, status, detail, instance) plus harness's
extensions. Gate output becomes problems here; richer parsers per tool build on this model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Category = Literal["agent_fixable", "flaky", "infrastructure", "policy"]

PROBLEM_TYPE_PREFIX = "urn:harness:problem:"


class Problem(BaseModel):
    type: str
    """A URI naming the kind of problem, e.g. urn:harness:problem:gate-failed."""
    title: str
    """Short, the same for every problem of this type."""
    detail: str
    """What happened this time: for a gate, the relevant part of its output."""
    status: int | None = None
    instance: str | None = None
    """Where it happened: run/spec/attempt/gate."""
    gate: str | None = None
    command: str | None = None
    exit_code: int | None = None
    category: Category = "agent_fixable"
    retryable: bool = True
    owner_action_required: bool = False
    retry_after_s: float | None = None
    log: str | None = None
    """Path of the full raw output."""

    def to_problem_json(self) -> str:
        """application/problem+json."""
        return self.model_dump_json(exclude_none=True, indent=2)


def problem_type(slug: str) -> str:
    return PROBLEM_TYPE_PREFIX + slug


def render_markdown(problems: list[Problem]) -> str:
    """Compact Markdown for the agent and for humans reading records."""
    sections: list[str] = []
    for problem in problems:
        lines = [f"### {problem.title}"]
        if problem.command is not None:
            lines.append(f"- command: `{problem.command}` (exit code {problem.exit_code})")
        lines.append(f"- category: {problem.category}")
        if problem.log:
            lines.append(f"- full output: {problem.log}")
        lines += ["", "```text", problem.detail.rstrip(), "```"]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
