"""A test gate's verdict from pytest's own report (harness/gates/pytest_report.py): exit 0
does not pass against a report or closing line that says otherwise, a missing report after
pytest ran is never a pass, and the report, in an agent-writable dir, is read without following
or unlinking anything the agent planted there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.config.policy import GateConfig
from harness.gates.pytest_report import contradiction, read_report, report_dir
from harness.parsers.pytest import junit_totals
from harness.sandbox import Completed

PYTEST = GateConfig(name="tests", kind="test", command="pytest -q")
NOT_PYTEST = GateConfig(name="done", kind="test", command="test -f done.txt")


def report(tests: int, failures: int = 0, errors: int = 0) -> bytes:
    return (
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{tests}" '
        f'failures="{failures}" errors="{errors}" skipped="0"></testsuite></testsuites>'
    ).encode()


def exit0(output: str = "") -> Completed:
    return Completed(exit_code=0, output=output, duration_s=0.1)


def test_a_clean_report_does_not_contradict_exit_0() -> None:
    assert contradiction(PYTEST, exit0("2 passed in 0.1s"), report(2), {"passed": 2}) is None


@pytest.mark.parametrize(
    ("data", "counts", "said"),
    [
        (report(2, failures=1), {}, "report shows 1 failed"),
        (report(2, errors=1), {}, "report shows 1 failed"),
        (report(0), {}, "no test ran"),
        (report(2), {"failed": 1, "passed": 1}, "closing line reports 1 failed"),
        (None, {}, "no report"),
        (b"<not xml", {}, "not well-formed"),
    ],
)
def test_exit_0_against_pytest_s_own_word_fails(
    data: bytes | None, counts: dict[str, int], said: str
) -> None:
    why = contradiction(PYTEST, exit0(), data, counts)
    assert why is not None and said in why


def test_a_test_gate_that_is_not_pytest_owes_no_report() -> None:
    assert contradiction(NOT_PYTEST, exit0(), None, {}) is None
    # ...unless its output shows pytest ran (a script running pytest -q)
    script = GateConfig(name="t", kind="test", command="./run-tests.sh")
    assert contradiction(script, exit0("3 passed in 0.52s"), None, {"passed": 3}) is not None


def test_other_kinds_and_failed_runs_are_left_to_the_exit_code() -> None:
    lint = GateConfig(name="lint", kind="lint", command="ruff check .")
    assert contradiction(lint, exit0(), None, {}) is None
    failed = Completed(exit_code=1, output="", duration_s=0.1)
    assert contradiction(PYTEST, failed, None, {}) is None


def test_junit_totals_sum_suites() -> None:
    suite = '<testsuite tests="{}" failures="{}" errors="0" skipped="0"/>'
    both = f"<testsuites>{suite.format(2, 1)}{suite.format(3, 0)}</testsuites>".encode()
    totals = junit_totals(both)
    assert totals is not None and totals["tests"] == 5 and totals["failures"] == 1


def test_a_symlinked_report_is_not_followed_nor_its_target_unlinked(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.xml"
    secret.write_bytes(report(1))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with report_dir(scratch) as where:
        assert oct(where.path.stat().st_mode & 0o777) == "0o700"
        where.report.symlink_to(secret)
        assert read_report(where) is None
    assert secret.read_bytes() == report(1)
    assert list(scratch.iterdir()) == []


def test_a_report_dir_swapped_for_a_symlink_is_not_read_nor_emptied(tmp_path: Path) -> None:
    elsewhere = tmp_path / "host-dir"
    elsewhere.mkdir()
    (elsewhere / "junit.xml").write_bytes(report(1))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with report_dir(scratch) as where:
        where.path.rmdir()
        where.path.symlink_to(elsewhere)
        assert read_report(where) is None
    assert (elsewhere / "junit.xml").read_bytes() == report(1)


def test_a_fifo_report_is_no_report(tmp_path: Path) -> None:
    with report_dir(tmp_path) as where:
        os.mkfifo(where.report)
        assert read_report(where) is None


def test_a_regular_report_is_read(tmp_path: Path) -> None:
    with report_dir(tmp_path) as where:
        where.report.write_bytes(report(4))
        assert read_report(where) == report(4)


def test_an_entity_bomb_report_is_not_read_as_a_pass() -> None:
    entities = "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)
    )
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">{entities}]>'
        '<testsuite tests="1" failures="0">&j;</testsuite>'
    ).encode()
    assert junit_totals(bomb) is None
    why = contradiction(PYTEST, exit0(), bomb, {})
    assert why is not None and "not well-formed" in why
