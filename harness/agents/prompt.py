"""The prompts harness sends a model-backed agent. Owned here, in plain text, not hidden in a
framework: the system prompt, the task message of each attempt, and the tool definitions."""

from __future__ import annotations

import functools
from typing import Any

from harness.agents.tools import TOOL_ARGS
from harness.config.policy import GateConfig
from harness.config.spec import Spec
from harness.feedback import Feedback, render_for_agent
from harness.sandbox import Sandbox

REPO_INSTRUCTION_FILES = ("AGENTS.md", "CLAUDE.md")
MAX_INSTRUCTIONS_CHARS = 20_000


def system_prompt(gates: list[GateConfig], instructions: str | None) -> str:
    gate_lines = "\n".join(f"- {gate.name} ({gate.kind}): `{gate.command}`" for gate in gates)
    parts = [
        "You are a coding agent working in a sandboxed checkout of a repository, on a branch of "
        "its own. Make the change the task asks for, and nothing else.",
        "",
        "Use the tools. Paths are relative to the repository directory; paths outside it are "
        "refused. `run` executes shell commands there without network access. When the work is "
        "done, call `finish` with a short summary.",
        "",
        "After you finish, the harness runs these gates in order on your work and accepts it only "
        "if all pass. Run them yourself before finishing:",
        gate_lines,
        "",
        "Do not weaken the gates: never delete or skip tests, loosen assertions, or add "
        "suppressions (noqa, type: ignore) to make them pass.",
    ]
    if instructions:
        parts += ["", "The repository's own instructions for agents:", "", instructions]
    return "\n".join(parts)


def task_message(spec: Spec, number: int, feedback: Feedback | None) -> str:
    # The `spec:` and `attempt:` lines are part of the contract: trajectories are grouped by
    # them, and test servers script their replies from them.
    lines = [f"spec: {spec.id}", f"attempt: {number}", "", f"# {spec.title}", "", spec.body]
    if spec.acceptance:
        lines += ["", "Acceptance commands that must also pass:"]
        lines += [f"- `{command}`" for command in spec.acceptance]
    if feedback is not None:
        lines += [
            "",
            f"## Your previous attempt did not pass the gates (this is attempt {number})",
            "",
            "Your earlier changes are still in the tree. The harness measured these problems:",
            "",
            render_for_agent(feedback, number - 1),
        ]
    return "\n".join(lines)


def repo_instructions(sandbox: Sandbox) -> str | None:
    """The repository's AGENTS.md (or CLAUDE.md), capped, when it has one."""
    for name in REPO_INSTRUCTION_FILES:
        if (sandbox.path / name).is_file():
            text = sandbox.read(name)
            return text[:MAX_INSTRUCTIONS_CHARS]
    return None


@functools.cache
def tool_definitions() -> list[dict[str, Any]]:
    """The agent tools in the Messages API's shape, schemas generated from the argument models.

    Cached: generating the schemas was a fifth of an attempt's own CPU time. Callers must not
    mutate the result."""
    return [
        {
            "name": name,
            "description": (model.__doc__ or name).strip(),
            "input_schema": model.model_json_schema(),
        }
        for name, model in TOOL_ARGS.items()
    ]
