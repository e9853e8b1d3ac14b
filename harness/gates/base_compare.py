"""Base against head: what a gate measured on the untouched base must still be measured on the
head. A gate that passes on the head is compared with its run on the base commit (one run per
repository, base, subdir and gate in a run of harness, shared through `PreexistingFailures`):

- a test gate (pytest's JUnit report): every test that passed on the base must still run and
  pass on the head. One that is gone (deleted, renamed out of collection, deselected) is
  `test_missing`; one now skipped or xfailed is `test_newly_skipped`; one now failing or
  erroring is `test_missing` too (it no longer passes). A spec's `tests_may_change` globs
  (matched against the test id and its file) let a deliberate change through. A test that
  failed or was skipped on the base is not protected: removing a red test is the guard's
  business (`test_function_removed`), not this comparison's.
- a lint gate running ruff: the files `ruff check --show-files` lists with the gate's own
  arguments; a type gate running mypy: the sources `mypy -v` says it was given (run after the
  gate, on its warm cache). A file checked on the base and not on the head, while it is still
  there or was moved (git's rename detection) to a path the gate no longer checks, is
  `file_unchecked`: e.g. a module moved under `node_modules/` or `dist/`, which the tools skip.
- any other gate command (another tool, or a shell pipeline harness cannot re-run with one more
  option) is not compared, and its record says so.

Findings fail the head's gate run like a failing test: the attempt is retried with them as
problems, and escalates when the budget runs out; `guard.allow` and `guard.action: flag` apply
as to the fake-green guard's findings. Counts for both sides go in the gate's record, and the
PR record shows them side by side.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from harness.config.policy import GateConfig, GuardConfig
from harness.gates.record import BaseComparison, GateRecord
from harness.parsers.pytest import MAX_XML_BYTES, junit_outcomes
from harness.problems import Problem, problem_type
from harness.sandbox import Completed, Sandbox

SHOWN = 10
"""Test ids or files named in a finding's message; the gate record keeps the full list."""
# A command harness can re-run with one more option: one simple command, no shell syntax.
_SHELL_SYNTAX = re.compile(r"[;&|<>`$(){}\n\\*?\[\]~]")
_PYTHON = re.compile(r"^python[0-9.]*$")
# mypy -v: "LOG:  Found source:  BuildSource(path='./pkg/mod.py', module='pkg.mod', ...)".
# At a line's start: mypy prints paths as reprs, so no file name can start a line of its own.
_MYPY_SOURCE = re.compile(
    r"^LOG:\s+Found source:\s+BuildSource\(path=(['\"])(.*?)\1, module=", re.MULTILINE
)


@dataclass(frozen=True)
class Observed:
    """What one run of a gate measured: its tests' outcomes or the files it checked."""

    tests: dict[str, str] | None = None
    """Test id → passed, failed, error or skipped (from the JUnit report)."""
    files: frozenset[str] | None = None
    """Paths the tool checked, relative to the gate's working directory."""
    not_compared: str | None = None
    """Why nothing was measured (an unknown tool, no report)."""


def observe(
    gate: GateConfig, sandbox: Sandbox, junit: bytes | None, log: Path, timeout_s: float
) -> Observed:
    """What the gate measured on the tree in `sandbox`; a lint or type gate's listing runs
    there now (ruff lists without checking; mypy re-checks on the gate's warm cache)."""
    if gate.kind == "test":
        if junit is None:
            return Observed(not_compared="no JUnit report: the gate does not run pytest")
        outcomes = junit_outcomes(junit)
        if outcomes is None:
            return Observed(not_compared="pytest's report is not well-formed JUnit XML")
        return Observed(tests=outcomes)
    argv = _simple_command(gate.command)
    if gate.kind == "lint" and argv is not None and (listing := _ruff_listing(argv)) is not None:
        done = sandbox.run(shlex.join(listing), timeout_s=timeout_s, log_path=log)
        if done.timed_out or done.exit_code not in (0, 1):
            return Observed(not_compared=f"`{shlex.join(listing)}` failed ({done.exit_code})")
        return Observed(files=_relative(sandbox.path, _output(done).splitlines()))
    if gate.kind == "type" and argv is not None and _is_mypy(argv):
        # -v logs each source mypy was given ("Found source: BuildSource(path=...)"): with the
        # gate's cache warm it costs what the gate did. A report (--linecoverage-report) would
        # list them too, but it makes mypy analyse everything again, cache or not.
        listing = [*argv, "-v"]
        done = sandbox.run(shlex.join(listing), timeout_s=timeout_s, log_path=log)
        files = _MYPY_SOURCE.findall(_output(done)) if not done.timed_out else []
        if not files:
            return Observed(not_compared=f"`{shlex.join(listing)}` listed no source")
        return Observed(files=_relative(sandbox.path, [path for _, path in files]))
    if gate.kind == "integration":
        return Observed(not_compared="integration gates need services the base run has not")
    return Observed(
        not_compared=f"`{gate.command}` is not one command harness knows how to compare "
        "(pytest for tests, ruff check for lint, mypy for types)"
    )


@dataclass(frozen=True)
class AgainstBase:
    """A task's gates compared with their runs on its base commit."""

    on_base: Callable[[GateConfig], Observed]
    """The gate's measurement on the base (run once, cached across tasks)."""
    may_change: list[str]
    """The spec's `tests_may_change` globs."""
    guard: GuardConfig
    present: Callable[[str], bool]
    """Whether a path (relative to the gate's working directory) exists on the head."""
    moved: Callable[[], dict[str, str]]
    """Paths renamed since the base, old → new, relative to the gate's working directory."""

    def review(
        self, gate: GateConfig, record: GateRecord, head: Observed, instance: str
    ) -> tuple[GateRecord, list[Problem]]:
        """`record` with the comparison, failed when it found what policy refuses."""
        base = self.on_base(gate) if head.not_compared is None else head
        comparison = self.compare(base, head)
        comparison.findings = {
            kind: ids for kind, ids in comparison.findings.items() if kind not in self.guard.allow
        }
        if comparison.findings and self.guard.action == "flag":
            comparison.note = "findings flagged, not refused (policy: guard.action flag)"
        refused = bool(comparison.findings) and self.guard.action == "block"
        comparison.refused = refused
        record = record.model_copy(update={"base": comparison, "passed": not refused})
        if not refused:
            return record, []
        return record, [
            finding_problem(gate, kind, ids, instance, record.log)
            for kind, ids in comparison.findings.items()
        ]

    def compare(self, base: Observed, head: Observed) -> BaseComparison:
        why = head.not_compared or base.not_compared
        if why is not None:
            return BaseComparison(compared="none", note=f"not compared: {why}")
        if base.tests is not None and head.tests is not None:
            return self._tests(base.tests, head.tests)
        if base.files is not None and head.files is not None:
            return self._files(base.files, head.files)
        return BaseComparison(compared="none", note="not compared: nothing measured")

    def _tests(self, base: dict[str, str], head: dict[str, str]) -> BaseComparison:
        missing, skipped = [], []
        for test, outcome in sorted(base.items()):
            if outcome != "passed" or self._may_change(test):
                continue
            now = head.get(test)
            if now == "skipped":
                skipped.append(test)
            elif now != "passed":
                missing.append(test)
        findings = {"test_missing": missing, "test_newly_skipped": skipped}
        return BaseComparison(
            compared="tests",
            base=test_counts(base),
            head=test_counts(head),
            findings={kind: ids for kind, ids in findings.items() if ids},
        )

    def _files(self, base: frozenset[str], head: frozenset[str]) -> BaseComparison:
        dropped = sorted(base - head)
        moved = self.moved() if dropped else {}
        unchecked = [
            moved.get(path, path)
            for path in dropped
            if (path in moved and moved[path] not in head) or self.present(path)
        ]
        return BaseComparison(
            compared="files",
            base={"checked": len(base)},
            head={"checked": len(head)},
            findings={"file_unchecked": unchecked} if unchecked else {},
        )

    def _may_change(self, test: str) -> bool:
        file = test.split("::", 1)[0]
        return any(fnmatchcase(test, p) or fnmatchcase(file, p) for p in self.may_change)


def test_counts(outcomes: dict[str, str]) -> dict[str, int]:
    values = list(outcomes.values())
    return {
        "passed": values.count("passed"),
        "failed": values.count("failed") + values.count("error"),
        "skipped": values.count("skipped"),
        "total": len(values),
    }


_WHAT: dict[str, str] = {
    "test_missing": "test(s) that passed on the base no longer run and pass on the head "
    "(deleted, renamed out of collection, deselected, or now failing)",
    "test_newly_skipped": "test(s) that passed on the base are skipped (or xfailed) on the head",
    "file_unchecked": "file(s) the gate checked on the base are no longer checked on the head "
    "(excluded, or moved where the tool does not look)",
}


def finding_problem(
    gate: GateConfig, kind: str, ids: list[str], instance: str, log: str | None
) -> Problem:
    shown = ", ".join(ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
    return Problem(
        type=problem_type("gate-weaker-than-base"),
        title=f"Gate {gate.name!r}: {len(ids)} {_WHAT[kind].split(' (')[0]}",
        detail=f"{len(ids)} {_WHAT[kind]}: {shown}. harness compares every gate with its run on "
        "the untouched base: what was checked and passing there must still be checked and pass. "
        "Keep the tests and files where the gate runs them; if the spec means them to change, "
        "its `tests_may_change` says so.",
        instance=instance,
        gate=gate.name,
        command=gate.command,
        code=kind,
        category="policy",
        retryable=True,
        log=log,
    )


def _simple_command(command: str) -> list[str] | None:
    """The command's words, when it is one simple command harness can add an option to."""
    if _SHELL_SYNTAX.search(command):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    return argv or None


def _tool_at(argv: list[str], tool: str) -> int | None:
    """Where the words after `tool` start: `tool ...`, `path/to/tool ...`, `python -m tool`."""
    if PurePosixPath(argv[0]).name == tool:
        return 1
    if _PYTHON.match(PurePosixPath(argv[0]).name) and argv[1:3] == ["-m", tool]:
        return 3
    return None


def _ruff_listing(argv: list[str]) -> list[str] | None:
    at = _tool_at(argv, "ruff")
    if at is None or argv[at : at + 1] != ["check"]:
        return None
    # --show-files lists what `ruff check` would check with these arguments, changing nothing.
    return [*argv[: at + 1], "--show-files", *(a for a in argv[at + 1 :] if a != "--fix")]


def _is_mypy(argv: list[str]) -> bool:
    return _tool_at(argv, "mypy") is not None


def _relative(root: Path, paths: list[str]) -> frozenset[str]:
    """Paths under `root` (as the tool printed them: absolute, the sandbox sees the tree at
    the same path), relative to it; anything else the tool printed is not a checked file."""
    roots = {str(root), os.path.realpath(root)}
    found = set()
    for line in paths:
        path = line.strip()
        if not path:
            continue
        for top in roots:
            if os.path.isabs(path) and path.startswith(top.rstrip("/") + "/"):
                found.add(os.path.normpath(path[len(top.rstrip("/")) + 1 :]))
                break
        else:
            if not os.path.isabs(path) and not path.startswith(".."):
                found.add(os.path.normpath(path))
    return frozenset(found)


def _output(done: Completed) -> str:
    """The listing's whole output: its log when the in-memory copy was cut."""
    log = done.log_path
    if done.output_cut_bytes and log is not None and log.stat().st_size <= MAX_XML_BYTES:
        return log.read_text(encoding="utf-8", errors="replace")
    return done.output


def present_in(root: Path) -> Callable[[str], bool]:
    """Whether a relative path exists under `root` (lstat: nothing followed)."""
    return lambda path: os.path.lexists(root / path)


def moved_since(changes: list[tuple[str | None, str | None]], subdir: Path) -> dict[str, str]:
    """Renames from git's file changes (paths from the top level), relative to `subdir`."""
    prefix = "" if str(subdir) in ("", ".") else f"{subdir.as_posix().rstrip('/')}/"
    moved = {}
    for old, new in changes:
        if old and new and old != new and old.startswith(prefix) and new.startswith(prefix):
            moved[old[len(prefix) :]] = new[len(prefix) :]
    return moved
