"""pytest: failing and erroring tests from its JUnit XML report, else from its text output."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

from harness.parsers.builder import ProblemBuilder
from harness.parsers.tracebacks import compact_detail, error_lines, exception_name, repo_frames
from harness.problems import Problem

# Beyond this the report is not pytest's of one gate run; the text output is used instead.
MAX_XML_BYTES = 64 * 1024 * 1024
# pytest's headers and summary lines are short; longer lines are output, not worth a regex.
MAX_LINE_CHARS = 1000
# A traceback longer than this is mostly captured noise; its start holds the test's frames.
MAX_SECTION_LINES = 2000

_REGION = re.compile(r"^=+ (?P<name>.+?) =+$")
_SECTION = re.compile(r"^_{3,} (?P<title>.+?) _{3,}$")
_CAPTURED = re.compile(r"^-+ Captured .+ -+$")
# The short test summary; pytest cuts the message to the terminal's width.
_SUMMARY = re.compile(r"^(?P<kind>FAILED|ERROR) (?P<id>\S+?(?:\.py|::\S+?))(?: - (?P<msg>.*))?$")
# Its closing line: "2 failed, 40 passed, 1 skipped in 1.2s".
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)\b")


def count(tail: str) -> dict[str, int]:
    """Tests by outcome from pytest's closing line, among the last three lines of `tail`
    ("error" and "errors" both counted as errors); empty when none names a count."""
    counts: dict[str, int] = {}
    for number, word in _COUNT.findall("\n".join(tail.strip().splitlines()[-3:])):
        counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def junit_totals(data: bytes) -> dict[str, int] | None:
    """Tests by outcome ("tests", "failures", "errors", "skipped") summed over a JUnit report's
    test suites; None when it is not well-formed XML or holds no test suite."""
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    suites = 0
    try:
        # Attributes only: pytest writes each suite's totals on its <testsuite> element.
        for _, element in ElementTree.iterparse(io.BytesIO(data), events=("start",)):
            if element.tag == "testsuite":
                suites += 1
                for key in totals:
                    value = element.get(key, "0")
                    totals[key] += int(value) if value.isdigit() else 0
    except ElementTree.ParseError:
        return None
    return totals if suites else None


def junit_outcomes(data: bytes) -> dict[str, str] | None:
    """Each test's outcome ("passed", "failed", "error" or "skipped"; xfail is pytest's skip)
    by node id, from a JUnit report written with xunit1 (each case carries its `file`), else
    by `classname::name`; None when it is not well-formed XML or holds no test suite."""
    outcomes: dict[str, str] = {}
    suites = 0
    try:
        for _, element in ElementTree.iterparse(io.BytesIO(data), events=("end",)):
            if element.tag == "testsuite":
                suites += 1
            if element.tag != "testcase":
                continue
            found = {child.tag for child in element}
            outcome = next((o for o in ("error", "failure", "skipped") if o in found), "passed")
            outcomes[_case_id(element)] = "failed" if outcome == "failure" else outcome
            element.clear()
    except ElementTree.ParseError:
        return None
    return outcomes if suites else None


def _case_id(case: ElementTree.Element) -> str:
    """A case's node id without looking at the tree (the report is compared, not located):
    tests/test_x.py::TestC::test_y when the case names its file, else classname::name."""
    name, classname, file = case.get("name", ""), case.get("classname", ""), case.get("file")
    if not classname:  # a collection error: `name` is the module
        return file or name
    parts = classname.split(".")
    if file:
        depth = len(Path(file).with_suffix("").parts)
        return "::".join([file, *parts[depth:], name])
    return f"{classname}::{name}"


def parse_junit(report: Path, builder: ProblemBuilder, *, limit: int) -> list[Problem] | None:
    """Up to `limit` problems from the report, or None when it is missing, too big or not
    well-formed XML."""
    try:
        if report.stat().st_size > MAX_XML_BYTES:
            return None
        problems: list[Problem] = []
        # The agent's code can write this report, so it is untrusted: the runner caps its size
        # and copies it where only harness writes; ElementTree resolves no external entities,
        # and expat >= 2.4 (Python's bundled one) refuses entity amplification ("billion laughs").
        for _, case in ElementTree.iterparse(report, events=("end",)):
            if case.tag != "testcase":
                continue
            for outcome in case:
                if outcome.tag in ("failure", "error") and len(problems) < limit:
                    problems.append(_from_testcase(case, outcome, builder))
            case.clear()  # keep memory flat on large suites
        return problems
    except (OSError, ElementTree.ParseError):
        return None


def _from_testcase(
    case: ElementTree.Element, outcome: ElementTree.Element, builder: ProblemBuilder
) -> Problem:
    text = outcome.text or ""
    message = outcome.get("message") or ""
    if message in ("", "collection failure"):
        message = error_lines(text) or message or outcome.tag
    test_id, test_file = _junit_test_id(case, builder)
    frames = repo_frames(text, builder)
    path, line = (frames[-1].path, frames[-1].line) if frames else (test_file, _line(case))
    return builder.problem(
        "test-failure" if outcome.tag == "failure" else "test-error",
        compact_detail(message, frames),
        code=exception_name(text, message),
        path=path,
        line=line,
        test_id=test_id,
    )


def _junit_test_id(case: ElementTree.Element, builder: ProblemBuilder) -> tuple[str, str]:
    """The node id (tests/test_x.py::TestC::test_y) and the test file, from pytest's mangled
    `classname` (tests.test_x.TestC) and `name`; xunit1 reports also carry `file`."""
    name, classname, file = case.get("name", ""), case.get("classname", ""), case.get("file")
    if not classname:  # a collection error: `name` is the module, dotted
        path = file or _module_file(name.split("."), builder)
        return path, path
    parts = classname.split(".")
    if file:
        depth = len(Path(file).with_suffix("").parts)
    else:
        file, depth = _find_module(parts, builder)
    return "::".join([file, *parts[depth:], name]), file


def _find_module(parts: list[str], builder: ProblemBuilder) -> tuple[str, int]:
    for depth in range(len(parts), 0, -1):
        candidate = "/".join(parts[:depth]) + ".py"
        if builder.is_file(candidate):
            return candidate, depth
    # Not found from here (pytest's rootdir is elsewhere): classes are capitalised, modules not.
    depth = next((i for i, part in enumerate(parts) if part[:1].isupper()), len(parts)) or 1
    return "/".join(parts[:depth]) + ".py", depth


def _module_file(parts: list[str], builder: ProblemBuilder) -> str:
    """tests.test_x is tests/test_x.py, unless only a package directory of that name exists."""
    module = "/".join(parts)
    if builder.is_file(module + ".py") or not (builder.root / module).is_dir():
        return module + ".py"
    return module


def _line(case: ElementTree.Element) -> int | None:
    value = case.get("line", "")  # xunit1: the test's def line, counted from 0
    return int(value) + 1 if value.isdigit() else None


def parse_text(text: str, builder: ProblemBuilder) -> Iterator[Problem]:
    sections = _sections(text)
    seen: set[str] = set()
    reported: set[tuple[str, str]] = set()  # a command running pytest twice repeats them
    for line in text.splitlines():
        match = _SUMMARY.match(line) if len(line) < MAX_LINE_CHARS else None
        if match is None or (match["kind"], match["id"]) in reported:
            continue
        test_id, kind = match["id"], match["kind"]
        reported.add((kind, test_id))
        titles = _section_titles(test_id, failed=kind == "FAILED")
        title = next((t for t in titles if t in sections and t not in seen), None)
        body = sections.get(title, "") if title else ""
        seen.add(title or "")
        yield _from_text(body, match["msg"] or "", kind == "FAILED", test_id, builder)
    # Without a summary (-rN) the sections alone say which tests failed.
    for title, body in sections.items():
        if title not in seen:
            yield _from_text(
                body, "", not title.startswith("ERROR"), _guess_id(title, body, builder), builder
            )


def _section_titles(test_id: str, *, failed: bool) -> list[str]:
    """The titles pytest gives a test's sections: its node id after the file, dotted."""
    head = test_id.split("::", 1)[1].replace("::", ".") if "::" in test_id else test_id
    if failed:
        return [head]
    return [
        f"ERROR at setup of {head}",
        f"ERROR at teardown of {head}",
        f"ERROR collecting {test_id}",
    ]


def _from_text(
    body: str, summary: str, failed: bool, test_id: str, builder: ProblemBuilder
) -> Problem:
    message = error_lines(body) or summary or ("Test failed" if failed else "Test error")
    frames = repo_frames(body, builder)
    path, line = (frames[-1].path, frames[-1].line) if frames else (test_id.split("::")[0], None)
    return builder.problem(
        "test-failure" if failed else "test-error",
        compact_detail(message, frames),
        code=exception_name(body, message),
        path=path if builder.is_file(builder.relative(path)) else None,
        line=line,
        test_id=test_id,
    )


def _sections(text: str) -> dict[str, str]:
    """The FAILURES and ERRORS sections' bodies by title, without captured output; the first
    of a title wins (a command running pytest twice prints the same titles again)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_region = False
    for raw in text.splitlines():
        if len(raw) > MAX_LINE_CHARS:
            raw = raw[:MAX_LINE_CHARS]
        elif region := _REGION.match(raw):
            in_region, current = region["name"] in ("FAILURES", "ERRORS"), None
            continue
        elif in_region and (section := _SECTION.match(raw)):
            title = section["title"]
            current = None if title in sections else sections.setdefault(title, [])
            continue
        elif _CAPTURED.match(raw):
            current = None
            continue
        if current is not None and len(current) < MAX_SECTION_LINES:
            current.append(raw)
    return {title: "\n".join(lines) for title, lines in sections.items()}


def _guess_id(title: str, body: str, builder: ProblemBuilder) -> str:
    if title.startswith("ERROR collecting "):
        return title.removeprefix("ERROR collecting ")
    head = re.sub(r"^ERROR at (?:setup|teardown) of ", "", title)
    frames = repo_frames(body, builder)
    test_file = frames[0].path if frames else None
    # The headline joins classes and the test with dots; parameters may hold dots too.
    name, bracket, params = head.partition("[")
    head = name.replace(".", "::") + bracket + params
    return f"{test_file}::{head}" if test_file else head
