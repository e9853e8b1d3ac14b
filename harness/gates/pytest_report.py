"""The JUnit report pytest writes for a test gate, and what it says against the exit code.

A test gate's verdict comes from pytest's own report, not from its exit code alone: the agent
writes the code the gate runs (conftest.py included), and a hook can set the exit status to 0,
or `os._exit(0)` can end the process before pytest has judged anything. So a test gate that
exits 0 still fails when its report shows failures or errors or ran no test, when pytest's own
closing line names failures, or when its command ran pytest and no report was written.

The report lives where the gate can write it, so the agent can too: harness makes a fresh
directory for each run (a random name, mode 0700) in the sandbox's scratch dir, and reads the
report through that directory's descriptor with O_NOFOLLOW, a size cap and a regular-file
check. Nothing there is followed, unlinked through a symlink or trusted beyond its bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.config.policy import GateConfig
from harness.parsers.pytest import MAX_XML_BYTES, junit_totals
from harness.problems import Problem, problem_type
from harness.sandbox import Completed

REPORT_NAME = "junit.xml"
# `pytest`, `py.test`, `python -m pytest`: the command itself runs pytest.
_PYTEST_COMMAND = re.compile(r"(?<![\w.-])(?:pytest|py\.test)(?![\w-])")
# pytest printed its header (not with -q) or a closing count line: it ran, whatever ran it.
_PYTEST_OUTPUT = re.compile(
    r"^=+ test session starts =+$|^(?:=+ )?(?:\d+ (?:passed|failed|errors?|skipped|xfailed|"
    r"xpassed|deselected|warnings?)(?:, )?)+ in [\d.]+s",
    re.MULTILINE,
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class ReportDir:
    """A fresh directory for one gate run's report, in the sandbox's scratch dir."""

    path: Path

    @property
    def report(self) -> Path:
        """Where pytest is told to write the report (`--junitxml`)."""
        return self.path / REPORT_NAME


@contextlib.contextmanager
def report_dir(scratch: Path) -> Iterator[ReportDir]:
    """A directory made fresh (mkdtemp: exclusive, mode 0700, a random name) directly in
    `scratch`, whose own parent the agent cannot write; removed afterwards without following
    anything the gate left in it."""
    made = Path(tempfile.mkdtemp(prefix="report-", dir=scratch))
    try:
        yield ReportDir(made)
    finally:
        _remove(made)


def read_report(where: ReportDir) -> bytes | None:
    """The report's bytes; None when it is missing, not a regular file, over the size cap, or
    its directory was replaced (by a symlink, say) while the gate ran."""
    try:
        directory = os.open(where.path, _DIR_FLAGS)
    except OSError:
        return None
    try:
        fd = os.open(REPORT_NAME, _FILE_FLAGS, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    with os.fdopen(fd, "rb") as report:
        info = os.fstat(report.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_XML_BYTES:
            return None
        data = report.read(MAX_XML_BYTES + 1)
    return data if len(data) <= MAX_XML_BYTES else None


def ran_pytest(gate: GateConfig, output: str) -> bool:
    """Whether the gate's run went through pytest, so a report is owed: its command names
    pytest, or its output shows pytest's header or closing line. A test gate that is not
    pytest (`test -f done.txt`, a script running another runner) owes none."""
    return bool(_PYTEST_COMMAND.search(gate.command) or _PYTEST_OUTPUT.search(output[-4000:]))


def contradiction(
    gate: GateConfig, done: Completed, report: bytes | None, counts: dict[str, int]
) -> str | None:
    """Why a test gate that exited 0 did not pass, by pytest's report and closing line; None
    when nothing contradicts the exit code."""
    if gate.kind != "test" or done.exit_code != 0 or done.timed_out:
        return None
    said = counts.get("failed", 0) + counts.get("errors", 0)
    if said:
        return f"pytest's closing line reports {said} failed or erroring test(s), yet it exited 0"
    if report is None:
        if not ran_pytest(gate, done.output):
            return None
        return (
            "pytest wrote no report (or not a regular file): the process died or exited before "
            "pytest finished, e.g. os._exit in a conftest, so nothing shows the tests passed"
        )
    totals = junit_totals(report)
    if totals is None:
        return "pytest's report is not well-formed JUnit XML, so nothing shows the tests passed"
    bad = totals["failures"] + totals["errors"]
    if bad:
        return f"pytest's report shows {bad} failed or erroring test(s), yet it exited 0"
    if totals["tests"] == 0:
        return "pytest's report shows that no test ran"
    return None


def contradiction_problem(gate: GateConfig, why: str, instance: str, log: str | None) -> Problem:
    return Problem(
        type=problem_type("gate-verdict-contradicted"),
        title=f"Gate {gate.name!r} exited 0 but did not pass",
        detail=f"{why}. A test gate passes only when pytest itself reports that its tests ran "
        "and passed; do not change how the tests are run or reported (conftest hooks, exit "
        "calls, pytest options).",
        instance=instance,
        gate=gate.name,
        command=gate.command,
        exit_code=0,
        code="verdict_contradicted",
        category="policy",
        retryable=True,
        log=log,
    )


def _remove(made: Path) -> None:
    """Best effort: unlink what is directly in the directory (unlink never follows the last
    component), then the directory. What cannot go is left for the sandbox's teardown."""
    try:
        directory = os.open(made, _DIR_FLAGS)
    except OSError:
        return
    try:
        for name in os.listdir(directory):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=directory)
    except OSError:
        pass
    finally:
        os.close(directory)
    with contextlib.suppress(OSError):
        made.rmdir()
