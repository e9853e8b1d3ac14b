"""Redaction of secrets from everything harness writes to disk (trajectories, logs)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_NAME = re.compile(r"(_TOKEN|_KEY|_SECRET|PASSWORD|PASSWD)$|^AWS_|^ANTHROPIC_", re.I)
# Shapes of credentials that may reach a trajectory without being in our environment.
SECRET_SHAPES = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[abpr]-[A-Za-z0-9-]{10,}"
)
MIN_SECRET_LENGTH = 8


class Redactor:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(
            ((name, value) for name, value in secrets.items() if len(value) >= MIN_SECRET_LENGTH),
            key=lambda item: -len(item[1]),
        )

    @classmethod
    def from_environment(cls, extra: Iterable[str] = ()) -> Redactor:
        """Every secret-named variable's value (e.g. ANTHROPIC_API_KEY), plus `extra` values."""
        found = {name: value for name, value in os.environ.items() if SECRET_NAME.search(name)}
        found |= {f"SECRET_{n}": value for n, value in enumerate(extra)}
        return cls(found)

    def text(self, text: str) -> str:
        for name, value in self._secrets:
            text = text.replace(value, f"[REDACTED:{name}]")
        return SECRET_SHAPES.sub("[REDACTED]", text)

    def value(self, data: Any) -> Any:
        """A JSON-like value with every string redacted."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {key: self.value(item) for key, item in data.items()}
        if isinstance(data, list):
            return [self.value(item) for item in data]
        return data
