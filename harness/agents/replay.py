"""The replay agent: plays a scripted trajectory from <spec-id>.replay.yaml beside the spec.

No model is involved, and every record says "replay". It exists so the demo and the tests
exercise the whole loop (tools, gates, feedback, retries) without an API key.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import Field, ValidationError

from harness.agents import AttemptContext, AttemptRecord
from harness.agents.tools import TOOL_ARGS, SandboxTools
from harness.config.spec import Spec
from harness.config.strict import StrictModel, describe_validation_error
from harness.errors import InputError
from harness.feedback import Feedback
from harness.sandbox import Sandbox

ToolName = Literal["list_files", "read_file", "search", "write_file", "edit_file", "run", "finish"]
assert set(get_args(ToolName)) == set(TOOL_ARGS), "replay tool names must match the tool contract"


class ReplayStep(StrictModel):
    tool: ToolName
    args: dict[str, Any] = {}


class ReplayAttempt(StrictModel):
    steps: list[ReplayStep] = Field(min_length=1)


class ReplayScript(StrictModel):
    attempts: list[ReplayAttempt] = Field(min_length=1)


def replay_path(spec: Spec) -> Path:
    """`<spec-id>.replay.yaml`; a fleet variant plays `<spec-id>.v<k>.replay.yaml` if there is
    one (so variants can differ), else the spec's own."""
    own = Path(spec.source).with_name(f"{spec.fleet_spec_id}.replay.yaml")
    if spec.variant is not None:
        variant = own.with_name(f"{spec.fleet_spec_id}.v{spec.variant.k}.replay.yaml")
        return variant if variant.is_file() else own
    return own


def load_replay(spec: Spec) -> ReplayScript:
    path = replay_path(spec)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no replay trajectory for spec {spec.id!r}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return ReplayScript.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(path, exc)) from None


class ReplayAgent:
    name = "replay"

    def __init__(self, script: ReplayScript) -> None:
        self.script = script

    def attempt(
        self, spec: Spec, sandbox: Sandbox, feedback: Feedback | None, context: AttemptContext
    ) -> AttemptRecord:
        started = time.monotonic()
        number = context.number
        record = AttemptRecord(number=number, agent=self.name, stop_reason="script_exhausted")
        if number > len(self.script.attempts):
            record.stop_reason = "error"
            record.error = f"the replay trajectory has no attempt {number}"
            return record
        tools = SandboxTools(sandbox, context.deadline, context.log_dir)
        for step in self.script.attempts[number - 1].steps:
            if len(record.steps) >= context.budget.max_steps:
                record.stop_reason = "max_steps"
                break
            call = tools.call(step.tool, step.args)
            record.steps.append(call)
            if step.tool == "finish" and call.ok:
                record.stop_reason = "finished"
                record.summary = call.result
                break
        record.duration_s = time.monotonic() - started
        return record
