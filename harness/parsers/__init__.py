"""Gate output into problems: one Problem per finding, whatever the tool, never an exception.

The parser is chosen by the output's shape (ruff's or mypy's JSON, their text formats,
pytest's report) and the command, not by the gate's kind alone: a `custom` gate running
`make check` gets the same problems as the separate gates would.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from harness import redact
from harness.config.policy import GateConfig
from harness.parsers import generic, mypy, pytest, ruff, tracebacks
from harness.parsers.builder import ProblemBuilder
from harness.parsers.context import source_context
from harness.problems import Problem

__all__ = ["MAX_PROBLEMS", "count_results", "parse_gate_output", "source_context"]

# Past this many findings more of them tell the agent nothing new; it also bounds the work
# (source context is read per problem) on an output of many megabytes.
MAX_PROBLEMS = 1000
TAIL_LINES = 60
TAIL_CHARS = 4000
COUNT_TAIL_CHARS = 4000
"""The closing lines that name counts are in this much of the output's end."""

# harness.sandbox.process keeps the head and tail of a long output around this marker.
_CUT = re.compile(r"\n\[… \d+ bytes of output cut here[^\n]*\]\n")

_logger = logging.getLogger(__name__)

Parser = Callable[[], Iterable[Problem]]


def parse_gate_output(
    gate: GateConfig,
    output: str,
    *,
    root: Path,
    junit_xml: Path | None,
    exit_code: int | None,
    log: str | None,
    instance: str,
) -> list[Problem]:
    """The problems in one gate run's output; at least one when the gate failed."""
    builder = ProblemBuilder(gate=gate, root=root, exit_code=exit_code, log=log, instance=instance)
    try:
        text = _without_cut_lines(output)
        problems = _collect(_specific(gate, text, builder, junit_xml))
        if not problems:
            problems = _collect([lambda: generic.parse(text, builder)])
        if not problems:
            problems = _collect([lambda: tracebacks.parse_uncaught(text, builder)])
    except Exception:  # a bug here must not hide the gate's failure from the agent
        _log_parser_error()
        problems = []
    if not problems and exit_code != 0:
        problems = [_gate_failed(output, builder)]
    # Problems quote output and source, and go on to feedback, records and the store's
    # checkpoints: redacted here, where they are made (a second line behind the log's own).
    redactor = redact.current()
    return [Problem.model_validate(redactor.value(p.model_dump(mode="json"))) for p in problems]


def count_results(output: str) -> dict[str, int]:
    """Test and finding counts from the closing lines of mypy, ruff or pytest output (tried in
    that order: ruff's `Found N errors` line would also match mypy's)."""
    tail = output[-COUNT_TAIL_CHARS:]
    return mypy.count(tail) or ruff.count(tail) or pytest.count(tail)


def _specific(
    gate: GateConfig, text: str, builder: ProblemBuilder, junit_xml: Path | None
) -> list[Parser]:
    parsers: list[Parser] = [
        lambda: ruff.parse_json(text, builder),
        lambda: ruff.parse_text(text, builder),
        lambda: mypy.parse_json(text, builder),
        lambda: _pytest(text, builder, junit_xml),
    ]
    if mypy.looks_like_mypy(gate.command, gate.kind, text):
        parsers.append(lambda: mypy.parse_text(text, builder))
    return parsers


def _pytest(text: str, builder: ProblemBuilder, junit_xml: Path | None) -> Iterable[Problem]:
    # The report is exact (untruncated, unwrapped); the text is the fallback when pytest did
    # not write one (crashed, a usage error) or it names no failing test.
    from_report = None
    try:
        if junit_xml is not None:
            from_report = pytest.parse_junit(junit_xml, builder, limit=MAX_PROBLEMS)
    except Exception:
        _log_parser_error()
    return from_report or pytest.parse_text(text, builder)


def _collect(parsers: list[Parser]) -> list[Problem]:
    problems: list[Problem] = []
    for parser in parsers:
        try:
            for problem in parser():
                problems.append(problem)
                if len(problems) >= MAX_PROBLEMS:
                    return problems
        except Exception:  # keep what this parser found so far, and what the others find
            _log_parser_error()
    return problems


def _without_cut_lines(output: str) -> str:
    """The output without the two partial lines either side of the cut: parsed, they would
    give wrong paths and numbers."""
    marker = _CUT.search(output)
    if marker is None:
        return output
    head_end = output.rfind("\n", 0, marker.start()) + 1
    tail_start = output.find("\n", marker.end())
    tail = output[tail_start:] if tail_start >= 0 else ""
    return output[:head_end] + "[… output cut …]" + tail


def _gate_failed(output: str, builder: ProblemBuilder) -> Problem:
    tail = "\n".join(output.rstrip().splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]
    return builder.problem("gate-failed", tail or "(no output)")


def _log_parser_error() -> None:
    _logger.warning("gate output parser failed; falling back", exc_info=True)
