"""Files and lines that change how a gate evaluates, beyond the config files fake_green.py
compares by key: the fake-green guard's tables for conftest hooks and exits, ignore files,
stubs that shadow modules, and inline tool directives.

Each check returns (kind, detail, line) findings; fake_green.py makes them Problems. The kinds
are the existing ones: what changes how a gate runs or reports is `gate_config_changed`, what
silences a tool inline is `suppression_added`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath

from harness.config.policy import GuardFindingKind
from harness.git import Lines

Finding = tuple[GuardFindingKind, str, int | None]

# ruff (and ripgrep-style tools) skip what these list; git's own excludes are outside the tree.
IGNORE_FILES = frozenset({".gitignore", ".ignore", ".rgignore"})

# In test files and conftest.py: pytest hooks (each can deselect tests, rewrite outcomes or the
# exit status; only pytest_addoption, which declares an option, cannot), hook wrappers, and
# ways to end the process before pytest has judged anything.
_HOOK = re.compile(
    r"\bdef\s+pytest_(?!addoption\b)\w+\s*\(|\bhookimpl\b(?:.*\bhookwrapper\b)?|\bhookwrapper\b"
    r"|\.exitstatus\b"
    r"|\bos\._exit\s*\(|\bpytest\.exit\s*\("
)
TEST_FILE_TOKENS: tuple[tuple[GuardFindingKind, re.Pattern[str], str], ...] = (
    ("gate_config_changed", _HOOK, "which changes how pytest collects, runs or reports tests"),
)

# Inline directives that turn a tool's checks off for a file, beyond fake_green.SUPPRESSION:
# mypy's per-file options (`# mypy: disable-error-code=...`, `allow-untyped-defs`, ... but not
# `strict` or `enable-error-code`, which only add checks), flake8's and isort's file skips,
# pyright's basic mode and report switches turned off.
DIRECTIVE = re.compile(
    r"#\s*(?:mypy:\s*(?!strict\b|enable-error-code\b|ignore-errors\b)[\w-]+|flake8:\s*noqa\b"
    r"|isort:\s*skip_file\b|pyright:\s*(?:basic\b|report\w+\s*=\s*(?:false|none)\b))",
    re.IGNORECASE,
)


def ignore_file_findings(path: str, added: Lines) -> Iterator[Finding]:
    """Patterns added to an ignore file: the linter no longer checks what they match."""
    if PurePosixPath(path).name not in IGNORE_FILES:
        return
    patterns = [(n, t.strip()) for n, t in added if t.strip() and not t.lstrip().startswith("#")]
    if patterns:
        shown = ", ".join(p for _, p in patterns)[:100]
        detail = (
            f"{path} now lists {shown}; the linter (ruff reads {', '.join(sorted(IGNORE_FILES))})"
            " skips what it lists, so those files are no longer checked"
        )
        yield "gate_config_changed", detail, patterns[0][0]


def shadowing_stub(path: str, *, added: bool, module_exists: bool) -> Iterator[Finding]:
    """A new `.pyi` beside an existing `.py`: the type checker reads the stub and never
    checks the module's code."""
    if added and path.endswith(".pyi") and module_exists:
        detail = (
            f"the stub {path} was added beside {path[:-1]}: the type checker reads the stub "
            "instead, so the module's code is no longer type-checked"
        )
        yield "gate_config_changed", detail, 1
