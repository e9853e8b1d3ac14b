"""The fake-green guard: changes that turn a suite green by weakening it instead of fixing code.

`find_fake_green(repo_root, base, head)` diffs two commits with git (reading only, through
harness.git) and returns one policy Problem per finding. Python first; other languages and
tools are rows in the tables.

- test_file_removed: a test file (under tests/ or test/, test_*.py, *_test.py, conftest.py)
  deleted, or renamed to a non-test path; nothing else is reported for that file.
- test_function_removed: `def test*`, `async def test*`, `class Test*` and *TestCase classes (by
  `ast`; by regex if either version does not parse) gone from a test file, reported only when
  the file's count of test functions went down (a rename is not reported). A removed class is
  reported once, not per method.
- skip_added: added pytest/unittest skips and xfails, `.skipTest(`, `pytest.importorskip(`,
  `collect_ignore` in Python files.
- assertion_removed: a test file's `assert`s, `x.assert*(`/`assert*(` calls and
  `pytest.raises/approx/warns` went down, not counting those inside removed tests (with the
  regex fallback: only checked when no test was removed); or, on the syntax tree
  (fake_green_ast.py), a test kept by name whose checks were weakened: a comparison dropped or
  changed, an expected value or tolerance changed, a checking loop or parametrize list narrowed.
- suppression_added: added `# noqa`, `# type: ignore`, `# pyright: ignore`, `# pragma: no cover`,
  `# ruff: noqa`, `# mypy: ignore-errors`, `# pylint: disable` and other inline directives
  (`# mypy: disable-error-code=...`, gate_files.DIRECTIVE) in Python files; in gate config,
  items added under ignore-like keys (per-file-ignores, ignore_errors, disable_error_code, omit,
  exclude, ...) or removed from select-like keys.
- coverage_lowered: a `fail_under` / `--cov-fail-under` in a gate config or CI file lowered or
  removed.
- gate_config_changed: other edits to pyproject.toml's [tool.ruff/mypy/pytest/coverage/pyright/
  pylint*] tables, ruff.toml, setup.cfg's tool sections, tox.ini, mypy.ini, pytest.ini,
  .coveragerc, .pre-commit-config.yaml and CI files; one finding per file naming the sections.
  Also (gate_files.py): pytest hooks, `.exitstatus`, `os._exit(`, `pytest.exit(` added to test
  files or conftest.py; patterns added to .gitignore/.ignore/.rgignore (ruff skips what they
  list); a new `.pyi` beside an existing `.py` (mypy reads the stub, not the code).

Precedence, so nothing is reported twice: TOML/INI config is compared key by key (other or
unparsable files by changed lines), and each changed key is suppression_added, else
coverage_lowered, else gate_config_changed. A skip or suppression token already on a removed
line of the same file (a moved or edited line) is not "added". Not detected: tests made vacuous
with their assertions kept, a test renamed and weakened at once, edits to Makefiles, noxfile.py
or scripts that run the gates. Comments that only mention
a pattern are reported. Binary and unparsable files never crash the guard.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from harness.config.policy import GuardFindingKind
from harness.gates.fake_green_ast import weakened_assertions
from harness.gates.gate_config import CONFIG_NAMES, LINES, compare_config, parse_config
from harness.gates.gate_files import (
    DIRECTIVE,
    IGNORE_FILES,
    TEST_FILE_TOKENS,
    ignore_file_findings,
    shadowing_stub,
)
from harness.git import Lines, Worktree
from harness.problems import Location, Problem, problem_type

# The kinds are part of the policy (guard.allow names them), so the policy defines them.
FindingKind = GuardFindingKind


@dataclass(frozen=True)
class Language:
    suffixes: tuple[str, ...]
    test_files: tuple[str, ...]  # fnmatch globs on a file's name
    test_def: re.Pattern[str]  # regex fallback for tests: group `name` a function, `cls` a class
    assertion: re.Pattern[str]  # regex fallback for counting assertions
    added_lines: tuple[tuple[FindingKind, re.Pattern[str], str], ...]  # (kind, token, why)


# fmt: off
SKIP = re.compile(
    r"\bmark\.(?:skipif|skip|xfail)\b|\bpytest\.(?:skip|xfail|importorskip)\("
    r"|\bunittest\.(?:skip\w*|expectedFailure)\b|\.skipTest\(|\bcollect_ignore(?:_glob)?\b")
SUPPRESSION = re.compile(
    r"#\s*(?:noqa\b(?::\s*[\w, ]*\w)?|type:\s*ignore\b(?:\[[^\]]*\])?|pyright:\s*ignore\b"
    r"|pragma:\s*no\s*cover\b|ruff:\s*noqa\b|mypy:\s*ignore-errors\b|pylint:\s*disable\b)", re.I)
PYTHON = Language(
    suffixes=(".py", ".pyi"),
    test_files=("test_*.py", "*_test.py", "conftest.py"),
    test_def=re.compile(r"^[ \t]*(?:async\s+)?def\s+(?P<name>test\w*)"
                        r"|^[ \t]*class\s+(?P<cls>Test\w*)", re.M),
    assertion=re.compile(r"^[ \t]*assert\b|\bassert\w*\(|\bpytest\.(?:raises|approx|warns)\(",
                         re.M),
    added_lines=(("skip_added", SKIP, "so tests no longer run or no longer fail"),
                 ("suppression_added", SUPPRESSION, "which hides an error instead of fixing it"),
                 ("suppression_added", DIRECTIVE, "which turns a tool's checks off for the file")),
)
LANGUAGES = (PYTHON,)
TEST_DIRS = frozenset({"tests", "test"})
PYTEST_ASSERTS = frozenset({"raises", "approx", "warns"})

CI_DIRS = (".github/workflows/", ".circleci/")
# fmt: on


def find_fake_green(
    repo_root: Path, base: str, head: str = "HEAD", *, git_dir: Path | None = None
) -> list[Problem]:
    """Compare `head` with `base` in the repository whose work tree's top is `repo_root`; one
    Problem per finding.

    `git_dir`, recorded before any agent ran, keeps git from finding its repository through the
    worktree's `.git` file, which an agent could have forged to hide its change. Without it the
    git directory is read from `repo_root` now: only for a tree no agent wrote.
    """
    tree = (
        Worktree(repo_root, repo_root, git_dir)
        if git_dir
        else Worktree.create(repo_root, repo_root)
    )
    base, head = tree.resolve(base), tree.resolve(head)
    problems: list[Problem] = []
    for old, new in tree.file_changes(base, head):
        problems += _check(tree, base, head, old, new)
    return problems


def _read(tree: Worktree, commit: str, path: str | None) -> str:
    """The file's text, or "" where it does not exist (an added or deleted file)."""
    return (tree.read_file(commit, path) or "") if path else ""


def is_test_path(path: str) -> bool:
    """A test file or test support (fixtures, data): under a test directory or named as tests."""
    return _collected(path) or any(part in TEST_DIRS for part in PurePosixPath(path).parts[:-1])


def _collected(path: str) -> bool:
    """Named as a test runner collects it (conftest.py included)."""
    name = PurePosixPath(path).name
    return any(fnmatch(name, glob) for lang in LANGUAGES for glob in lang.test_files)


def _problem(
    kind: FindingKind, detail: str, path: str, line: int | None = None, test_id: str | None = None
) -> Problem:
    return Problem(
        type=problem_type("fake-green-" + kind.replace("_", "-")),
        title=kind.replace("_", " ").capitalize(),
        detail=detail,
        code=kind,
        location=Location(path=path, line=line),
        test_id=test_id,
        category="policy",
        retryable=True,
    )


def _check(tree: Worktree, base: str, head: str, old: str | None, new: str | None) -> list[Problem]:
    kept = new is not None and is_test_path(new) and (_collected(new) or not _collected(old or ""))
    if old and is_test_path(old) and not kept:
        how = "deleted" if new is None else f"renamed to {new}, where its tests are not collected,"
        detail = f"test file {old} was {how} so its tests no longer run"
        return [_problem("test_file_removed", detail, old)]
    path = new or old or ""
    name = PurePosixPath(path).name
    lang = next((lang for lang in LANGUAGES if new and new.endswith(lang.suffixes)), None)
    is_ci = any(path.startswith(d) or f"/{d}" in path for d in CI_DIRS)
    if new and name in IGNORE_FILES:
        added = tree.changed_lines(base, head, [p for p in dict.fromkeys((old, new)) if p])[1]
        return [
            _problem(kind, why, new, line) for kind, why, line in ignore_file_findings(new, added)
        ]
    if lang is None and not is_ci and name not in CONFIG_NAMES:
        return []
    removed, added = tree.changed_lines(base, head, [p for p in dict.fromkeys((old, new)) if p])
    problems: list[Problem] = []
    if lang and new:
        for kind, pattern, why in lang.added_lines:
            problems += _added_tokens(kind, pattern, why, new, removed, added)
        if is_test_path(new):
            for kind, pattern, why in TEST_FILE_TOKENS:
                problems += _added_tokens(kind, pattern, why, new, removed, added)
        exists = old is None and new.endswith(".pyi") and tree.read_file(head, new[:-1]) is not None
        for kind, why, line in shadowing_stub(new, added=old is None, module_exists=exists):
            problems.append(_problem(kind, why, new, line))
        if old and is_test_path(new):
            problems += _compare_tests(
                lang, old, new, _read(tree, base, old), _read(tree, head, new)
            )
    else:
        before, after = _read(tree, base, old), _read(tree, head, new)
        keys_before, keys_after = parse_config(name, before), parse_config(name, after)
        if keys_before is None or keys_after is None:  # not comparable by keys: by lines
            keys_before, keys_after = {LINES: before}, {LINES: after}
        changes = compare_config(path, keys_before, keys_after, removed, added)
        problems += [_problem(kind, why, path, line) for kind, why, line in changes]
    return problems


def _added_tokens(
    kind: FindingKind, pattern: re.Pattern[str], why: str, path: str, removed: Lines, added: Lines
) -> Iterator[Problem]:
    def token(match: re.Match[str]) -> str:
        return re.sub(r"\s+", "", match[0]).lower()

    before = Counter(token(m) for _, text in removed for m in pattern.finditer(text))
    for line_no, text in added:
        for match in pattern.finditer(text):
            if before[token(match)] > 0:
                before[token(match)] -= 1
            else:
                yield _problem(
                    kind, f"`{text.strip()[:100]}` was added to {path}, {why}", path, line_no
                )


@dataclass
class _Tests:
    tests: dict[str, tuple[int, int, bool]]
    """Qualified name -> (line, assertions inside, is a function rather than a class)."""
    assertions: int
    parsed: bool


def _analyse(lang: Language, source: str, use_ast: bool) -> _Tests:
    if use_ast and lang is PYTHON:
        tree = ast.parse(source)
        found: dict[str, tuple[int, int, bool]] = {}
        _walk_tests(tree.body, "", found)
        return _Tests(found, _count_asserts(tree), True)
    tests = {
        m["name"] or m["cls"]: (source.count("\n", 0, m.start()) + 1, 0, bool(m["name"]))
        for m in lang.test_def.finditer(source)
    }
    return _Tests(tests, len(lang.assertion.findall(source)), False)


def _walk_tests(body: list[ast.stmt], prefix: str, found: dict[str, tuple[int, int, bool]]) -> None:
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            found[prefix + node.name] = (node.lineno, _count_asserts(node), True)
        elif isinstance(node, ast.ClassDef) and (
            node.name.startswith("Test")
            or any(ast.unparse(b).endswith("TestCase") for b in node.bases)
        ):
            found[prefix + node.name] = (node.lineno, _count_asserts(node), False)
            _walk_tests(node.body, f"{prefix}{node.name}.", found)


def _count_asserts(tree: ast.AST) -> int:
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            on_pytest = isinstance(func, ast.Attribute) and ast.unparse(func.value) == "pytest"
            count += str(name).startswith("assert") or (on_pytest and name in PYTEST_ASSERTS)
        count += isinstance(node, ast.Assert)
    return count


def _compare_tests(
    lang: Language, old: str, new: str, before_src: str, after_src: str
) -> list[Problem]:
    try:
        before, after = _analyse(lang, before_src, True), _analyse(lang, after_src, True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        before, after = _analyse(lang, before_src, False), _analyse(lang, after_src, False)
    problems: list[Problem] = []
    was, now = (sum(is_fn for _, _, is_fn in t.tests.values()) for t in (before, after))
    gone = [n for n in before.tests if n not in after.tests] if now < was else []
    gone = [n for n in gone if not any(n.startswith(g + ".") for g in gone)]
    for name in gone:
        line, _, is_fn = before.tests[name]
        what = "test function" if is_fn else "test class"
        detail = f"{what} {name} was removed from {old} (tests there went from {was} to {now})"
        test_id = f"{new}::{name.replace('.', '::')}"
        problems.append(_problem("test_function_removed", detail, old, line, test_id))
    kept = before.assertions - sum(before.tests[n][1] for n in gone)
    fewer = (before.parsed or not gone) and after.assertions < kept
    # On the syntax tree too: which test kept by name checks less, and what its check became.
    weakened = weakened_assertions(before_src, after_src) if after.parsed else []
    if fewer or weakened:
        detail = f"assertions in {new}" + (
            f" went from {kept} to {after.assertions} (outside removed tests)"
            if fewer
            else " were weakened"
        )
        detail += "; ".join(
            [", so its tests check less", *(f"in {w.test}, {w.change}" for w in weakened[:3])]
        )
        if len(weakened) > 3:
            detail += f" (and {len(weakened) - 3} more tests)"
        first = weakened[0] if weakened else None
        at = first.line if first else None
        first_id = f"{new}::{first.test.replace('.', '::')}" if first else None
        problems.append(_problem("assertion_removed", detail, new, at, first_id))
    return problems
