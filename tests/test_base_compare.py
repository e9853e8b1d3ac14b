"""Issue 11, base against head: a gate that passes on the head is compared with its run on the
untouched base. Each trick below makes the real gates (pytest, ruff, mypy) pass by checking less
than the base did, in ways the fake-green guard's diff reading does not all see; none may end
verified, and the finding must name what was lost. The spec's `tests_may_change` lets a
deliberate change through, and an honest change verifies with both sides' counts in its PR.

One `harness run` runs every case (module-scoped, to keep this fast); one test checks each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import FINISH, TinyProject, escalation_problems, init_repo

from harness.config.policy import GateConfig, GuardConfig
from harness.config.spec import load_spec
from harness.errors import InputError
from harness.gates.base_compare import AgainstBase, Observed, observe
from harness.gates.record import GateRecord

CALC = "def add(a: int, b: int) -> int:\n    return a + b\n"
TESTS = (
    "from calc import add\n\n\n"
    "def test_add() -> None:\n    assert add(1, 2) == 3\n\n\n"
    "def test_other() -> None:\n    assert add(0, 0) == 0\n"
)
EXTRA = (
    '"""Helpers."""\n\n\n'
    "def double(n: int) -> int:\n    return n * 2\n\n\n"
    "def triple(n: int) -> int:\n    return n * 3\n\n\n"
    "def half(n: int) -> float:\n    return n / 2\n"
)
GATES = [
    {"name": "lint", "kind": "lint", "command": "ruff check .", "timeout_s": 60},
    {"name": "types", "kind": "type", "command": "mypy .", "timeout_s": 120},
    {"name": "tests", "kind": "test", "command": "pytest -q", "timeout_s": 120},
]
RENAMED = TESTS.replace("def test_other(", "def test_other_renamed(")


def write(path: str, content: str) -> dict[str, Any]:
    return {"tool": "write_file", "args": {"path": path, "content": content}}


def run(command: str) -> dict[str, Any]:
    return {"tool": "run", "args": {"command": command}}


# spec id → (the attempt's steps, the finding's kind, the gate, what it must name)
TRICKS: dict[str, tuple[list[dict[str, Any]], str, str, str]] = {
    "deleted": (
        [write("test_calc.py", TESTS.split("\n\n\ndef test_other")[0] + "\n")],
        "test_missing",
        "tests",
        "test_calc.py::test_other",
    ),
    "skipped": (
        [
            write(
                "test_calc.py",
                "import pytest\n\n"
                + TESTS.replace("\ndef test_other", "\n@pytest.mark.skip\ndef test_other"),
            )
        ],
        "test_newly_skipped",
        "tests",
        "test_calc.py::test_other",
    ),
    # Not collected any more, with nothing removed or skipped in the source's eyes.
    "dunder-test": (
        [write("test_calc.py", TESTS + '\n\nglobals()["test_other"].__test__ = False\n')],
        "test_missing",
        "tests",
        "test_calc.py::test_other",
    ),
    "renamed": (
        [write("test_calc.py", RENAMED)],
        "test_missing",
        "tests",
        "test_calc.py::test_other",
    ),
    # ruff skips dist/ by default: the moved module's new lint error goes unseen.
    "ruff-dist": (
        [
            run("mkdir -p dist && mv extra.py dist/extra.py"),
            write("dist/extra.py", "import os\n" + EXTRA),
        ],
        "file_unchecked",
        "lint",
        "dist/extra.py",
    ),
    # mypy skips dot directories: the moved module's new type error goes unseen.
    "mypy-hidden": (
        [
            run("mkdir -p .hidden && mv extra.py .hidden/extra.py"),
            write(".hidden/extra.py", EXTRA + "\n\ndef label(n: int) -> str:\n    return n\n"),
        ],
        "file_unchecked",
        "types",
        ".hidden/extra.py",
    ),
}
HONEST = [
    write("calc.py", CALC + "\n\ndef sub(a: int, b: int) -> int:\n    return a - b\n"),
    write(
        "test_sub.py",
        "from calc import sub\n\n\ndef test_sub() -> None:\n    assert sub(2, 2) == 0\n",
    ),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> TinyProject:
    project = TinyProject(tmp_path_factory.mktemp("basehead"))
    project.repo.mkdir()
    (project.repo / "calc.py").write_text(CALC, encoding="utf-8")
    (project.repo / "extra.py").write_text(EXTRA, encoding="utf-8")
    (project.repo / "test_calc.py").write_text(TESTS, encoding="utf-8")
    (project.repo / ".gitignore").write_text(".*_cache/\n__pycache__/\n", encoding="utf-8")
    init_repo(project.repo)
    budget = {"max_attempts": 1, "max_steps": 20, "wall_clock_s": 300}
    project.write_policy(GATES, budget=budget, concurrency=2)
    for spec_id, (steps, *_) in TRICKS.items():
        project.add_spec(spec_id, attempts=[[*steps, FINISH]])
    project.add_spec(
        "renamed-allowed",
        attempts=[[write("test_calc.py", RENAMED), FINISH]],
        tests_may_change=["test_calc.py::test_other"],
    )
    project.add_spec("honest", attempts=[[*HONEST, FINISH]])
    project.run()
    return project


@pytest.mark.parametrize("spec_id", sorted(TRICKS))
def test_checking_less_than_the_base_is_not_verified(project: TinyProject, spec_id: str) -> None:
    _, kind, gate, lost = TRICKS[spec_id]
    task = project.task(spec_id)
    assert task["outcome"] == "escalated", task
    problems = escalation_problems(project.root / task["escalation"])
    found = [p for p in problems if p.get("code") == kind and p.get("gate") == gate]
    assert found, problems
    assert lost in found[0]["detail"]


def test_a_test_the_spec_lets_change_is_not_a_finding(project: TinyProject) -> None:
    task = project.task("renamed-allowed")
    assert task["outcome"] == "verified", task


def test_an_honest_change_verifies_with_base_and_head_side_by_side(project: TinyProject) -> None:
    task = project.task("honest")
    assert task["outcome"] == "verified", task
    record = (project.root / task["pr"]).read_text(encoding="utf-8")
    assert "## Base against head" in record
    # tests passed/failed/skipped/total: 2 on the base, 3 on the head (test_sub added)
    assert "| tests | tests (passed/failed/skipped/total) | 2/0/0/2 | 3/0/0/3 | none |" in record
    assert "| lint | files checked | 3 | 4 | none |" in record
    assert "| types | files checked | 3 | 4 | none |" in record


# --- the rules, on measurements ----------------------------------------------------------------

TEST_GATE = GateConfig(name="tests", kind="test", command="pytest -q")


def against(base: Observed, **overrides: Any) -> AgainstBase:
    options: dict[str, Any] = {
        "on_base": lambda gate: base,
        "may_change": [],
        "guard": GuardConfig(),
        "present": lambda path: True,
        "moved": dict,
    }
    return AgainstBase(**(options | overrides))


def passed_record() -> GateRecord:
    return GateRecord(
        name="tests",
        kind="test",
        command="pytest -q",
        attempt=1,
        phase="attempt",
        exit_code=0,
        duration_s=1.0,
        passed=True,
    )


def test_a_test_failing_on_the_base_may_be_removed() -> None:
    """Decided: only what passed on the base is protected. A red test the change removes is
    not this comparison's finding (the fake-green guard still reports a removed test)."""
    base = Observed(tests={"t.py::test_red": "failed", "t.py::test_green": "passed"})
    head = Observed(tests={"t.py::test_green": "passed"})
    record, problems = against(base).review(TEST_GATE, passed_record(), head, "i")
    assert problems == []
    assert record.passed and record.base is not None
    assert record.base.base == {"passed": 1, "failed": 1, "skipped": 0, "total": 2}


def test_the_message_names_ten_and_the_record_keeps_all() -> None:
    lost = [f"t.py::test_{n:02}" for n in range(12)]
    base = Observed(tests=dict.fromkeys(lost, "passed") | {"t.py::test_kept": "passed"})
    head = Observed(tests={"t.py::test_kept": "passed"})
    record, [problem] = against(base).review(TEST_GATE, passed_record(), head, "i")
    assert not record.passed and record.base is not None
    assert record.base.findings == {"test_missing": lost}
    assert "t.py::test_09 and 2 more" in problem.detail
    assert "t.py::test_10" not in problem.detail


def test_guard_flag_and_allow_apply() -> None:
    base = Observed(tests={"t.py::test_a": "passed"})
    head = Observed(tests={"t.py::test_a": "skipped"})
    flag = against(base, guard=GuardConfig(action="flag"))
    record, problems = flag.review(TEST_GATE, passed_record(), head, "i")
    assert problems == [] and record.passed
    assert record.base is not None and record.base.findings == {
        "test_newly_skipped": ["t.py::test_a"]
    }
    allow = against(base, guard=GuardConfig(allow=["test_newly_skipped"]))
    record, problems = allow.review(TEST_GATE, passed_record(), head, "i")
    assert problems == [] and record.passed


class NoCommands:
    """A sandbox that must not be asked to run anything."""

    path = Path("/nonexistent")
    scratch = Path("/nonexistent")

    def run(self, command: str, **_: Any) -> Any:
        raise AssertionError(f"ran {command!r}")


@pytest.mark.parametrize(
    ("kind", "command"),
    [
        ("lint", "ruff check . && ruff format --check ."),  # a pipeline: no option can be added
        ("lint", "flake8 ."),
        ("type", "pyright"),
        ("test", "make test"),  # wrote no JUnit report
    ],
)
def test_an_unknown_tool_is_not_compared_and_says_so(
    tmp_path: Path, kind: str, command: str
) -> None:
    gate = GateConfig(name="g", kind=kind, command=command)
    head = observe(gate, NoCommands(), None, tmp_path / "g.files.log", 10)  # type: ignore[arg-type]
    record, problems = against(Observed(tests={"t.py::test_a": "passed"})).review(
        gate, passed_record(), head, "i"
    )
    assert problems == [] and record.passed and record.base is not None
    assert record.base.compared == "none"
    assert (record.base.note or "").startswith("not compared: ")


def test_tests_may_change_must_be_relative_globs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n", encoding="utf-8")
    init_repo(repo)
    spec = tmp_path / "s.md"
    spec.write_text(
        "---\nid: s\ntitle: t\ntier: 1\nrepo: repo\n"
        "tests_may_change: ['/abs/test_x.py']\n---\nDo.\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=r"tests_may_change.*'/abs/test_x\.py'"):
        load_spec(spec)
