"""The policy: the rules a run follows, loaded from YAML that users own."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from harness.errors import InputError
from harness.validation import StrictModel, describe_validation_error

AgentKind = Literal["anthropic", "command", "replay"]
GateKind = Literal["lint", "type", "test", "integration", "custom"]


class AgentConfig(StrictModel):
    kind: AgentKind = "replay"
    """Which Agent backend runs each attempt. `replay` plays a scripted trajectory, no model."""
    model: str | None = None
    """Model id for the `anthropic` backend."""


class GateConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Short name shown in tables and records; unique within the policy."""
    kind: GateKind
    """What the gate checks; used for reporting and, later, for problem parsing."""
    command: str = Field(min_length=1)
    """Shell command run in the sandbox with the spec's repo directory as the working directory."""
    timeout_s: float = Field(default=600, gt=0)
    """The command is killed after this many seconds; a timeout is an infrastructure failure."""


class Budget(StrictModel):
    max_attempts: int = Field(default=2, ge=1)
    """Agent attempts per task; 2 means one retry after feedback."""
    max_steps: int = Field(default=60, ge=1)
    """Tool calls per attempt; at the cap the attempt stops and the task escalates."""
    max_cost_usd: float | None = Field(default=None, gt=0)
    """Spend cap per task for model-backed agents; None means no cap."""
    wall_clock_s: float = Field(default=1800, gt=0)
    """Wall-clock cap per task, from provisioning on."""


class BudgetOverride(StrictModel):
    """The subset of a budget a spec may override; unset fields keep the policy's value."""

    max_attempts: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    wall_clock_s: float | None = Field(default=None, gt=0)

    def apply_to(self, budget: Budget) -> Budget:
        return budget.model_copy(update=self.model_dump(exclude_none=True))


class PublishConfig(StrictModel):
    auto_pr_tiers: list[Literal[1, 2, 3]] = [1, 2]
    """Tiers whose verified tasks become PRs; other tiers escalate for review once verified."""
    branch_prefix: str = Field(default="harness", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
    """Task branches are named <branch_prefix>/<run-id>/<spec-id>."""
    protected_paths: list[str] = []
    """Git glob pathspecs (relative to the spec's repo); a change touching one never auto-PRs."""


class Policy(StrictModel):
    agent: AgentConfig = AgentConfig()
    gates: list[GateConfig] = Field(min_length=1)
    """Run in this order, cheapest first; the first failing gate stops the rest."""
    budget: Budget = Budget()
    concurrency: int = Field(default=4, ge=1)
    """Tasks run at once; `harness run --concurrency` overrides it."""
    publish: PublishConfig = PublishConfig()

    @field_validator("gates")
    @classmethod
    def _unique_gate_names(cls, gates: list[GateConfig]) -> list[GateConfig]:
        names = [gate.name for gate in gates]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"gate names must be unique, repeated: {', '.join(duplicates)}")
        return gates


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; every problem is an InputError naming file and field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: policy file not found (pass --policy FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read policy: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a policy must be a YAML mapping with at least `gates:`")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(path, exc)) from None
