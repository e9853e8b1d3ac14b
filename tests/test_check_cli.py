"""`harness check`: the policy's gates on a copy of a working tree, in a sandbox, with the same
problems an agent gets. Exit 0 clean, 1 problems found, 2 bad input. Real ruff, mypy and pytest
on copies of the demo (a check takes a few seconds); the checked tree is never written to."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult, git, make_demo_repo, run_cli, tree_hashes

SHOP = "examples/shop"
POLICY = "policies/demo.yaml"
CACHE_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SEEDED = "\n\ndef test_seeded_failure() -> None:\n    assert page_count(30, 10) == 3\n"
"""Appended to the shop's tests/test_pagination.py: fails on the demo's buggy page_count."""
UNTRACKED = "def test_untracked_failure() -> None:\n    assert sorted([2, 1]) == [2, 1]\n"
"""A new file nobody has `git add`ed: the check must see it too."""
ONE_GATE = "gates:\n  - {name: t, kind: test, command: 'true'}\n"


def check(repo: Path, *args: str) -> CliResult:
    return run_cli(["check", *args], cwd=repo)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def cache_dirs(root: Path) -> list[str]:
    return sorted(
        str(Path(dirpath, d).relative_to(root))
        for dirpath, dirnames, _ in os.walk(root)
        for d in dirnames
        if d in CACHE_DIRS
    )


def verdicts(stdout: str) -> list[tuple[str, str]]:
    """(verdict, gate) of each gate line the markdown output starts with."""
    lines = [line.split() for line in stdout.splitlines() if line.startswith(("pass ", "FAIL "))]
    return [(words[0], words[1]) for words in lines]


# --- a clean tree --------------------------------------------------------------------------------


def test_clean_demo_passes_every_gate(demo_repo: Path) -> None:
    result = check(demo_repo, SHOP, "--policy", POLICY)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == [("pass", "lint"), ("pass", "types"), ("pass", "tests")]
    assert "## What happened" not in result.stdout  # nothing to report
    # Logs under ./runs by default, one directory per check.
    [logs] = (demo_repo / "runs").glob("check-*")
    assert sorted(p.name for p in logs.glob("*.log")) == [
        "check-0-lint.log",
        "check-0-tests.log",
        "check-0-types.log",
    ]
    assert cache_dirs(demo_repo / SHOP) == []


# --- a tree with a failing test, uncommitted ---------------------------------------------------


@dataclass
class Seeded:
    repo: Path
    runs: Path
    line: int
    """The line of the seeded failing assertion in tests/test_pagination.py."""
    before: dict[str, str]
    after: dict[str, str]
    status_before: str
    status_after: str
    markdown: CliResult
    json: CliResult

    @property
    def document(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.json.stdout)
        return data


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A demo copy with a failing test added to a tracked file and a failing untracked test
    file, neither committed; checked once as markdown and once as JSON."""
    root = tmp_path_factory.mktemp("check")
    repo = make_demo_repo(root / "demo")
    tests = repo / SHOP / "tests"
    with (tests / "test_pagination.py").open("a", encoding="utf-8") as file:
        file.write(SEEDED)
    (tests / "test_untracked.py").write_text(UNTRACKED, encoding="utf-8")
    line = (tests / "test_pagination.py").read_text("utf-8").count("\n")
    shop = repo / SHOP
    before, status_before = tree_hashes(shop), git(repo, "status", "--porcelain", "--ignored")
    runs = root / "check-runs"
    args = [SHOP, "--policy", POLICY, "--runs-dir", str(runs)]
    markdown = check(repo, *args)
    as_json = check(repo, *args, "--format", "json")
    after, status_after = tree_hashes(shop), git(repo, "status", "--porcelain", "--ignored")
    return Seeded(repo, runs, line, before, after, status_before, status_after, markdown, as_json)


PAGINATION_ID = "tests/test_pagination.py::test_seeded_failure"
UNTRACKED_ID = "tests/test_untracked.py::test_untracked_failure"


def test_problems_exit_1_and_the_markdown_names_test_ids_and_lines(seeded: Seeded) -> None:
    result = seeded.markdown
    assert result.exit_code == 1, result.stdout + result.stderr
    # The failing test gate is re-run once (the flaky check) and fails again.
    assert verdicts(result.stdout) == [
        ("pass", "lint"),
        ("pass", "types"),
        ("FAIL", "tests"),
        ("FAIL", "tests"),
    ]
    out = result.stdout
    assert "## What happened" in out and "## What to do" in out
    assert PAGINATION_ID in out and UNTRACKED_ID in out
    assert f"`tests/test_pagination.py:{seeded.line}`" in out
    assert "`tests/test_untracked.py:2`" in out
    assert "assert 4 == 3" in out  # pytest's own message
    assert "logs:" in out


def test_markdown_is_the_agent_feedback_unwrapped(seeded: Seeded) -> None:
    """`check` prints "the same feedback an agent gets": its lines must not be re-wrapped to
    the width of a terminal (a pipe or CI log has none)."""
    advice = (
        "- Failing tests: fix the code under test, not the tests; never skip, xfail, delete or "
        "loosen them."
    )
    lines = seeded.markdown.stdout.splitlines()
    assert advice in lines
    assert any(f"logs: {logs}" in lines for logs in seeded.runs.glob("check-*")), lines


def test_json_output_has_problems_with_location_and_test_id(seeded: Seeded) -> None:
    assert seeded.json.exit_code == 1, seeded.json.stderr
    document = seeded.document
    assert document["passed"] is False
    assert (document["path"], document["policy"]) == (SHOP, POLICY)
    gates = [(g["name"], g["phase"], g["run"], g["passed"]) for g in document["gates"]]
    assert gates == [
        ("lint", "check", 1, True),
        ("types", "check", 1, True),
        ("tests", "check", 1, False),
        ("tests", "check", 2, False),
    ]
    problems = {p["test_id"]: p for p in document["problems"]}
    assert set(problems) == {PAGINATION_ID, UNTRACKED_ID}
    pagination = problems[PAGINATION_ID]
    assert pagination["location"] == {"path": "tests/test_pagination.py", "line": seeded.line}
    assert pagination["gate"] == "tests" and pagination["category"] == "agent_fixable"
    assert "assert 4 == 3" in pagination["detail"]
    assert problems[UNTRACKED_ID]["location"] == {"path": "tests/test_untracked.py", "line": 2}
    assert document["flaky"] == []


def test_the_checked_tree_is_untouched(seeded: Seeded) -> None:
    assert seeded.after == seeded.before  # byte for byte, nothing added or removed
    assert seeded.status_after == seeded.status_before
    assert cache_dirs(seeded.repo / SHOP) == []
    # Nothing was committed or staged either.
    assert git(seeded.repo, "log", "--oneline").count("\n") == 1


# --- bad input: exit 2, one line ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy_text", "says"),
    [
        (f"{ONE_GATE}budget: {{max_atempts: 3}}\n", "budget.max_atempts"),
        ("gates: [\n", "not valid YAML"),
        (None, "not found"),
    ],
    ids=["unknown-key", "bad-yaml", "missing"],
)
def test_bad_policy_exits_2_with_one_error_line(
    tmp_path: Path, policy_text: str | None, says: str
) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("a\n", encoding="utf-8")
    policy = tmp_path / "policy.yaml"
    if policy_text is not None:
        policy.write_text(policy_text, encoding="utf-8")
    result = check(tmp_path, "tree", "--policy", str(policy))

    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert str(policy) in lines[0] and says in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("target", ["a.txt", "no-such-dir"])
def test_a_path_that_is_not_a_directory_exits_2(tmp_path: Path, target: str) -> None:
    (tmp_path / "a.txt").write_text("a\n", encoding="utf-8")
    policy = tmp_path / "policy.yaml"
    policy.write_text(ONE_GATE, encoding="utf-8")
    result = check(tmp_path, target, "--policy", str(policy))

    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and target in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


# --- a plain directory (no git): every file is copied ----------------------------------------


def test_a_directory_outside_git_is_checked_too(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "notes.txt").write_text("one\nTODO two\n", encoding="utf-8")
    policy = tmp_path / "policy.yaml"
    gate = '{name: notodo, kind: lint, command: "! grep -Hn TODO notes.txt"}'
    policy.write_text(f"gates:\n  - {gate}\n", encoding="utf-8")
    args = ["tree", "--policy", str(policy), "--runs-dir", str(tmp_path / "runs")]

    found = check(tmp_path, *args, "--format", "json")
    assert found.exit_code == 1, found.stderr
    [problem] = json.loads(found.stdout)["problems"]
    assert problem["location"] == {"path": "notes.txt", "line": 2}

    (tree / "notes.txt").write_text("one\ntwo\n", encoding="utf-8")
    clean = check(tmp_path, *args)
    assert clean.exit_code == 0, clean.stdout + clean.stderr
    assert verdicts(clean.stdout) == [("pass", "notodo")]
