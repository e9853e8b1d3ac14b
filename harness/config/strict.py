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


PATTERN_MEANINGS = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "letters, digits, '.', '_' and '-', starting with a "
    "letter or digit, e.g. lint or unit-tests",
    r"^[A-Za-z0-9][A-Za-z0-9_./-]*$": "letters, digits, '.', '_', '-' and '/', starting "
    "with a letter or digit, e.g. harness or team/harness",
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": "a DNS label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit, e.g. pricing or pricing-v2",
    r"^[A-Za-z_][A-Za-z0-9_]*$": "an environment variable name, e.g. GITHUB_TOKEN",
    r"^[A-Z_][A-Z0-9_]*$": "an upper-case environment variable name, e.g. PORT",
    r"^https?://": "an http:// or https:// URL",
    r"^/": "an absolute path starting with '/', e.g. /health",
    r"^(local|kubernetes)$": "local or kubernetes",
    r"^[A-Za-z0-9_.-]+$": "letters, digits, '.', '_' and '-'",
}
"""What the patterns of policy and spec fields mean, in words: an error names what a valid
value looks like, not the regular expression."""


def describe_validation_error(source: Path | str, error: ValidationError) -> str:
    """One line: `file: field: problem`, for every problem pydantic found."""
    parts: list[str] = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problem = "unknown key (check its spelling against the documented fields)"
        elif item["type"] == "missing":
            problem = "required field is missing"
        elif item["type"] == "string_pattern_mismatch":
            pattern = str((item.get("ctx") or {}).get("pattern", ""))
            meaning = PATTERN_MEANINGS.get(pattern, f"text matching the pattern {pattern}")
            problem = f"{item.get('input')!r} is not valid here; write {meaning}"
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
