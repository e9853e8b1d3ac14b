"""mypy: `-O json` (one object per line) and its text output, with or without columns."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.parsers.builder import ProblemBuilder
from harness.problems import Problem

# path:line[:col[:end_line:end_col]]: error|note: message  [code]; file-level errors
# (duplicate modules, unreadable files) have no line.
_LINE = re.compile(
    r"^(?P<path>[^\s:][^:\n]*?)(?::(?P<line>\d+)(?::(?P<col>\d+))?(?::\d+:\d+)?)?"
    r": (?P<severity>error|note): (?P<msg>.*)$"
)
_CODE = re.compile(r"^(?P<msg>.*?)\s+\[(?P<code>[a-z][a-z0-9-]*)\]$", re.DOTALL)
_SUMMARY = re.compile(r"^(?:Found \d+ errors? in \d+ files?|Success: no issues found)", re.M)
# Its closing line, counted.
_FOUND = re.compile(r"^Found (\d+) errors? in (\d+) files?", re.MULTILINE)
_CLEAN = re.compile(r"^Success: no issues found in (\d+) source files?", re.MULTILINE)


@dataclass
class _Entry:
    path: str
    line: int | None
    column: int | None
    severity: str
    message: list[str]
    code: str | None = None
    notes: list[str] = field(default_factory=list)


def looks_like_mypy(command: str, kind: str, text: str) -> bool:
    """mypy's text shape (`path:line: error: …`) is also gcc's; trust it only for mypy."""
    return "mypy" in command or kind == "type" or _SUMMARY.search(text) is not None


def count(tail: str) -> dict[str, int] | None:
    """Errors and files checked, from mypy's closing line; None when `tail` has none."""
    if match := _FOUND.search(tail):
        return {"errors": int(match[1]), "files": int(match[2])}
    if match := _CLEAN.search(tail):
        return {"errors": 0, "files": int(match[1])}
    return None


def parse_json(text: str, builder: ProblemBuilder) -> Iterator[Problem]:
    entries: list[_Entry] = []
    for raw in text.splitlines():
        if not raw.startswith('{"file": '):  # mypy's first key; other lines are not worth a try
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue  # a line cut by the output cap, or another tool's JSON
        if not isinstance(obj, dict) or not {"file", "line", "message", "severity"} <= obj.keys():
            continue
        # mypy already folds notes at an error's position into its "hint".
        notes = [obj["hint"]] if isinstance(obj.get("hint"), str) and obj["hint"] else []
        code = obj.get("code")
        column = _number(obj.get("column"))
        entries.append(
            _Entry(
                path=str(obj["file"]),
                line=_number(obj["line"]) or None,
                column=None if column is None else column + 1,  # JSON columns count from 0
                severity=str(obj["severity"]),
                message=[str(obj["message"])],
                code=code if isinstance(code, str) else None,
                notes=notes,
            )
        )
    yield from _problems(entries, builder)


def parse_text(text: str, builder: ProblemBuilder) -> Iterator[Problem]:
    entries: list[_Entry] = []
    latest_error: dict[tuple[str, int | None], _Entry] = {}
    previous: _Entry | None = None
    wrapping: list[str] | None = None  # --pretty wraps long messages onto following lines
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if match is None:
            if wrapping is not None and _continues(raw, wrapping):
                wrapping.append(raw.strip())
            else:
                wrapping = None
            continue
        path, line = match["path"], _number(match["line"]) or None
        if match["severity"] == "note":
            # Like mypy's own JSON output: a note belongs to the error at its position; a
            # "defined here" note points elsewhere but explains the error just before it.
            owner = latest_error.get((path, line))
            if owner is None and previous is not None and "defined here" in match["msg"]:
                owner = previous
            if owner is not None:
                owner.notes.append(match["msg"])
                wrapping = owner.notes
                continue
        entry = _Entry(path, line, _number(match["col"]), match["severity"], [match["msg"]])
        entries.append(entry)
        wrapping = entry.message
        if entry.severity == "error":
            latest_error[(path, line)] = previous = entry
    yield from _problems(entries, builder)


def _problems(entries: list[_Entry], builder: ProblemBuilder) -> Iterator[Problem]:
    errors = [entry for entry in entries if entry.severity == "error"]
    # A note of its own (reveal_type) only matters when nothing else explains the failure.
    for entry in errors or entries:
        message = " ".join(entry.message)
        code = entry.code
        if code is None and (match := _CODE.match(message)):
            message, code = match["msg"], match["code"]
        if entry.severity == "note":
            message = f"note: {message}"
        located = entry.path != "mypy"  # "mypy: error: …" is about the invocation
        yield builder.problem(
            "type-error",
            "\n".join([message, *entry.notes]),
            code=code,
            path=entry.path if located else None,
            line=entry.line,
            column=entry.column,
        )


def _continues(raw: str, wrapping: list[str]) -> bool:
    """A wrapped message goes on, unindented, until its `[code]`; snippets are indented."""
    if not wrapping or not raw or raw[0].isspace() or _SUMMARY.match(raw):
        return False
    return _CODE.match(wrapping[-1]) is None


def _number(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
