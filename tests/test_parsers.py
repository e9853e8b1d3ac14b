"""Gate output parsers on real ruff, mypy and pytest output, produced here on a seeded project.

Each tool runs once per format in a module-scoped fixture (a few seconds in all); the tests
then feed the outputs to parse_gate_output the way the gate runner will.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import harness.parsers.ruff
from harness.config.policy import GateConfig, GateKind
from harness.parsers import MAX_PROBLEMS, count_results, parse_gate_output, source_context
from harness.parsers.builder import ProblemBuilder
from harness.parsers.tracebacks import repo_frames
from harness.problems import Problem, problem_type
from harness.sandbox.process import run_process

BIN = Path(sys.executable).parent

CORE = """\
import os


def total(items: list[int]) -> int:
    return sum(items)


def label(count: int) -> str:
    return count


def explode(value: int) -> int:
    if value > 1:
        raise ValueError(f"value too large: {value}")
    return value


LONG = "{long}"
""".replace("{long}", "x" * 110)

EXTRA = "import missing_helper_module  # noqa: F401\n"

TESTS = """\
import pytest
import yaml

from app.core import explode, total


def test_total():
    assert total([1, 2]) == 4, "total is wrong"


@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")


def test_uses_broken(broken):
    assert broken


def test_helper_raises():
    assert explode(5) == 5


class TestGroup:
    def test_in_class(self):
        assert [1, 2] == [1, 3]


def test_library_raises():
    yaml.safe_load("a: [")


def test_passes():
    assert total([]) == 0
"""

BROKEN_IMPORT = (
    "import missing_test_dependency  # noqa: F401\n\n\ndef test_never_runs():\n    pass\n"
)

PYPROJECT = """\
[tool.ruff]
line-length = 100
[tool.ruff.lint]
select = ["E", "F"]
[tool.pytest.ini_options]
pythonpath = ["src"]
testpaths = ["tests"]
"""


def line_of(source: str, needle: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if needle in line)


@dataclass
class Run:
    command: str
    output: str
    exit_code: int
    junit_xml: Path | None = None


@dataclass
class Project:
    root: Path
    runs: dict[str, Run] = field(default_factory=dict)

    def parse(
        self,
        name: str,
        kind: GateKind,
        *,
        junit: bool = True,
        output: str | None = None,
    ) -> list[Problem]:
        run = self.runs[name]
        return parse_gate_output(
            GateConfig(name=name, kind=kind, command=run.command),
            run.output if output is None else output,
            root=self.root,
            junit_xml=run.junit_xml if junit else None,
            exit_code=run.exit_code,
            log=f"runs/r/logs/{name}.log",
            instance=f"runs/r/spec/attempt-1/{name}",
        )


def _run(
    project: Project, name: str, tool: list[str], args: list[str], env: dict[str, str]
) -> None:
    done = subprocess.run(
        [*tool, *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    junit = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("--junitxml=")), None)
    command = " ".join([Path(tool[-1]).name, *args])
    project.runs[name] = Run(command, done.stdout + done.stderr, done.returncode, junit)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("seeded")
    (root / "src" / "app").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "src" / "app" / "__init__.py").write_text("")
    (root / "src" / "app" / "core.py").write_text(CORE)
    (root / "src" / "app" / "extra.py").write_text(EXTRA)
    (root / "src" / "app" / "ugly.py").write_text("x=1\n")
    (root / "tests" / "test_core.py").write_text(TESTS)
    (root / "collect").mkdir()
    (root / "collect" / "test_broken_import.py").write_text(BROKEN_IMPORT)
    (root / "pyproject.toml").write_text(PYPROJECT)
    scratch = tmp_path_factory.mktemp("scratch")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MYPY"))}
    env |= {"MYPY_CACHE_DIR": str(scratch / "mypy"), "PYTHONDONTWRITEBYTECODE": "1"}
    env |= {"NO_COLOR": "1", "PYTEST_ADDOPTS": "-p no:cacheprovider -p no:langsmith_plugin"}
    project = Project(root)
    ruff = [str(BIN / "ruff")]
    mypy, pytest_ = [sys.executable, "-m", "mypy"], [sys.executable, "-m", "pytest"]
    check = ["check", "--no-cache"]
    xunit2, xunit1 = f"--junitxml={scratch / 'x2.xml'}", f"--junitxml={scratch / 'x1.xml'}"
    # Two chains at once: mypy's runs share a warm cache, so they run one after the other.
    chains = [
        [
            ("mypy-json", mypy, ["-O", "json", "src"]),
            ("mypy-text", mypy, ["src"]),
            ("mypy-pretty", mypy, ["--show-column-numbers", "--pretty", "src"]),
        ],
        [
            ("ruff-json", ruff, [*check, "--output-format=json", "."]),
            ("ruff-full", ruff, [*check, "."]),
            ("ruff-concise", ruff, [*check, "--output-format=concise", "."]),
            ("ruff-format", ruff, ["format", "--check", "--no-cache", "."]),
            ("pytest", pytest_, [xunit2]),
            ("pytest-x1", pytest_, [xunit1, "-o", "junit_family=xunit1"]),
            ("pytest-collect", pytest_, [f"--junitxml={scratch / 'c.xml'}", "collect"]),
        ],
    ]

    def run_chain(chain: list[tuple[str, list[str], list[str]]]) -> None:
        for name, tool, args in chain:
            _run(project, name, tool, args, env)

    with ThreadPoolExecutor(max_workers=len(chains)) as pool:
        list(pool.map(run_chain, chains))
    return project


def _by(problems: list[Problem]) -> dict[tuple[str, int | None, str | None], Problem]:
    return {
        (p.location.path if p.location else "", p.location.line if p.location else None, p.code): p
        for p in problems
    }


def marked(context: str | None) -> tuple[int, str]:
    """The `>`-marked row of a source context: its number and its code."""
    assert context is not None
    row = next(row for row in context.splitlines() if row.startswith(">"))
    number, _, code = row[1:].partition(" | ")
    return int(number), code


def _check_common(problems: list[Problem], name: str, slug: str) -> None:
    assert problems
    for problem in problems:
        assert problem.type == problem_type(slug)
        assert problem.gate == name and problem.command and problem.exit_code not in (0, None)
        assert problem.log == f"runs/r/logs/{name}.log"
        assert problem.instance == f"runs/r/spec/attempt-1/{name}"
        assert problem.category == "agent_fixable"
        if problem.location is not None:
            assert not Path(problem.location.path).is_absolute()


@pytest.fixture(autouse=True)
def no_parser_crashes(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A crashing parser falls back silently for the agent; the tests must still see it."""
    yield
    crashes = [r for r in caplog.records if r.name.startswith("harness.parsers")]
    assert not crashes, crashes[0].exc_text


# --- ruff -------------------------------------------------------------------------------------

F401 = ("src/app/core.py", 1, "F401")
E501 = ("src/app/core.py", line_of(CORE, "LONG ="), "E501")


@pytest.mark.parametrize("name", ["ruff-json", "ruff-full", "ruff-concise"])
def test_ruff_findings(project: Project, name: str) -> None:
    problems = project.parse(name, "lint")
    _check_common(problems, name, "lint-violation")
    found = _by(problems)
    assert set(found) == {F401, E501}, project.runs[name].output
    unused = found[F401]
    assert unused.title == "Lint violation" and "`os` imported but unused" in unused.detail
    assert unused.location is not None and unused.location.column == 8
    assert marked(unused.context) == (1, "import os")
    long_line = found[E501]
    assert long_line.location is not None and long_line.location.column == 101
    assert marked(long_line.context)[0] == E501[1]
    assert marked(long_line.context)[1].startswith("LONG = ")


def test_ruff_format_check(project: Project) -> None:
    problems = project.parse("ruff-format", "lint")
    _check_common(problems, "ruff-format", "lint-violation")
    assert ("src/app/ugly.py", 1, "unformatted") in _by(problems)


def test_ruff_json_help_and_absolute_paths(project: Project) -> None:
    output = project.runs["ruff-json"].output
    assert str(project.root) in output  # ruff writes absolute paths; problems must not
    unused = _by(project.parse("ruff-json", "lint"))[F401]
    assert "help: Remove unused import" in unused.detail


# --- mypy -------------------------------------------------------------------------------------

RETURN = ("src/app/core.py", line_of(CORE, "return count"), "return-value")
MISSING = ("src/app/extra.py", 1, "import-not-found")


@pytest.mark.parametrize("name", ["mypy-json", "mypy-text", "mypy-pretty"])
def test_mypy_findings(project: Project, name: str) -> None:
    problems = project.parse(name, "type")
    _check_common(problems, name, "type-error")
    found = _by(problems)
    assert set(found) == {RETURN, MISSING}, project.runs[name].output
    wrong = found[RETURN]
    assert wrong.detail.startswith('Incompatible return value type (got "int", expected "str")')
    assert marked(wrong.context) == (RETURN[1], "    return count")
    # The note mypy prints under the error belongs to it, not to a problem of its own.
    assert "missing-imports" in found[MISSING].detail


def test_mypy_columns_agree(project: Project) -> None:
    # -O json counts columns from 0; the text output and problems count from 1, like ruff.
    json_col = _by(project.parse("mypy-json", "type"))[RETURN].location
    text_col = _by(project.parse("mypy-pretty", "type"))[RETURN].location
    assert json_col and text_col and json_col.column == text_col.column == 12
    plain = _by(project.parse("mypy-text", "type"))[RETURN].location
    assert plain is not None and plain.column is None


# --- pytest -----------------------------------------------------------------------------------

T = "tests/test_core.py"
FAILING = {
    f"{T}::test_total": ("test-failure", "AssertionError", T, line_of(TESTS, "total is wrong")),
    f"{T}::test_uses_broken": ("test-error", "RuntimeError", T, line_of(TESTS, "fixture explo")),
    f"{T}::test_helper_raises": (
        "test-failure",
        "ValueError",
        "src/app/core.py",
        line_of(CORE, "raise ValueError"),
    ),
    f"{T}::TestGroup::test_in_class": (
        "test-failure",
        "AssertionError",
        T,
        line_of(TESTS, "[1, 2] =="),
    ),
    f"{T}::test_library_raises": ("test-failure", "ParserError", T, line_of(TESTS, "yaml.safe")),
}


@pytest.mark.parametrize(
    ("name", "junit"), [("pytest", True), ("pytest-x1", True), ("pytest", False)]
)
def test_pytest_findings(project: Project, name: str, junit: bool) -> None:
    run = project.runs[name]
    assert run.junit_xml is not None and run.junit_xml.is_file()
    problems = project.parse(name, "test", junit=junit)
    assert len(problems) == len(FAILING), [p.test_id for p in problems]
    for problem in problems:
        assert problem.test_id in FAILING, problem.test_id
        slug, code, path, line = FAILING[problem.test_id]
        _check_common([problem], name, slug)
        assert problem.code == code
        assert problem.location is not None
        assert (problem.location.path, problem.location.line) == (path, line)
        assert "site-packages" not in problem.detail
        assert marked(problem.context)[0] == line

    found = {p.test_id: p for p in problems}
    assert "total is wrong" in found[f"{T}::test_total"].detail
    assert "assert 3 == 4" in found[f"{T}::test_total"].detail
    assert "fixture exploded" in found[f"{T}::test_uses_broken"].detail
    helper = found[f"{T}::test_helper_raises"].detail
    assert "value too large: 5" in helper
    # Both in-repo frames, the test's line and the helper's raise, innermost last.
    test_frame = f"{T}:{line_of(TESTS, 'explode(5)')} in test_helper_raises"
    raise_frame = f"src/app/core.py:{line_of(CORE, 'raise ValueError')} in explode"
    assert helper.index(test_frame) < helper.index(raise_frame)
    assert 'raise ValueError(f"value too large: {value}")' in helper
    library = found[f"{T}::test_library_raises"].detail
    assert "yaml" in library and "while parsing" in library


@pytest.mark.parametrize("junit", [True, False])
def test_pytest_collection_error(project: Project, junit: bool) -> None:
    (problem,) = project.parse("pytest-collect", "test", junit=junit)
    _check_common([problem], "pytest-collect", "test-error")
    assert problem.test_id == "collect/test_broken_import.py"
    assert problem.code == "ModuleNotFoundError"
    assert "No module named 'missing_test_dependency'" in problem.detail
    assert str(problem.location) == "collect/test_broken_import.py:1"
    assert "importlib" not in problem.detail  # a stdlib frame, outside the repository


def test_pytest_text_without_summary(project: Project) -> None:
    # With -rN pytest prints no short summary; the FAILURES/ERRORS sections still name tests.
    output = "\n".join(
        line
        for line in project.runs["pytest"].output.splitlines()
        if not line.startswith(("FAILED ", "ERROR "))
    )
    problems = project.parse("pytest", "test", junit=False, output=output)
    assert {p.test_id for p in problems} == set(FAILING)


def test_pytest_malformed_report_falls_back_to_text(project: Project, tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text('<testsuites><testsuite><testcase classname="x" name="y"><fail')
    run = project.runs["pytest"]
    problems = parse_gate_output(
        GateConfig(name="t", kind="test", command="pytest"),
        run.output,
        root=project.root,
        junit_xml=broken,
        exit_code=1,
        log=None,
        instance="i",
    )
    assert {p.test_id for p in problems} == set(FAILING)


def test_site_packages_frames_inside_root_are_skipped(tmp_path: Path) -> None:
    # A project's own .venv lies inside root; its frames are not the project's code.
    lib = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "lib.py"
    lib.parent.mkdir(parents=True)
    lib.write_text("x\n" * 20)
    (tmp_path / "test_a.py").write_text("x\n" * 20)
    text = (
        "test_a.py:3: in test_a\n    lib.f()\n.venv/lib/python3.11/site-packages/lib.py:9: KeyError"
    )
    builder = ProblemBuilder(
        GateConfig(name="t", kind="test", command="pytest"), tmp_path, 1, None, "i"
    )
    assert [(f.path, f.line, f.function) for f in repo_frames(text, builder)] == [
        ("test_a.py", 3, "test_a")
    ]


def test_a_script_that_crashes_is_one_problem_at_its_innermost_repo_frame(tmp_path: Path) -> None:
    # A real crash of a real script, in a custom gate: Python's own (native) traceback.
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "table.py").write_text("def load():\n    return {}['rate']\n")
    (tmp_path / "check.py").write_text("import json\nfrom tool.table import load\nload()\n")
    done = subprocess.run(
        [sys.executable, "check.py"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    [problem] = _parse(tmp_path, "starting checks\n" + done.stderr, exit_code=done.returncode)
    assert problem.title == "Uncaught exception" and problem.category == "agent_fixable"
    assert problem.code == "KeyError" and "'rate'" in problem.detail
    assert problem.location is not None
    assert (problem.location.path, problem.location.line) == ("tool/table.py", 2)
    assert "check.py:3" in problem.detail  # the caller's frame is listed too


def test_a_traceback_entirely_outside_the_repo_is_not_located(tmp_path: Path) -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/json/decoder.py", line 355, in raw_decode\n'
        "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n"
    )
    [problem] = _parse(tmp_path, text)
    assert problem.title == "Gate failed" and problem.location is None


# --- robustness -------------------------------------------------------------------------------


def _parse(
    root: Path,
    output: str,
    *,
    kind: GateKind = "custom",
    command: str = "make check",
    exit_code: int | None = 1,
) -> list[Problem]:
    return parse_gate_output(
        GateConfig(name="g", kind=kind, command=command),
        output,
        root=root,
        junit_xml=None,
        exit_code=exit_code,
        log="runs/r/g.log",
        instance="runs/r/s/attempt-1/g",
    )


def test_malformed_json_falls_back(project: Project) -> None:
    problems = _parse(project.root, '[\n  {\n    "code": "F401",\n    "filename": ', kind="lint")
    assert [p.type for p in problems] == [problem_type("gate-failed")]
    assert '"filename"' in problems[0].detail
    # One good object after a broken one is still found.
    good = project.runs["ruff-json"].output.split("\n  },\n")[0].removeprefix("[") + "\n  }"
    problems = _parse(project.root, '[\n  {\n    "code": \n' + good, kind="lint")
    assert [(p.code, p.location.line if p.location else None) for p in problems] == [("F401", 1)]


def test_non_utf8_output_and_source(project: Project, tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_bytes(b"a = 1\nb = '\xff\xfe'\nc = 3\n")
    raw = b"\xff\xfe\x00garbage\nbad.py:2:1: E999 broken \xe9 bytes\n\xc3\x28\n"
    problems = _parse(tmp_path, raw.decode("utf-8", errors="replace"))
    assert [(p.code, p.location.path if p.location else None) for p in problems] == [
        ("E999", "bad.py")
    ]
    assert marked(problems[0].context) == (2, "b = '\ufffd\ufffd'")


HANG_S = 120
"""Parsing megabytes must end: a guard against a hang, not a speed goal. A regex that
backtracks on such output takes hours, a linear parse well under a second, and a loaded CI box
lands anywhere between (5 s limits failed at load 10)."""


def test_huge_output_cut_like_the_sandbox(project: Project, tmp_path: Path) -> None:
    # ~6 MB of real ruff JSON objects, capped by the sandbox's own reader: head + marker + tail.
    first = json.loads(project.runs["ruff-json"].output)[0]
    objects = [first | {"location": first["location"] | {"row": n}} for n in range(1, 12_001)]
    big = tmp_path / "big.json"
    big.write_text(json.dumps(objects, indent=2))
    assert big.stat().st_size > 5_000_000
    done = run_process(["cat", str(big)], cwd=tmp_path, env={}, timeout_s=30)
    assert done.output_cut_bytes > 0
    started = time.monotonic()
    problems = _parse(project.root, done.output, kind="lint", command="ruff check")
    assert time.monotonic() - started < HANG_S
    rows = {p.location.line for p in problems if p.location}
    assert 1 in rows and 12_000 in rows  # from the head and from the tail
    assert all(p.code == "F401" for p in problems)

    # Uncapped, the work is still bounded: at most MAX_PROBLEMS problems.
    started = time.monotonic()
    problems = _parse(project.root, big.read_text(), kind="lint", command="ruff check")
    assert len(problems) == MAX_PROBLEMS and time.monotonic() - started < HANG_S


def test_huge_text_without_findings_is_bounded(project: Project) -> None:
    noise = "2024-01-01 12:30:45: progress http://example.com:80: step\n" * 100_000
    started = time.monotonic()
    problems = _parse(project.root, noise)
    assert time.monotonic() - started < HANG_S
    assert [p.type for p in problems] == [problem_type("gate-failed")]
    assert problems[0].detail.count("\n") < 60 and len(problems[0].detail) <= 4000


@pytest.mark.parametrize(
    "output",
    [
        "x" * 5_000_000,
        "FAILED a::" + "b" * 2_000_000,
        "___ " + "_ " * 1_000_000 + "___",
        "src/a.py:" * 500_000,
        "{" * 1_000_000,
        "{\n" * 1_000_000,
        '[\n  {\n    "code": "F401", "filename": "' + "a" * 3_000_000,
    ],
    ids=["one-line", "summary", "underscores", "colons", "braces", "brace-lines", "json"],
)
def test_pathological_output_is_bounded(project: Project, output: str) -> None:
    started = time.monotonic()
    problems = _parse(project.root, output, kind="test", command="pytest && mypy . && ruff .")
    assert time.monotonic() - started < HANG_S
    assert [p.type for p in problems] == [problem_type("gate-failed")]
    assert len(problems[0].detail) <= 4000


def test_empty_output(project: Project) -> None:
    problems = _parse(project.root, "", exit_code=2)
    assert len(problems) == 1
    problem = problems[0]
    assert problem.type == problem_type("gate-failed") and problem.detail == "(no output)"
    assert (problem.gate, problem.exit_code, problem.log) == ("g", 2, "runs/r/g.log")
    assert problem.instance == "runs/r/s/attempt-1/g" and problem.category == "agent_fixable"
    assert _parse(project.root, "", exit_code=0) == []


def test_custom_gate_generic_locations(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("a = 1\nb = 2\nc = bad()\nd = 4\n")
    output = (
        "checking…\n12:30:45: started\nsee http://example.com:8080: docs\n"
        "src/missing.py:1: not a file here\nsrc/app.py:3: something bad\n"
        f"{tmp_path}/src/app.py:4:2: absolute path\n"
    )
    problems = _parse(tmp_path, output)
    assert [(str(p.location), p.detail) for p in problems if p.location] == [
        ("src/app.py:3", "something bad"),
        ("src/app.py:4:2", "absolute path"),
    ]
    assert problems[0].type == problem_type("gate-failed")
    assert marked(problems[0].context) == (3, "c = bad()")


def test_gate_failed_tail(tmp_path: Path) -> None:
    output = "\n".join(f"line {n}" for n in range(1, 201))
    (problem,) = _parse(tmp_path, output)
    assert problem.detail.splitlines()[0] == "line 141" and problem.detail.endswith("line 200")


def test_a_crashing_parser_does_not_hide_the_failure(
    project: Project, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_: object) -> list[Problem]:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(harness.parsers.ruff, "parse_text", boom)
    # The generic parser still finds the located lines; other parsers are unaffected.
    problems = project.parse("ruff-concise", "lint")
    assert {p.type for p in problems} == {problem_type("gate-failed")}
    assert {str(p.location) for p in problems} == {
        "src/app/core.py:1:8",
        f"src/app/core.py:{E501[1]}:101",
    }
    assert "F401" in problems[0].detail
    assert {p.code for p in project.parse("mypy-text", "type")} == {"return-value", MISSING[2]}
    assert "parser bug" in caplog.text  # logged with its traceback, for us
    caplog.clear()


def test_same_shape_from_other_linters(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n" * 5)
    output = (
        "a.py:1:7: invalid-syntax: Expected a parameter or the end of the parameter list\n"
        "a.py:2:1: E302 expected 2 blank lines, found 1\n"  # flake8
        "a.py:3:1: C0114: Missing module docstring (missing-module-docstring)\n"  # pylint
        "a.py:4:1: note that this is prose, not a rule\n"
    )
    problems = _parse(tmp_path, output, kind="lint", command="flake8 && pylint a.py")
    assert [(p.type, p.code, str(p.location)) for p in problems] == [
        (problem_type("lint-violation"), "invalid-syntax", "a.py:1:7"),
        (problem_type("lint-violation"), "E302", "a.py:2:1"),
        (problem_type("lint-violation"), "C0114", "a.py:3:1"),
    ]


def test_mypy_text_notes_and_gcc_lookalikes(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n" * 30)
    output = (
        "a.py:3: error: Argument 1 has incompatible type  [arg-type]\n"
        'a.py:3: note: Following member(s) of "C" have conflicts:\n'
        "a.py:3: note:     Expected:\n"
        'a.py:10: note: Revealed type is "int"\n'
        'a.py: error: Duplicate module named "a"\n'
        "Found 2 errors in 1 file (checked 1 source file)\n"
    )
    problems = _parse(tmp_path, output, kind="type", command="mypy .")
    assert [(str(p.location), p.code) for p in problems] == [("a.py:3", "arg-type"), ("a.py", None)]
    assert problems[0].detail.splitlines()[1:] == [
        'Following member(s) of "C" have conflicts:',
        "    Expected:",
    ]
    # The same shape from a compiler in a custom gate is not a mypy type error.
    gcc = _parse(tmp_path, "a.py:3:5: error: expected ';'\n", command="gcc a.c")
    assert [(p.type, str(p.location)) for p in gcc] == [(problem_type("gate-failed"), "a.py:3:5")]


# --- source context ---------------------------------------------------------------------------


def test_source_context(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "m.py").write_text("".join(f"line{n}\n" for n in range(1, 13)))
    (tmp_path / "outside.py").write_text("secret\n")
    (root / "link.py").symlink_to(tmp_path / "outside.py")
    assert source_context(root, "m.py", 10) == "\n".join(
        [
            "   7 | line7",
            "   8 | line8",
            "   9 | line9",
            "> 10 | line10",
            "  11 | line11",
            "  12 | line12",
        ]
    )
    assert source_context(root, "m.py", 1, radius=1) == "> 1 | line1\n  2 | line2"
    for refused in ["../outside.py", str(tmp_path / "outside.py"), "link.py", "nope.py", "."]:
        assert source_context(root, refused, 1) is None, refused
    assert source_context(root, "m.py", 13) is None
    (root / "min.js").write_bytes(b"x" * 1_000_000 + b"\nsecond\n")
    context = source_context(root, "min.js", 2, radius=1)
    assert context and context.endswith("> 2 | second") and len(context) < 400


def test_counts_from_each_tools_closing_line(project: Project) -> None:
    counts = {name: count_results(run.output) for name, run in project.runs.items()}
    # ruff finds F401 (import os) and E501 (LONG); extra.py's import is noqa'd.
    assert counts["ruff-full"] == counts["ruff-concise"] == {"errors": 2}
    # mypy: label's return value and the missing module; its line, not ruff's shape of it.
    assert counts["mypy-text"] == counts["mypy-pretty"] == {"errors": 2, "files": 2}
    assert counts["pytest"] == {"failed": 4, "passed": 1, "errors": 1}
    assert counts["pytest-collect"] == {"errors": 1}
    # Machine formats print no closing count line.
    assert counts["ruff-json"] == counts["mypy-json"] == {}
    clean = "Success: no issues found in 3 source files\n"
    assert count_results(clean) == {"errors": 0, "files": 3}
