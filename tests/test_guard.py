"""The fake-green guard on real git repositories: one commit per case on top of a small base."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.errors import InfrastructureError
from harness.gates.fake_green import find_fake_green, is_test_path
from harness.problems import Problem

IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@t")


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd`; a failing command fails the test (helpers.git, minus its imports)."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout


CART = '''"""A tiny cart."""


def total(prices: list[float]) -> float:
    return sum(prices)


def count(prices: list[float]) -> int:
    return len(prices)
'''

TESTS = """import pytest

from shop.cart import count, total


def test_total():
    assert total([1.0, 2.0]) == 3.0
    assert total([]) == 0


def test_count():
    assert count([1.0]) == 1


class TestEdges:
    def test_negative(self):
        assert total([-1.0]) == -1.0

    def test_approx(self):
        assert total([0.1, 0.2]) == pytest.approx(0.3)
"""

PYPROJECT = """[project]
name = "shop"
version = "0.1.0"

[tool.ruff]
line-length = 100

[tool.ruff.lint]
select = ["E", "F", "I"]

[tool.mypy]
strict = true

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-q --cov=shop --cov-fail-under=90"

[tool.coverage.report]
fail_under = 90
"""

CI = """name: ci
on: [push]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - run: pytest --cov-fail-under=90
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    files = {
        "shop/__init__.py": "",
        "shop/cart.py": CART,
        "tests/__init__.py": "",
        "tests/conftest.py": "import pytest\n",
        "tests/test_cart.py": TESTS,
        "pyproject.toml": PYPROJECT,
        "README.md": "# shop\n",
        ".github/workflows/ci.yml": CI,
        "logo.bin": "\x00\x01\x02binary\x00",
    }
    for relpath, text in files.items():
        write(root, relpath, text)
    git(root, "init", "-q", "-b", "main")
    commit(root, "base")
    git(root, "tag", "base")
    return root


def write(root: Path, relpath: str, text: str) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def edit(root: Path, relpath: str, old: str, new: str) -> None:
    path = root / relpath
    text = path.read_text()
    assert old in text, f"{old!r} not in {relpath}"
    path.write_text(text.replace(old, new, 1))


def commit(root: Path, message: str = "change") -> None:
    git(root, "add", "-A")
    git(root, *IDENTITY, "commit", "-q", "--allow-empty", "-m", message)


def kinds(problems: list[Problem]) -> list[str | None]:
    return [p.code for p in problems]


def guard(root: Path) -> list[Problem]:
    return find_fake_green(root, "base")


# --- honest changes ---------------------------------------------------------------------------


def test_honest_change_has_no_findings(repo: Path) -> None:
    edit(
        repo,
        "shop/cart.py",
        "    return len(prices)\n",
        "    return len(prices)\n\n\n"
        "def mean(prices: list[float]) -> float:\n    return total(prices) / len(prices)\n",
    )
    edit(repo, "tests/test_cart.py", "import count, total", "import count, mean, total")
    with (repo / "tests/test_cart.py").open("a") as f:
        f.write("\n\ndef test_mean():\n    assert mean([1.0, 3.0]) == 2.0\n")
    write(repo, "tests/test_more.py", "def test_more():\n    assert True\n")
    commit(repo)
    assert guard(repo) == []


def test_base_equal_to_head_has_no_findings(repo: Path) -> None:
    assert find_fake_green(repo, "base", "base") == []
    assert find_fake_green(repo, "HEAD") == []


def test_non_python_change_is_not_reported(repo: Path) -> None:
    write(repo, "README.md", "# shop\n\nNo tests were harmed. # noqa pytest.mark.skip\n")
    write(repo, "docs/notes.txt", "fail_under = 10\n")
    commit(repo)
    assert guard(repo) == []


def test_rename_of_test_file_to_another_test_path_is_fine(repo: Path) -> None:
    git(repo, "mv", "tests/test_cart.py", "tests/test_basket.py")
    commit(repo)
    assert guard(repo) == []


def test_renamed_test_function_with_same_count_is_not_reported(repo: Path) -> None:
    edit(repo, "tests/test_cart.py", "def test_total():", "def test_total_of_prices():")
    edit(repo, "tests/test_cart.py", "class TestEdges:", "class TestEdgeCases:")
    commit(repo)
    assert guard(repo) == []


def test_moved_suppression_and_skip_are_not_added(repo: Path) -> None:
    edit(repo, "shop/cart.py", "    return sum(prices)", "    return sum(prices)  # type: ignore")
    edit(
        repo, "tests/test_cart.py", "\ndef test_count():", "\n@pytest.mark.skip\ndef test_count():"
    )
    commit(repo, "weaken")
    git(repo, "tag", "weakened")
    edit(
        repo,
        "shop/cart.py",
        "    return sum(prices)  # type: ignore",
        "    return sum(sorted(prices))  # type: ignore",
    )
    edit(repo, "tests/test_cart.py", "@pytest.mark.skip\n", "@pytest.mark.skip(reason='slow')\n")
    commit(repo)
    assert find_fake_green(repo, "weakened") == []


# --- one finding per kind ---------------------------------------------------------------------


def test_test_file_removed(repo: Path) -> None:
    git(repo, "rm", "-q", "tests/test_cart.py", "tests/conftest.py")
    commit(repo)
    problems = guard(repo)
    assert kinds(problems) == ["test_file_removed", "test_file_removed"]
    assert {p.location.path for p in problems if p.location} == {
        "tests/conftest.py",
        "tests/test_cart.py",
    }


def test_rename_of_test_file_to_non_test_name_is_removal(repo: Path) -> None:
    git(repo, "mv", "tests/test_cart.py", "old_tests.txt")
    commit(repo)
    [problem] = guard(repo)
    assert problem.code == "test_file_removed"
    assert "renamed to old_tests.txt" in problem.detail


def test_rename_to_a_name_the_runner_does_not_collect_is_removal(repo: Path) -> None:
    git(repo, "mv", "tests/test_cart.py", "tests/cart_checks.py")
    commit(repo)
    assert kinds(guard(repo)) == ["test_file_removed"]


def test_test_function_removed(repo: Path) -> None:
    edit(repo, "tests/test_cart.py", "def test_count():\n    assert count([1.0]) == 1\n\n\n", "")
    commit(repo)
    [problem] = guard(repo)  # its assertion is not also reported as assertion_removed
    assert problem.code == "test_function_removed"
    assert problem.test_id == "tests/test_cart.py::test_count"
    assert problem.location is not None
    assert (problem.location.path, problem.location.line) == ("tests/test_cart.py", 11)
    assert "test_count was removed from tests/test_cart.py" in problem.detail


def test_removed_test_class_is_reported_once(repo: Path) -> None:
    edit(repo, "tests/test_cart.py", "class TestEdges:", "class Edges:")
    commit(repo)
    problems = guard(repo)
    assert kinds(problems) == ["test_function_removed"]
    assert problems[0].test_id == "tests/test_cart.py::TestEdges"


def test_skip_added(repo: Path) -> None:
    edit(
        repo, "tests/test_cart.py", "\ndef test_count():", "\n@pytest.mark.skip\ndef test_count():"
    )
    edit(
        repo,
        "tests/test_cart.py",
        "    def test_negative(self):\n",
        "    def test_negative(self):\n        pytest.skip('later')\n",
    )
    commit(repo)
    problems = guard(repo)
    assert kinds(problems) == ["skip_added", "skip_added"]
    assert [p.location.line for p in problems if p.location] == [11, 18]


def test_unittest_skips_are_skips(repo: Path) -> None:
    write(
        repo,
        "tests/test_unit.py",
        "import unittest\n\n\nclass CartTests(unittest.TestCase):\n"
        "    def test_one(self):\n        self.assertEqual(1, 1)\n",
    )
    commit(repo, "unit")
    git(repo, "tag", "unit")
    edit(
        repo,
        "tests/test_unit.py",
        "    def test_one(self):\n",
        "    @unittest.skip('flaky')\n    def test_one(self):\n        self.skipTest('x')\n",
    )
    commit(repo)
    assert kinds(find_fake_green(repo, "unit")) == ["skip_added", "skip_added"]


@pytest.mark.parametrize(
    "line",
    [
        "pytestmark = pytest.mark.skip",
        "pytestmark = pytest.mark.xfail(strict=False)",
        "from pytest import mark\n\n\n@mark.skipif(True, reason='x')\ndef test_x():\n    pass",
        "collect_ignore = ['test_cart.py']",
        "pytest.importorskip('not_installed')",
    ],
)
def test_skip_spellings(repo: Path, line: str) -> None:
    with (repo / "tests/test_cart.py").open("a") as f:
        f.write(f"\n\n{line}\n")
    commit(repo)
    assert kinds(guard(repo)) == ["skip_added"]


@pytest.mark.parametrize(
    "comment",
    [
        "# noqa: F401",
        "# pyright: ignore[reportGeneralTypeIssues]",
        "# pragma: no cover",
        "# ruff: noqa",
        "# mypy: ignore-errors",
    ],
)
def test_suppression_spellings(repo: Path, comment: str) -> None:
    with (repo / "shop/cart.py").open("a") as f:
        f.write(f"\n\nUNUSED = 1  {comment}\n")
    commit(repo)
    assert kinds(guard(repo)) == ["suppression_added"]


def test_unittest_assertion_removed(repo: Path) -> None:
    write(
        repo,
        "tests/test_unit.py",
        "import unittest\n\n\nclass CartTests(unittest.TestCase):\n"
        "    def test_one(self):\n        self.assertEqual(1, 1)\n        self.assertTrue(1)\n",
    )
    commit(repo, "unit")
    git(repo, "tag", "unit")
    edit(repo, "tests/test_unit.py", "        self.assertTrue(1)\n", "")
    commit(repo)
    assert kinds(find_fake_green(repo, "unit")) == ["assertion_removed"]


def test_ini_configs_are_compared_by_key(repo: Path) -> None:
    write(repo, "mypy.ini", "[mypy]\nstrict = True\n")
    write(repo, "tox.ini", "[testenv]\ncommands = pytest --cov-fail-under=90\n")
    write(repo, "setup.cfg", "[metadata]\nname = shop\n\n[flake8]\nmax-line-length = 100\n")
    commit(repo, "ini")
    git(repo, "tag", "ini")
    write(repo, "mypy.ini", "[mypy]\nstrict = True\n\n[mypy-shop.cart]\nignore_errors = True\n")
    write(repo, "tox.ini", "[testenv]\ncommands = pytest --cov-fail-under=70\n")
    write(repo, "setup.cfg", "[metadata]\nname = shop2\n\n[flake8]\nmax-line-length = 120\n")
    commit(repo)
    problems = find_fake_green(repo, "ini")
    assert kinds(problems) == ["suppression_added", "gate_config_changed", "coverage_lowered"]
    assert [p.location.path for p in problems if p.location] == [
        "mypy.ini",
        "setup.cfg",
        "tox.ini",
    ]
    assert "(flake8)" in problems[1].detail


def test_assertion_removed(repo: Path) -> None:
    edit(repo, "tests/test_cart.py", "    assert total([]) == 0\n", "")
    edit(repo, "tests/test_cart.py", "assert total([0.1, 0.2]) == pytest.approx(0.3)", "total([])")
    commit(repo)
    [problem] = guard(repo)
    assert problem.code == "assertion_removed"
    assert "went from 6 to 3" in problem.detail


def test_suppression_comment_added(repo: Path) -> None:
    edit(repo, "shop/cart.py", "    return sum(prices)", "    return sum(prices)  # type: ignore")
    edit(repo, "shop/cart.py", '"""A tiny cart."""', '"""A tiny cart."""  # noqa: E501')
    commit(repo)
    problems = guard(repo)
    assert kinds(problems) == ["suppression_added", "suppression_added"]
    assert [p.location.line for p in problems if p.location] == [1, 5]


def test_suppression_in_ruff_config_is_not_also_a_gate_change(repo: Path) -> None:
    edit(
        repo,
        "pyproject.toml",
        'select = ["E", "F", "I"]',
        'select = ["E", "F", "I"]\nper-file-ignores = {"shop/*" = ["E501"]}',
    )
    edit(
        repo, "pyproject.toml", "strict = true", "strict = true\ndisable_error_code = ['arg-type']"
    )
    commit(repo)
    problems = guard(repo)
    assert kinds(problems) == ["suppression_added", "suppression_added"]
    assert "E501" in problems[1].detail


def test_rule_dropped_from_select_is_a_suppression(repo: Path) -> None:
    edit(repo, "pyproject.toml", 'select = ["E", "F", "I"]', 'select = ["E", "I"]')
    commit(repo)
    assert kinds(guard(repo)) == ["suppression_added"]


def test_coverage_lowered(repo: Path) -> None:
    edit(repo, "pyproject.toml", "fail_under = 90", "fail_under = 50")
    edit(repo, "pyproject.toml", "--cov-fail-under=90", "--cov-fail-under=80")
    edit(repo, ".github/workflows/ci.yml", "--cov-fail-under=90", "--cov-fail-under=0")
    commit(repo)
    problems = guard(repo)
    assert kinds(problems) == ["coverage_lowered"] * 3
    assert {p.location.path for p in problems if p.location} == {
        ".github/workflows/ci.yml",
        "pyproject.toml",
    }


def test_gate_config_changed(repo: Path) -> None:
    edit(repo, "pyproject.toml", 'testpaths = ["tests"]', 'testpaths = ["tests/unit"]')
    edit(repo, "pyproject.toml", "strict = true", "strict = false")
    edit(repo, "pyproject.toml", 'version = "0.1.0"', 'version = "0.2.0"')  # not a gate section
    edit(repo, ".github/workflows/ci.yml", "ubuntu-latest", "ubuntu-22.04")
    write(repo, "ruff.toml", "line-length = 200\n")
    commit(repo)
    problems = guard(repo)
    assert kinds(problems) == ["gate_config_changed"] * 3
    by_path = {p.location.path: p.detail for p in problems if p.location}
    assert "(tool.mypy, tool.pytest.ini_options)" in by_path["pyproject.toml"]
    assert set(by_path) == {".github/workflows/ci.yml", "pyproject.toml", "ruff.toml"}


def test_lowered_threshold_and_other_ci_edits_are_both_reported(repo: Path) -> None:
    edit(repo, ".github/workflows/ci.yml", "pytest --cov-fail-under=90", "pytest -x || true")
    commit(repo)
    assert kinds(guard(repo)) == ["coverage_lowered", "gate_config_changed"]


# --- robustness -------------------------------------------------------------------------------


def test_problems_are_retryable_policy_problems(repo: Path) -> None:
    git(repo, "rm", "-q", "tests/test_cart.py")
    commit(repo)
    [problem] = guard(repo)
    assert problem.category == "policy"
    assert problem.retryable is True
    assert problem.type == "urn:harness:problem:fake-green-test-file-removed"
    assert problem.detail == "test file tests/test_cart.py was deleted so its tests no longer run"


def test_syntax_error_does_not_crash_and_falls_back_to_regex(repo: Path) -> None:
    edit(repo, "tests/test_cart.py", "def test_count():\n    assert count([1.0]) == 1\n", "")
    edit(repo, "tests/test_cart.py", "def test_total():", "def test_total(:")
    write(repo, "setup.cfg", "[mypy\nnot ini at all")
    write(repo, "pyproject.toml", "[tool.ruff\nbroken = ")
    commit(repo)
    problems = guard(repo)
    # pyproject.toml and setup.cfg are compared by lines; the test file by regex
    assert kinds(problems) == [
        "coverage_lowered",  # pyproject.toml's thresholds are gone
        "gate_config_changed",
        "gate_config_changed",
        "test_function_removed",
    ]
    assert problems[-1].test_id == "tests/test_cart.py::test_count"
    assert problems[-1].location is not None
    assert problems[-1].location.line == 11


def test_binary_and_deleted_non_test_files_do_not_crash(repo: Path) -> None:
    (repo / "logo.bin").write_bytes(b"\x00\xff\xfe" * 100)
    (repo / "tests" / "data.bin").write_bytes(b"\x00# noqa\x00")
    git(repo, "rm", "-q", "README.md", "shop/__init__.py")
    commit(repo)
    assert guard(repo) == []


def test_unknown_base_is_an_infrastructure_error(repo: Path) -> None:
    with pytest.raises(InfrastructureError, match="no-such-ref"):
        find_fake_green(repo, "no-such-ref")


def test_git_dir_ignores_a_forged_dot_git_file(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "task", str(tree), "base")
    git_dir = Path(git(tree, "rev-parse", "--absolute-git-dir").strip())
    git(tree, "rm", "-q", "tests/test_cart.py")
    commit(tree)
    (tree / ".git").write_text(f"gitdir: {repo / '.git'}\n")  # points at main: base == HEAD
    assert find_fake_green(tree, "base") == []
    assert kinds(find_fake_green(tree, "base", git_dir=git_dir)) == ["test_file_removed"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests/test_cart.py", True),
        ("tests/data/fixture.json", True),
        ("pkg/test_x.py", True),
        ("pkg/x_test.py", True),
        ("conftest.py", True),
        ("old_tests.txt", False),
        ("shop/testing.py", False),
        ("tests", False),
    ],
)
def test_is_test_path(path: str, expected: bool) -> None:
    assert is_test_path(path) is expected


def test_guard_only_reads(repo: Path) -> None:
    git(repo, "rm", "-q", "tests/test_cart.py")
    commit(repo)
    write(repo, "shop/cart.py", "uncommitted = True  # type: ignore\n")  # not in HEAD: not judged
    index = (repo / ".git" / "index").read_bytes()
    status = git(repo, "status", "--porcelain")
    assert kinds(guard(repo)) == ["test_file_removed"]
    assert (repo / ".git" / "index").read_bytes() == index
    assert git(repo, "status", "--porcelain") == status


# --- what changes how a gate evaluates (issue 11) ---------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "def pytest_sessionfinish(session):\n    session.exitstatus = 0\n",
        "def pytest_runtest_makereport(item, call):\n    pass\n",
        "def pytest_collection_modifyitems(config, items):\n    items.clear()\n",
        "@pytest.hookimpl(hookwrapper=True)\ndef fixture_like():\n    yield\n",
        "import os\n\nos._exit(0)\n",
        "pytest.exit('done', returncode=0)\n",
    ],
)
def test_conftest_hooks_and_exits_are_gate_config(repo: Path, code: str) -> None:
    with (repo / "tests/conftest.py").open("a") as f:
        f.write("\n\n" + code)
    commit(repo)
    found = guard(repo)  # one finding per line that holds a hook or an exit
    assert set(kinds(found)) == {"gate_config_changed"}
    assert all(p.location and p.location.path == "tests/conftest.py" for p in found)


def test_os_exit_in_a_test_file_is_gate_config(repo: Path) -> None:
    edit(
        repo, "tests/test_cart.py", "import pytest\n", "import os\n\nimport pytest\n\nos._exit(0)\n"
    )
    commit(repo)
    assert kinds(guard(repo)) == ["gate_config_changed"]


def test_pytest_addoption_and_fixtures_in_conftest_are_fine(repo: Path) -> None:
    with (repo / "tests/conftest.py").open("a") as f:
        f.write("\n\ndef pytest_addoption(parser):\n    parser.addoption('--slow')\n")
        f.write("\n\n@pytest.fixture\ndef prices():\n    return [1.0]\n")
    commit(repo)
    assert guard(repo) == []


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (".pytest.ini", '[pytest]\naddopts = -k "not test_total"\n'),
        ("pytest.ini", "[pytest]\naddopts = --deselect tests/test_cart.py::test_total\n"),
        ("pytest.toml", '[pytest]\naddopts = ["--ignore=tests/test_cart.py"]\n'),
        ("tox.ini", '[pytest]\naddopts = -k "not total"\n'),
        ("setup.cfg", '[tool:pytest]\naddopts = -k "not total"\n'),
        ("shop/.flake8", "[flake8]\nmax-line-length = 200\n"),
        (".pylintrc", "[MAIN]\njobs = 1\n"),
        ("pyrightconfig.json", '{"typeCheckingMode": "off"}\n'),
    ],
)
def test_a_new_gate_config_in_any_spelling_is_gate_config(repo: Path, path: str, text: str) -> None:
    write(repo, path, text)
    commit(repo)
    found = guard(repo)
    assert "gate_config_changed" in kinds(found), found
    assert any(p.location and p.location.path == path for p in found)


@pytest.mark.parametrize("name", [".ignore", ".gitignore", ".rgignore", "shop/.ignore"])
def test_a_pattern_added_to_an_ignore_file_is_gate_config(repo: Path, name: str) -> None:
    write(repo, name, "# hide it\n\nshop/cart.py\n")
    commit(repo)
    [problem] = guard(repo)
    assert problem.code == "gate_config_changed"
    assert "shop/cart.py" in problem.detail and problem.location
    assert problem.location.line == 3


def test_a_pattern_removed_from_an_ignore_file_is_fine(repo: Path) -> None:
    write(repo, ".gitignore", "build/\ndist/\n")
    commit(repo, "ignore")
    git(repo, "tag", "ignored")
    write(repo, ".gitignore", "build/\n")
    commit(repo)
    assert find_fake_green(repo, "ignored") == []


def test_a_stub_beside_a_module_is_gate_config(repo: Path) -> None:
    write(repo, "shop/cart.pyi", "def total(prices: list[float]) -> float: ...\n")
    commit(repo)
    [problem] = guard(repo)
    assert problem.code == "gate_config_changed"
    assert "shop/cart.py" in problem.detail


def test_a_stub_for_a_module_without_code_is_fine(repo: Path) -> None:
    write(repo, "shop/native.pyi", "def fast() -> int: ...\n")
    commit(repo)
    assert guard(repo) == []


@pytest.mark.parametrize(
    "directive",
    [
        "# mypy: disable-error-code=return-value",
        "# mypy: allow-untyped-defs",
        "# flake8: noqa",
        "# pyright: basic",
        "# pyright: reportGeneralTypeIssues=false",
    ],
)
def test_inline_tool_directives_are_suppressions(repo: Path, directive: str) -> None:
    edit(repo, "shop/cart.py", '"""A tiny cart."""\n', f'{directive}\n"""A tiny cart."""\n')
    commit(repo)
    assert kinds(guard(repo)) == ["suppression_added"]


def test_directives_that_add_checks_are_fine(repo: Path) -> None:
    edit(repo, "shop/cart.py", '"""A tiny cart."""\n', '# mypy: strict\n"""A tiny cart."""\n')
    commit(repo)
    assert guard(repo) == []


def test_weakened_assertions_are_found_on_the_syntax_tree(repo: Path) -> None:
    edit(repo, "tests/test_cart.py", "assert total([1.0, 2.0]) == 3.0", "assert total([1.0, 2.0])")
    commit(repo)
    [problem] = guard(repo)
    assert problem.code == "assertion_removed"
    assert "`assert total([1.0, 2.0]) == 3.0` became `assert total([1.0, 2.0])`" in problem.detail
    assert problem.test_id == "tests/test_cart.py::test_total"
