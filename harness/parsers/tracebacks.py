"""Python tracebacks as pytest prints them: the frames inside the repository, the exception.

Reads pytest's long, short and auto styles (`path:line: ExcName`, `path:line: in func`) and
native tracebacks (`File "path", line N, in func`), from JUnit XML or pytest's text output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.parsers.builder import ProblemBuilder
from harness.problems import Problem

MAX_FRAMES = 8
MAX_MESSAGE_LINES = 20
MAX_MESSAGE_CHARS = 2000

_PYTEST_FRAME = re.compile(
    r"^(?P<path>[^\s:][^:\n]*?\.py):(?P<line>\d+):"
    r"(?: in (?P<func>\S.*?)| (?P<exc>[A-Za-z_][\w.]*))?\s*$"
)
_NATIVE_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_DEF = re.compile(r"^\s*(?:async\s+)?def (?P<name>\w+)\(")
# An exception's name: dotted, its last part capitalised (ValueError, json.JSONDecodeError).
_EXCEPTION = re.compile(r"^(?P<name>(?:[A-Za-z_]\w*\.)*[A-Z]\w*)(?::|$)")


@dataclass(frozen=True)
class Frame:
    path: str
    """Relative to the gate's working directory."""
    line: int
    function: str | None
    source: str | None

    def render(self) -> str:
        where = f"{self.path}:{self.line}" + (f" in {self.function}" if self.function else "")
        return where + (f"\n    {self.source}" if self.source else "")


def repo_frames(text: str, builder: ProblemBuilder) -> list[Frame]:
    """The frames of the traceback whose files are the project's own, outermost first."""
    lines = text.splitlines()
    frames: list[Frame] = []
    chunk_start = 0  # long-style frames print their source before their location line
    for index, raw in enumerate(lines):
        native = _NATIVE_FRAME.match(raw)
        match = native or _PYTEST_FRAME.match(raw)
        if match is None:
            continue
        chunk, chunk_start = lines[chunk_start:index], index + 1
        path = builder.relative(match["path"])
        if not builder.in_repo(path):
            continue
        function, source = match["func"], None
        if native or function:  # the source line follows the location
            following = lines[index + 1] if index + 1 < len(lines) else ""
            source = following.strip() if following[:1].isspace() else None
        else:
            function, source = _long_frame(chunk)
        frame = Frame(path, int(match["line"]), function, source)
        if not frames or frames[-1] != frame:  # recursion repeats frames
            frames.append(frame)
    return frames[-MAX_FRAMES:]


def parse_uncaught(text: str, builder: ProblemBuilder) -> list[Problem]:
    """A native traceback in any gate's output (a script or service that crashed): one
    problem at its innermost frame in the repository, with the exception and the frames."""
    if "Traceback (most recent call last)" not in text:
        return []
    frames = repo_frames(text, builder)
    tail = text[text.rindex("Traceback (most recent call last)") :].splitlines()
    message = next((line for line in reversed(tail) if _EXCEPTION.match(line)), None)
    if not frames or message is None:
        return []
    where = frames[-1]
    return [
        builder.problem(
            "uncaught-exception",
            compact_detail(message, frames),
            code=exception_name(text, message),
            path=where.path,
            line=where.line,
        )
    ]


def _long_frame(chunk: list[str]) -> tuple[str | None, str | None]:
    """The function name and the `>`-marked failing line of a long-style frame."""
    marked = [i for i, line in enumerate(chunk) if line.startswith(">")]
    if not marked:
        return None, None
    failing = marked[-1]
    names = [m["name"] for line in chunk[:failing] if (m := _DEF.match(line))]
    return (names[-1] if names else None), chunk[failing][1:].strip() or None


def error_lines(text: str) -> str:
    """pytest's `E   …` lines: the exception and the assertion's explanation."""
    lines = [line[1:] for line in text.splitlines() if line.startswith("E ") or line == "E"]
    if not lines:
        return ""
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:].rstrip() for line in lines).strip()


def exception_name(text: str, message: str) -> str | None:
    """The exception's short name: pytest's last `path:line: ExcName`, else the `E` lines,
    the message, or a native traceback's last line."""
    for raw in reversed(text.splitlines()):
        if (frame := _PYTEST_FRAME.match(raw)) and frame["exc"]:
            return _short(frame["exc"])
    candidates = [error_lines(text), message.strip()]
    if "Traceback (most recent call last)" in text:
        candidates.append(text.rstrip().splitlines()[-1])
    for candidate in candidates:
        if candidate.startswith("assert "):
            return "AssertionError"
        if match := _EXCEPTION.match(candidate):
            return _short(match["name"])
    return None


def compact_detail(message: str, frames: list[Frame]) -> str:
    """The message (capped) and the in-repo frames, innermost last."""
    lines = [line.rstrip() for line in message.strip().splitlines()[:MAX_MESSAGE_LINES]]
    text = "\n".join(lines)[:MAX_MESSAGE_CHARS]
    if frames:
        text += "\n\nTraceback, frames in the repository (most recent call last):\n"
        text += "\n".join(frame.render() for frame in frames)
    return text


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]
