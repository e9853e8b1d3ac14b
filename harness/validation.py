"""Turns pydantic validation errors into the one-line messages users get for bad input."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError


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
