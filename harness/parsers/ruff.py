"""ruff check: its JSON (`--output-format=json` or `json-lines`) and its text formats.

Also reads flake8- and pylint-style `path:line:col: CODE message` lines, the same shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from harness.parsers.builder import ProblemBuilder
from harness.problems import Problem

# A rule code (`F401 msg`, pylint's `C0114: msg`), a kebab-case diagnostic (`invalid-syntax:
# msg`) or an old ruff's `SyntaxError: msg`; a bare lowercase word would also match prose and
# compilers' `error:`.
_CODE = r"(?P<code>[A-Z]+[0-9]+(?=:? )|(?:[a-z]+(?:-[a-z]+)+|[A-Z]\w*Error)(?=:))"
_CONCISE = re.compile(
    rf"^(?P<path>[^\s:][^:\n]*):(?P<line>\d+):(?P<col>\d+): {_CODE}:? (?:\[\*\] )?(?P<msg>.+)$",
    re.MULTILINE,
)
# The default "full" format: a header, then ` --> path:line:col`, a snippet and `help:` lines.
# The arrow line is evidence enough to accept one-word headers too (`unformatted:`), but not
# the words compilers use (rustc prints the same layout).
_HEADER_CODE = (
    r"(?P<code>[A-Z]+[0-9]+(?= )|[A-Z]\w*Error(?=:)"
    r"|(?!(?:error|warning|note|help)\b)[a-z]+(?:-[a-z]+)*(?=:))"
)
_FULL = re.compile(
    rf"^{_HEADER_CODE}:? (?:\[\*\] )?(?P<msg>.+)\n"
    r"[ \t]*--> (?P<path>.+?):(?P<line>\d+):(?P<col>\d+)[ \t]*$",
    re.MULTILINE,
)
_HELP = re.compile(r"^help: (?P<help>.+)$", re.MULTILINE)
_WOULD_REFORMAT = re.compile(r"^Would reformat: (?P<path>.+?)\s*$", re.MULTILINE)
# Its closing line (mypy's `Found N errors in M files` matches too: count mypy first).
_FOUND = re.compile(r"^Found (\d+) errors?", re.MULTILINE)
# Where a diagnostic object starts: an element of ruff's pretty-printed array (nested objects
# are indented deeper) or a json-lines line.
_OBJECT_START = re.compile(r'^(?:  \{$|\{")', re.MULTILINE)


def count(tail: str) -> dict[str, int] | None:
    """Errors from ruff check's closing line; None when `tail` has none."""
    match = _FOUND.search(tail)
    return {"errors": int(match[1])} if match else None


def parse_json(text: str, builder: ProblemBuilder) -> Iterator[Problem]:
    """Every ruff diagnostic object in the text, even when the array around them was cut."""
    # Decoding object by object, not the whole array, keeps the findings before and after a
    # cut in a capped output; it also reads json-lines and JSON mixed with other tools' text.
    # Each object is decoded from its own slice: a failed decode counts the lines before the
    # error, which on the whole text would make many broken objects cost quadratic time.
    starts = [match.start() for match in _OBJECT_START.finditer(text)]
    decoder = json.JSONDecoder()
    for index, start in enumerate(starts):
        piece = text[start : starts[index + 1] if index + 1 < len(starts) else len(text)]
        try:
            value, _ = decoder.raw_decode(piece, piece.index("{"))
        except ValueError:
            continue  # cut by the output cap, or not JSON
        if isinstance(value, dict) and {"filename", "location", "code"} <= value.keys():
            problem = _from_json(value, builder)
            if problem is not None:
                yield problem


def _from_json(obj: dict[str, Any], builder: ProblemBuilder) -> Problem | None:
    location = obj.get("location")
    if not isinstance(obj["filename"], str) or not isinstance(location, dict):
        return None
    message = obj.get("message") if isinstance(obj.get("message"), str) else None
    fix = obj.get("fix")
    help_text = fix.get("message") if isinstance(fix, dict) else None
    detail = str(message or obj.get("name") or "ruff diagnostic")
    if isinstance(help_text, str) and help_text:
        detail += f"\nhelp: {help_text}"
    return builder.problem(
        "lint-violation",
        detail,
        code=obj["code"] if isinstance(obj["code"], str) else None,
        path=obj["filename"],
        line=_positive(location.get("row")),
        column=_positive(location.get("column")),
    )


def parse_text(text: str, builder: ProblemBuilder) -> Iterator[Problem]:
    for match in _CONCISE.finditer(text):
        yield _from_match(match, match["msg"], builder)
    full = list(_FULL.finditer(text))
    for index, match in enumerate(full):
        # The help line sits between this diagnostic and the next one.
        end = full[index + 1].start() if index + 1 < len(full) else len(text)
        helps = _HELP.search(text, match.end(), end)
        message = match["msg"] + (f"\nhelp: {helps['help']}" if helps else "")
        yield _from_match(match, message, builder)
    for match in _WOULD_REFORMAT.finditer(text):
        yield builder.problem(
            "lint-violation", "File would be reformatted", code="format", path=match["path"]
        )


def _from_match(match: re.Match[str], message: str, builder: ProblemBuilder) -> Problem:
    return builder.problem(
        "lint-violation",
        message,
        code=match["code"],
        path=match["path"],
        line=int(match["line"]),
        column=int(match["col"]),
    )


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
