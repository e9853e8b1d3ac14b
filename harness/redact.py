"""Redaction of secrets from everything harness writes to disk and to the store.

A second line of defence, behind keeping secrets out of sandboxes in the first place: it
replaces the secret values harness knows of (secret-named environment variables, token
files, what a `command` agent is handed) and credential shapes (sk-ant-…, ghp_…, AKIA…).
One process-wide `Redactor` (`current()`) is used by every writer: command logs (streamed,
see `StreamRedactor`), records written with `write_atomic`, ledger events, trajectories and
parsed gate problems.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_NAME = re.compile(r"(_TOKEN|_KEY|_SECRET|PASSWORD|PASSWD)$|^AWS_|^ANTHROPIC_", re.I)
# Shapes of credentials that may reach a record without being in our environment.
SHAPES = (
    r"sk-ant-[A-Za-z0-9_\-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
)
SECRET_SHAPES = re.compile(SHAPES)
MIN_SECRET_LENGTH = 8
# Enough bytes to recognise any shape from its start (ghp_ and 20 characters is the longest).
SHAPE_WINDOW = 64
# A shape match touching the end of a chunk is held back until it ends; past this it is
# redacted as it stands (an endless "sk-ant-aaaa…" stream must not grow the buffer).
MAX_HELD_BYTES = 1 << 20


class Redactor:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(
            ((name, value) for name, value in secrets.items() if len(value) >= MIN_SECRET_LENGTH),
            key=lambda item: -len(item[1]),
        )
        by_value = {value.encode(): name for name, value in self._secrets}
        self._names = by_value
        alternatives = [re.escape(value) for value in by_value] + [SHAPES.encode()]
        self._pattern = re.compile(b"|".join(alternatives))
        self.longest = max((len(v) for v in by_value), default=0)
        """The longest known secret in bytes: how much a stream must hold back at a cut."""

    @classmethod
    def from_environment(cls, extra: Iterable[str] = ()) -> Redactor:
        """Every secret-named variable's value (e.g. ANTHROPIC_API_KEY), plus `extra` values."""
        found = _environment_secrets()
        found |= {f"SECRET_{n}": value for n, value in enumerate(extra)}
        return cls(found)

    def with_values(self, named: Mapping[str, str]) -> Redactor:
        """This redactor plus more named secret values."""
        return Redactor(dict(self._secrets) | dict(named))

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

    def data(self, raw: bytes) -> tuple[bytes, int]:
        """`raw` redacted up to a safe end, and where that end is in `raw`: the bytes after it
        could still be the start of a secret, and must be redacted with what follows."""
        safe = max(0, len(raw) - max(self.longest, SHAPE_WINDOW))
        out: list[bytes] = []
        done = 0
        for match in self._pattern.finditer(raw):
            if match.start() >= safe:
                break
            if match.end() == len(raw) and len(raw) - match.start() < MAX_HELD_BYTES:
                safe = match.start()  # a shape that may go on in the next chunk
                break
            out += [raw[done : match.start()], self._replacement(match.group())]
            done = match.end()
        safe = max(safe, done)
        out.append(raw[done:safe])
        return b"".join(out), safe

    def final(self, raw: bytes) -> bytes:
        """The last bytes of a stream, redacted whole."""
        return self._pattern.sub(lambda m: self._replacement(m.group()), raw)

    def _replacement(self, found: bytes) -> bytes:
        name = self._names.get(found)
        return f"[REDACTED:{name}]".encode() if name else b"[REDACTED]"


class StreamRedactor:
    """Redacts a byte stream chunk by chunk; a secret split across two chunks is still found."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        raw = self._held + chunk
        out, end = self.redactor.data(raw)
        self._held = raw[end:]
        return out

    def close(self) -> bytes:
        out, self._held = self.redactor.final(self._held), b""
        return out


_lock = threading.Lock()
_remembered: dict[str, str] = {}
_built: tuple[dict[str, str], dict[str, str], Redactor] | None = None


def current() -> Redactor:
    """The process-wide redactor: the environment's secret-named values, plus every value
    `remember` was given (token files, what a `command` agent is handed). Rebuilt only when
    those change (a scan of the environment's names is cheap; a stale list would leak)."""
    global _built
    env = _environment_secrets()
    with _lock:
        if _built is None or _built[0] != env or _built[1] != _remembered:
            _built = (env, dict(_remembered), Redactor(_remembered | env))
        return _built[2]


def remember(named: Mapping[str, str]) -> None:
    """Add secret values (by name) to the process-wide redactor, for every writer from now on."""
    with _lock:
        for name, value in named.items():
            # A variable handed again with another value: both values stay secret.
            if _remembered.get(name, value) != value:
                name = f"{name}#{len(_remembered)}"
            _remembered[name] = value


def _environment_secrets() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if SECRET_NAME.search(name)}


def remember_files(paths: Iterable[os.PathLike[str] | str]) -> None:
    """Add the contents of token files (a forge's or model's, as a policy names them)."""
    found = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                found[f"FILE:{os.path.basename(path)}"] = handle.read().strip()
        except OSError:
            continue  # a token file that is not there holds no secret to redact
    remember(found)
