"""Turns pydantic validation errors into the one-line messages users get for bad input."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import InputError

Model = TypeVar("Model", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for everything a user writes: unknown keys and wrong types are errors, never coerced.

    A typo such as `max_atempts` must not silently fall back to a default and weaken a policy.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def describe_validation_error(source: Path | str, error: ValidationError) -> str:
    """One line: `file: field: problem`, for every problem pydantic found."""
    parts: list[str] = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problem = "unknown key (check its spelling against the documented fields)"
        elif item["type"] == "missing":
            problem = "required field is missing"
        else:
            problem = f"{item['msg']} (got {item.get('input')!r})"
        parts.append(f"{field}: {problem}")
    return f"{source}: " + "; ".join(parts)


def parse_yaml_mapping(text: str, source: Path | str, model: type[Model], shape: str) -> Model:
    """`text` as YAML validated into `model`; any problem is one InputError line naming
    `source`. `shape` completes "… must be a YAML mapping" (e.g. "with at least `gates:`")."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{source}: must be a YAML mapping {shape}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(source, exc)) from None
