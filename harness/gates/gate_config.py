"""Gate configuration files compared by key, for the fake-green guard: which keys of
pyproject.toml's tool tables, ruff.toml, pytest.toml, setup.cfg's tool sections, tox.ini,
mypy.ini, pytest.ini (any spelling) and .coveragerc changed, and whether the change lets more
through (suppression_added), lowers a coverage threshold (coverage_lowered) or otherwise
changes a gate (gate_config_changed). Files that cannot be compared by keys (CI files, the
pre-commit config, unparsable ones) are compared by changed lines."""

from __future__ import annotations

import configparser
import re
import tomllib

from harness.gates.gate_files import Finding
from harness.git import Lines

# fmt: off
# Gate configuration by file name: TOML and INI files are compared by keys, in the sections
# named (all when empty); the others (and unparsable ones) by changed lines.
TOML_FILES: dict[str, tuple[str, ...]] = {
    "pyproject.toml": ("tool.ruff", "tool.mypy", "tool.pytest", "tool.coverage", "tool.pyright",
                       "tool.pylint"),
    "ruff.toml": (), ".ruff.toml": (), "pytest.toml": (), ".pytest.toml": ()}
INI_FILES: dict[str, tuple[str, ...]] = {
    "setup.cfg": ("mypy", "flake8", "tool:pytest", "coverage:", "pycodestyle", "pylint"),
    "tox.ini": (), "mypy.ini": (), ".mypy.ini": (), "pytest.ini": (), ".pytest.ini": (),
    ".coveragerc": (), ".flake8": (), ".pylintrc": (), "pylintrc": ()}
TEXT_FILES = frozenset({".pre-commit-config.yaml", ".gitlab-ci.yml", "Jenkinsfile",
                        "azure-pipelines.yml", "pyrightconfig.json"})
LOOSEN_BY_ADDING = frozenset({"ignore", "extend-ignore", "per-file-ignores",
    "extend-per-file-ignores", "exclude", "extend-exclude", "ignore_errors", "disable_error_code",
    "ignore_missing_imports", "omit", "exclude_lines", "exclude_also", "disable"})
LOOSEN_BY_REMOVING = frozenset({"select", "extend-select", "enable_error_code"})
# fmt: on
THRESHOLD = re.compile(r"(?:fail[_-]under\s*[=:]\s*|--cov-fail-under[=\s]+)(\d+(?:\.\d+)?)")
FALSY = frozenset({"", "none", "false", "0", "no", "off"})
CONFIG_NAMES = frozenset(TOML_FILES) | frozenset(INI_FILES) | TEXT_FILES
LINES = ("(lines)",)  # the one key of a config file compared by changed lines
Key = tuple[str, ...]


def _flatten(value: object, key: Key, out: dict[Key, object]) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            _flatten(item, (*key, str(name)), out)
    elif isinstance(value, list) and value and key and all(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            _flatten(item, (*key[:-1], f"{key[-1]}[{index}]"), out)
    else:
        out[key] = value


def parse_config(name: str, text: str) -> dict[Key, object] | None:
    """A config file's gate keys, flattened; None when it cannot be compared by keys."""
    flat: dict[Key, object] = {}
    try:
        if name in TOML_FILES:
            _flatten(tomllib.loads(text), (), flat)
        elif name in INI_FILES:
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            parser.read_string(text)
            flat = {(s, k): v for s in parser.sections() for k, v in parser.items(s)}
        else:
            return None
    except (tomllib.TOMLDecodeError, configparser.Error, UnicodeError):
        return None
    sections = TOML_FILES.get(name) or INI_FILES.get(name) or ("",)
    return {k: v for k, v in flat.items() if ".".join(k).startswith(sections)}


def _items(value: object) -> set[str]:
    if isinstance(value, list):
        return {item for v in value for item in _items(v)}
    return {w for w in re.split(r"[,\s]+", str(value)) if w.lower() not in FALSY}


def _lowered(before: str, after: str) -> bool:
    old, new = ([float(m[1]) for m in THRESHOLD.finditer(text)] for text in (before, after))
    return bool(old) and (not new or max(new) < max(old))


def compare_config(
    path: str, before: dict[Key, object], after: dict[Key, object], removed: Lines, added: Lines
) -> list[Finding]:
    """Each changed key once, as the first that applies: suppression, coverage, gate change.

    A file compared by lines has the one key `(lines)`: its threshold lines are the coverage
    finding, any other changed line is a gate change.
    """
    problems: list[Finding] = []
    sections: set[str] = set()
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        shown = "" if key == LINES else f" ({'.'.join(key)})"
        more = _items(new) - _items(old) if LOOSEN_BY_ADDING & set(key) else set()
        more |= _items(old) - _items(new) if LOOSEN_BY_REMOVING & set(key) else set()
        lowered = not more and _lowered(f"{key[-1]}={old}", f"{key[-1]}={new}")
        lines = [n for n, t in added if key[-1] in t]
        lines += [n for n, t in added + removed if lowered and THRESHOLD.search(t)]
        line = lines[0] if lines else None
        if more:
            detail = f"{path}{shown} now lets {', '.join(sorted(more))[:80]} through, hiding errors"
            problems.append(("suppression_added", detail, line))
        elif lowered:
            detail = (
                f"the coverage threshold in {path}{shown} was lowered or removed, so less is tested"
            )
            problems.append(("coverage_lowered", detail, line))
        others = any(t.strip() and not THRESHOLD.search(t) for _, t in removed + added)
        if not (more or lowered) or (lowered and key == LINES and others):
            sections.add(".".join(key[:-1]) or key[0])
    if sections:
        where = "" if sections == {LINES[0]} else f" ({', '.join(sorted(sections))})"
        detail = f"gate configuration in {path}{where} was changed, so gates differ from base's"
        first = added[0][0] if added else None
        problems.append(("gate_config_changed", detail, first))
    return problems
