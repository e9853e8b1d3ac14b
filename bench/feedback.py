"""Feedback compaction: raw gate output against the feedback the agent is shown.

A corpus the benchmark makes itself. Each scenario copies examples/shop into a temporary
directory, seeds failures into it (lint, type and test failures, noise), and runs the real
tools the way a gate runs them: harness's own `run_process` with `sandbox_env` (the sandbox's
environment, PYTEST_ADDOPTS with a JUnit report, caches in a scratch directory), only without
bubblewrap. The output goes through the real pipeline:

    parse_gate_output(...) -> compact(problems) (default budget) -> render_for_agent(feedback, 1)

(the parser gets `harness.gates.runner.output_to_parse(done)`, as in the gate runner: the whole
log when the in-memory output was cut to its head and tail and the log is at most
PARSE_LIMIT_BYTES), and the figures compare:

- raw: the tool's whole stdout+stderr (the gate's log), as a person or an agent running the
  gate's command would get it: the default text output of `ruff check .`, `mypy .`, `pytest -q`;
- feedback: the Markdown render_for_agent returns for attempt 1.

Both are counted in bytes (UTF-8) and in tokens approximated as ceil(characters / 4), the
approximation harness itself uses (`harness.feedback.estimate_tokens`), applied to both sides.
tiktoken is used as a second column only if it is importable (nothing is downloaded).

Retention: the share of the seeded failing test ids and seeded `path:line` locations that
appear verbatim in the feedback (a location counts when `path:line` is not followed by another
digit, so `x.py:1` is not found inside `x.py:12`). The benchmark knows them because it seeded
them; it cross-checks them against what the tools report (ruff and mypy JSON, the JUnit
report, pytest's crash lines) and reports retention of the tool-reported set too.

For ruff and mypy the machine format (`ruff check --output-format=json .`, `mypy -O json .`)
is also run and fed to the parser, to show what each format yields. The feedback figures come
from the text output; the shipped policies run the JSON formats, and the problems / findings
columns show whether the two parse to the same findings.

    .venv/bin/python bench/feedback.py [--only SCENARIO] [--json PATH] [--keep] [--show SCENARIO]

`--keep` leaves the temporary projects and gate logs; `--show` prints one scenario's feedback.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.policy import GateConfig
from harness.feedback import compact, estimate_tokens, render_for_agent
from harness.gates.runner import output_to_parse
from harness.parsers import parse_gate_output
from harness.problems import Problem
from harness.sandbox import PYTEST_ADDOPTS
from harness.sandbox.bubblewrap import sandbox_env
from harness.sandbox.process import run_process

SOURCE = Path(__file__).resolve().parent.parent
EXAMPLE = SOURCE / "examples" / "shop"
GOAL_REDUCTION = 0.90
GOAL_RETENTION = 1.0
TIMEOUT_S = 300.0
COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "*.pyc"
)

LINT = GateConfig(name="lint", kind="lint", command="ruff check .", timeout_s=60)
TYPES = GateConfig(name="types", kind="type", command="mypy .", timeout_s=300)
TESTS = GateConfig(name="tests", kind="test", command="pytest -q", timeout_s=900)
MACHINE_COMMANDS = {
    "lint": "ruff check --output-format=json .",
    "types": "mypy -O json .",
}

PACKAGE = ["shop/cart.py", "shop/catalog.py", "shop/pagination.py", "shop/payments.py"]
PACKAGE += ["shop/pricing.py"]
TEST_FILES = ["tests/test_cart.py", "tests/test_catalog.py", "tests/test_pagination.py"]
TEST_FILES += ["tests/test_payments.py", "tests/test_pricing.py"]
LINT_FILES = ["shop/__init__.py", *PACKAGE, "tests/conftest.py", *TEST_FILES]
# Unused stdlib imports, in ascending order (so two in one file stay isort-sorted).
_STDLIB_A = ["abc", "array", "base64", "bisect", "calendar", "codecs", "copy", "csv", "difflib"]
_STDLIB_B = ["fnmatch", "glob", "gzip", "heapq", "hmac", "json", "locale", "shlex", "string"]
UNUSED_MODULES = sorted([*_STDLIB_A, *_STDLIB_B])
FILLER = " ".join(
    [
        "this comment explains the rounding rule for tax on discounted lines and refers the",
        "reader to the finance team's spreadsheet from the second quarter, revision four, which",
        "nobody has opened since",
    ]
).split()

# One type error each (some with notes): a return type, then the body; {m} is the marker.
TYPE_ERRORS: list[tuple[str, list[str]]] = [
    ("-> int", ['return "seven"  # {m}']),
    ("-> int", ['count: int = "three"  # {m}', "return count"]),
    ("-> int", ["return len(5)  # {m}"]),
    ("-> str", ['return "total: " + 1  # {m}']),
    ("-> int", ["return (1).missing  # {m}"]),
    ("-> str", ["return None  # {m}"]),
    ("(items: list[int]) -> None", ['items.append("x")  # {m}']),
    ("(name: str | None) -> int", ["return len(name)  # {m}"]),
    ("(name: str | None) -> str", ["return name.upper()  # {m}"]),
    ("-> dict[str, int]", ['return {{"a": "b"}}  # {m}']),
    ("(xs: list[str]) -> int", ["return xs[0]  # {m}"]),
    ("-> list[int]", ['return [1, "2"]  # {m}']),
    ("-> list[int]", ["return sorted(3)  # {m}"]),
    ("(value: object) -> int", ["return value + 1  # {m}"]),
    ("-> tuple[int, str]", ["return (1, 2)  # {m}"]),
    ("-> set[int]", ['return {{"a"}}  # {m}']),
    ("-> str", ['return "1.5".strip(1)  # {m}']),
    ("-> int", ['return {{"a": 1}}.get("a")  # {m}']),
    ("-> str", ['return "a".nope()  # {m}']),
    ("(n: int) -> str", ["return n.hex()  # {m}"]),
]


# ---------------------------------------------------------------------------------------------
# Seeding


@dataclass
class Seeded:
    """What a scenario seeded: the findings the feedback must keep."""

    locations: list[str] = field(default_factory=list)
    """`path:line` of every seeded lint or type finding and of every seeded test's crash site."""
    test_ids: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    """Marker tokens on the seeded lines; resolved to `locations` once every file is written."""


class Tree:
    """A copy of examples/shop whose Python files are edited in memory, then written."""

    def __init__(self, root: Path) -> None:
        shutil.copytree(EXAMPLE, root, ignore=COPY_IGNORE)
        self.root = root
        self.files = {
            p.relative_to(root).as_posix(): p.read_text(encoding="utf-8").splitlines()
            for p in sorted(root.rglob("*.py"))
        }

    def first_import(self, rel: str) -> int:
        return next(i for i, line in enumerate(self.files[rel]) if _is_import(line))

    def after_imports(self, rel: str) -> int:
        return max(i for i, line in enumerate(self.files[rel]) if _is_import(line)) + 1

    def append(self, rel: str, lines: list[str]) -> None:
        self.files[rel] += ["", "", *lines]

    def write(self) -> None:
        for rel, lines in self.files.items():
            (self.root / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")

    def locate(self, marker: str) -> str:
        pattern = re.compile(rf"\b{re.escape(marker)}\b")
        hits = [
            f"{rel}:{n}"
            for rel, lines in self.files.items()
            for n, line in enumerate(lines, start=1)
            if pattern.search(line)
        ]
        if len(hits) != 1:
            raise AssertionError(f"marker {marker} found {len(hits)} times: {hits}")
        return hits[0]


def _is_import(line: str) -> bool:
    return line.startswith(("import ", "from "))


def seed_unused_import(tree: Tree, rel: str, module: str, marker: str) -> None:
    """`import <module> as <marker>` at the top of the file's import block (F401)."""
    at = tree.first_import(rel)
    first_module = tree.files[rel][at].split()[1].split(".")[0]
    block = [f"import {module} as {marker}"]
    if first_module not in sys.stdlib_module_names:
        block.append("")  # a stdlib section of its own before third-party / first-party
    tree.files[rel][at:at] = block


def seed_long_line(tree: Tree, rel: str, marker: str, rng: random.Random) -> None:
    """A comment of 101-160 characters somewhere after the imports, indented like its
    neighbour (E501). Not in the blank lines that close the import block: isort (I001) wants
    those left alone."""
    lines = tree.files[rel]
    at = rng.randint(tree.after_imports(rel) + 3, len(lines))
    neighbour = lines[at] if at < len(lines) else ""
    indent = neighbour[: len(neighbour) - len(neighbour.lstrip())]
    length = rng.randint(101, 160)
    words = [f"# {marker}:"]
    offset = rng.randrange(len(FILLER))
    while len(indent + " ".join(words)) < length:
        words.append(FILLER[(offset + len(words)) % len(FILLER)])
    lines.insert(at, indent + " ".join(words))


def seed_type_error(tree: Tree, rel: str, template: int, marker: str) -> None:
    signature, body = TYPE_ERRORS[template % len(TYPE_ERRORS)]
    params, returns = signature.split(" -> ") if signature.startswith("(") else ("()", signature)
    returns = returns.removeprefix("-> ")
    lines = [f"def _{marker}{params} -> {returns}:"]
    lines += ["    " + line.format(m=marker) for line in body]
    tree.append(rel, lines)


def seed_chain(tree: Tree, rel: str, name: str, depth: int, marker: str) -> None:
    """`depth` package helpers calling one another, the last raising: a deep traceback."""
    lines: list[str] = []
    for step in range(depth):
        lines += [
            f"def {name}_{step}(order: dict[str, int]) -> int:",
            f'    """Step {step} of the order check: drop what step {step} does not accept."""',
            f"    checked = {{sku: qty for sku, qty in order.items() if qty > {step - 2}}}",
        ]
        if step < depth - 1:
            lines += [f"    return {name}_{step + 1}(checked) + len(checked)", "", ""]
        else:
            lines += [
                "    if len(checked) < 5:",
                f'        message = f"order check failed at step {step}: {{sorted(checked)}}"',
                f"        raise ValueError(message)  # {marker}",
                "    return len(checked)",
            ]
    tree.append(rel, lines)


def seed_assertion_test(tree: Tree, rel: str, marker: str, size: int) -> str:
    name = f"test_{marker}_price_table"
    tree.append(
        rel,
        [
            f"def {name}() -> None:",
            f"    table = {{f'SKU-{{n:03d}}': round(n * 1.075, 2) for n in range({size})}}",
            f"    expected = {{f'SKU-{{n:03d}}': round(n * 1.07, 2) for n in range({size})}}",
            f"    assert table == expected  # {marker}",
        ],
    )
    return f"{rel}::{name}"


def seed_deep_test(tree: Tree, rel: str, package: str, marker: str, depth: int) -> str:
    module = package.removesuffix(".py").replace("/", ".")
    helper = f"_{marker}_check"
    seed_chain(tree, package, helper, depth, marker)
    name = f"test_{marker}_order_check"
    tree.append(
        rel,
        [
            f"def {name}() -> None:",
            f"    from {module} import {helper}_0",
            "",
            f'    assert {helper}_0({{"MUG-01": 2, "TEA-03": 1, "POT-02": 0}}) == 3',
        ],
    )
    return f"{rel}::{name}"


def seed_lint(tree: Tree, seeded: Seeded, count: int, rng: random.Random) -> None:
    """`count` findings, half unused imports (F401), half long lines (E501), over 12 files."""
    imports = count // 2
    for i in range(count):
        rel = LINT_FILES[i % len(LINT_FILES)]
        marker = f"seed_l{i:03d}"
        if i < imports:
            # Later insertions land above earlier ones: give them earlier module names.
            seed_unused_import(tree, rel, UNUSED_MODULES[imports - 1 - i], marker)
        else:
            seed_long_line(tree, rel, marker, rng)
        seeded.markers.append(marker)


def seed_types(tree: Tree, seeded: Seeded, count: int) -> None:
    for i in range(count):
        rel = [*PACKAGE, *TEST_FILES][i % (len(PACKAGE) + len(TEST_FILES))]
        marker = f"seed_t{i:03d}"
        seed_type_error(tree, rel, i, marker)
        seeded.markers.append(marker)


def seed_failing_tests(tree: Tree, seeded: Seeded, count: int, *, first: int = 0) -> None:
    """Alternately an assertion on a 40-entry dict and a 8-deep chain of package helpers."""
    for i in range(first, first + count):
        rel = TEST_FILES[i % len(TEST_FILES)]
        marker = f"seed_x{i:03d}"
        if i % 2 == 0:
            test_id = seed_assertion_test(tree, rel, marker, size=40)
        else:
            test_id = seed_deep_test(tree, rel, PACKAGE[i % len(PACKAGE)], marker, depth=8)
        seeded.test_ids.append(test_id)
        seeded.markers.append(marker)


def seed_parametrized(tree: Tree, seeded: Seeded) -> None:
    """The shop's real page_count bug: fails for 10 and 12 per page, passes for 25."""
    rel, marker = "tests/test_pagination.py", "seed_p000"
    name = f"test_{marker}_page_count"
    tree.append(
        rel,
        [
            '@pytest.mark.parametrize("per_page", [10, 12, 25])',
            f"def {name}(per_page: int) -> None:",
            f"    assert page_count(120, per_page) == -(-120 // per_page)  # {marker}",
        ],
    )
    seeded.test_ids += [f"{rel}::{name}[10]", f"{rel}::{name}[12]"]
    seeded.markers.append(marker)


def seed_noise(tree: Tree, seeded: Seeded, *, log_lines: int, warnings: int) -> None:
    """A test printing `log_lines` lines and then failing; a passing test raising `warnings`
    distinct DeprecationWarnings from the package."""
    tree.append(
        "shop/catalog.py",
        [
            "def legacy_price(sku: str) -> Decimal:",
            '    """Deprecated: use Catalog.get(sku).price."""',
            "    import warnings",
            "",
            "    message = f'legacy_price({sku!r}) is deprecated; use Catalog.get().price'",
            "    warnings.warn(message, DeprecationWarning, stacklevel=2)",
            "    return Decimal(0)",
        ],
    )
    rel, marker = "tests/test_catalog.py", "seed_n000"
    name = f"test_{marker}_bulk_import"
    tree.append(
        rel,
        [
            f"def {name}() -> None:",
            "    imported = 0",
            f"    for n in range({log_lines}):",
            '        print(f"2026-11-22T11:{n // 60 % 60:02d}:{n % 60:02d} INFO shop.import: "',
            '              f"row {n} sku=SKU-{n:05d} qty={n % 7} ok")',
            "        imported += n % 7 != 3",
            f"    assert imported == {log_lines}  # {marker}",
        ],
    )
    tree.append(
        rel,
        [
            "def test_seed_n001_legacy_prices() -> None:",
            "    from shop.catalog import legacy_price",
            "",
            f"    assert sum(legacy_price(f'SKU-{{n:05d}}') for n in range({warnings})) == 0",
        ],
    )
    seeded.test_ids.append(f"{rel}::{name}")
    seeded.markers.append(marker)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    gates: list[GateConfig]
    seed: Callable[[Tree, Seeded], None]


def _lint(tree: Tree, seeded: Seeded) -> None:
    seed_lint(tree, seeded, 30, random.Random(1))


def _types(tree: Tree, seeded: Seeded) -> None:
    seed_types(tree, seeded, 20)


def _tests(tree: Tree, seeded: Seeded) -> None:
    seed_failing_tests(tree, seeded, 8)
    seed_parametrized(tree, seeded)


def _mix(tree: Tree, seeded: Seeded) -> None:
    seed_lint(tree, seeded, 6, random.Random(2))
    seed_types(tree, seeded, 5)
    seed_failing_tests(tree, seeded, 4, first=20)
    seed_noise(tree, seeded, log_lines=5000, warnings=2000)


def _big(tree: Tree, seeded: Seeded) -> None:
    rng = random.Random(3)
    for i in range(300):
        marker = f"seed_b{i:03d}"
        seed_long_line(tree, LINT_FILES[i % len(LINT_FILES)], marker, rng)
        seeded.markers.append(marker)


SCENARIOS = [
    Scenario(
        "lint", "15 unused imports (F401) + 15 long lines (E501) over 12 files", [LINT], _lint
    ),
    Scenario("types", "20 type errors (20 kinds) over 10 modules, mypy --strict", [TYPES], _types),
    Scenario(
        "tests",
        "10 failing test ids: 4 dict assertions, 4 through 8-deep package helper chains, "
        "2 parametrized cases",
        [TESTS],
        _tests,
    ),
    Scenario(
        "mix",
        "all 3 gates: 6 lint + 5 type findings; 5 failing tests, one printing 5,000 log lines, "
        "plus a passing test raising 2,000 distinct DeprecationWarnings",
        [LINT, TYPES, TESTS],
        _mix,
    ),
    Scenario("big", "300 long lines (E501) over 12 files", [LINT], _big),
]


# ---------------------------------------------------------------------------------------------
# Running the gates and measuring


@dataclass
class GateFigures:
    gate: str
    command: str
    exit_code: int
    duration_s: float
    raw_bytes: int
    raw_tokens: int
    parser_input_bytes: int
    """What harness hands the parser: the whole log when the in-memory output was cut and the
    log is at most the runner's PARSE_LIMIT_BYTES, else the output capped to head and tail."""
    output_cut_bytes: int
    problems: int
    findings: int
    machine_command: str | None = None
    machine_bytes: int | None = None
    machine_tokens: int | None = None
    machine_problems: int | None = None
    machine_findings: int | None = None
    tool_locations: list[str] = field(default_factory=list)
    tool_test_ids: list[str] = field(default_factory=list)


def _tokens_tiktoken() -> Callable[[str], int] | None:
    try:
        import tiktoken  # type: ignore[import-not-found, unused-ignore]

        encoding = tiktoken.get_encoding("cl100k_base")
    except Exception:  # not installed, or its vocabulary is not cached offline
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count


def _findings(problems: list[Problem]) -> int:
    return sum(len(p.errors) or 1 for p in problems)


def _ruff_locations(output: str, root: Path) -> list[str]:
    found = []
    for item in json.loads(output or "[]"):
        rel = Path(item["filename"]).resolve().relative_to(root.resolve()).as_posix()
        found.append(f"{rel}:{item['location']['row']}")
    return found


def _mypy_locations(output: str) -> list[str]:
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            if item.get("severity") == "error":
                found.append(f"{item['file']}:{item['line']}")
    return found


_CRASH = re.compile(r"^([^\s:]+\.py):(\d+): [A-Za-z_][\w.]*$", re.MULTILINE)


def _junit_failures(path: Path) -> list[str]:
    ids = []
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").replace(".", "/") + ".py"
            ids.append(f"{module}::{case.get('name')}")
    return ids


def run_gate(
    gate: GateConfig, root: Path, scratch: Path, logs: Path, scenario: str
) -> tuple[GateFigures, list[Problem], list[Problem]]:
    """The gate's figures, the problems harness gets (from the capped output) and, for
    diagnosis only, the problems the whole log would give."""
    env = sandbox_env(scratch)
    junit = scratch / "reports" / f"{scenario}-{gate.name}.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    env["PYTEST_ADDOPTS"] = f"{PYTEST_ADDOPTS} --junitxml={junit}"
    log = logs / f"{scenario}-{gate.name}.log"
    done = run_process(
        ["/bin/sh", "-c", gate.command], cwd=root, env=env, timeout_s=TIMEOUT_S, log_path=log
    )
    raw = log.read_text(encoding="utf-8", errors="replace")

    def parse(output: str) -> list[Problem]:
        return parse_gate_output(
            gate,
            output,
            root=root,
            junit_xml=junit if junit.is_file() else None,
            exit_code=done.exit_code,
            log=str(log),
            instance=f"bench/{scenario}/attempt-1/{gate.name}",
        )

    # What the gate runner parses: the whole log when the in-memory output was cut (up to
    # harness.gates.runner.PARSE_LIMIT_BYTES), else the capped output.
    parser_input = output_to_parse(done)
    problems = parse(parser_input)
    uncapped = problems if parser_input == raw or not done.output_cut_bytes else parse(raw)
    figures = GateFigures(
        gate=gate.name,
        command=gate.command,
        exit_code=done.exit_code,
        duration_s=round(done.duration_s, 2),
        raw_bytes=len(raw.encode()),
        raw_tokens=estimate_tokens(raw),
        parser_input_bytes=len(parser_input.encode()),
        output_cut_bytes=done.output_cut_bytes,
        problems=len(problems),
        findings=_findings(problems),
    )
    if gate.kind == "test":
        figures.tool_test_ids = _junit_failures(junit) if junit.is_file() else []
        figures.tool_locations = [f"{m[1]}:{m[2]}" for m in _CRASH.finditer(raw)]
    machine = MACHINE_COMMANDS.get(gate.name)
    if machine is not None:
        machine_gate = gate.model_copy(update={"command": machine})
        machine_log = logs / f"{scenario}-{gate.name}-machine.log"
        other = run_process(
            ["/bin/sh", "-c", machine], cwd=root, env=env, timeout_s=TIMEOUT_S, log_path=machine_log
        )
        text = machine_log.read_text(encoding="utf-8", errors="replace")
        parsed = parse_gate_output(
            machine_gate,
            output_to_parse(other),
            root=root,
            junit_xml=None,
            exit_code=other.exit_code,
            log=str(machine_log),
            instance=f"bench/{scenario}/attempt-1/{gate.name}",
        )
        figures.machine_command = machine
        figures.machine_bytes = len(text.encode())
        figures.machine_tokens = estimate_tokens(text)
        figures.machine_problems = len(parsed)
        figures.machine_findings = _findings(parsed)
        if gate.name == "lint":
            figures.tool_locations = _ruff_locations(text, root)
        else:
            figures.tool_locations = _mypy_locations(text)
    return figures, problems, uncapped


def _ordered(items: set[str]) -> list[str]:
    """Locations by path, then line as a number; test ids after them."""

    def key(item: str) -> tuple[int, str, int, str]:
        path, _, line = item.rpartition(":")
        return (0, path, int(line), "") if line.isdigit() else (1, "", 0, item)

    return sorted(items, key=key)


def present(location: str, text: str) -> bool:
    """`path:line` verbatim in text, not followed by another digit."""
    return re.search(re.escape(location) + r"(?!\d)", text) is not None


def breakdown(rendered: str) -> dict[str, int]:
    """Where the feedback's tokens go, by kind of line (ceil(chars/4) per kind)."""
    chars = {"front matter": 0, "headings": 0, "finding lines": 0, "detail lines": 0}
    chars |= {"source context": 0, "what to do": 0}
    lines = rendered.splitlines()
    in_front = in_fence = in_advice = False
    for n, line in enumerate(lines):
        size = len(line) + 1
        if n == 0 and line == "---":
            in_front = True
            kind = "front matter"
        elif in_front:
            in_front = line != "---"
            kind = "front matter"
        elif line.startswith("## What to do") or in_advice:
            in_advice = True
            kind = "what to do"
        elif line.startswith("```") or in_fence:
            in_fence = not in_fence if line.startswith("```") else in_fence
            kind = "source context"
        elif line.startswith("#"):
            kind = "headings"
        elif line.startswith("- "):
            kind = "finding lines"
        else:
            kind = "detail lines"
        chars[kind] += size
    return {kind: math.ceil(n / 4) for kind, n in chars.items()}


def run_scenario(
    scenario: Scenario, base: Path, count_tiktoken: Callable[[str], int] | None
) -> dict[str, Any]:
    started = time.perf_counter()
    tree = Tree(base / scenario.name / "shop")
    seeded = Seeded()
    scenario.seed(tree, seeded)
    tree.write()
    seeded.locations = [tree.locate(marker) for marker in seeded.markers]
    scratch = base / "scratch"  # shared by every scenario: one warm mypy cache
    logs = base / scenario.name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(exist_ok=True)

    gates: list[GateFigures] = []
    problems: list[Problem] = []
    uncapped: list[Problem] = []
    raw_text = ""
    for gate in scenario.gates:
        figures, found, found_uncapped = run_gate(gate, tree.root, scratch, logs, scenario.name)
        gates.append(figures)
        problems += found
        uncapped += found_uncapped
        raw_text += (logs / f"{scenario.name}-{gate.name}.log").read_text(
            encoding="utf-8", errors="replace"
        )
    feedback = compact(problems)
    rendered = render_for_agent(feedback, 1)

    tool_locations = sorted({loc for g in gates for loc in g.tool_locations})
    tool_ids = sorted({i for g in gates for i in g.tool_test_ids})
    seeded_locations, seeded_ids = sorted(set(seeded.locations)), sorted(set(seeded.test_ids))
    kept_locations = [loc for loc in seeded_locations if present(loc, rendered)]
    kept_ids = [i for i in seeded_ids if i in rendered]
    tool_kept_locations = [loc for loc in tool_locations if present(loc, rendered)]
    tool_kept_ids = [i for i in tool_ids if i in rendered]
    raw_bytes, raw_tokens = len(raw_text.encode()), estimate_tokens(raw_text)
    fb_bytes, fb_tokens = len(rendered.encode()), estimate_tokens(rendered)
    wanted = len(seeded_locations) + len(seeded_ids)
    tool_wanted = len(tool_locations) + len(tool_ids)
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "gates": [vars(g) for g in gates],
        "raw_bytes": raw_bytes,
        "raw_tokens": raw_tokens,
        "feedback_bytes": fb_bytes,
        "feedback_tokens": fb_tokens,
        "feedback_tokens_reported": feedback.tokens,
        "reduction_tokens": 1 - fb_tokens / raw_tokens,
        "reduction_bytes": 1 - fb_bytes / raw_bytes,
        "problems_raw": len(problems),
        "problems_compacted": len(feedback.problems),
        "truncated": feedback.truncated,
        "seeded_locations": len(seeded_locations),
        "seeded_test_ids": len(seeded_ids),
        "kept_locations": len(kept_locations),
        "kept_test_ids": len(kept_ids),
        "retention": (len(kept_locations) + len(kept_ids)) / wanted if wanted else 1.0,
        "missing": _ordered(set(seeded_locations + seeded_ids) - set(kept_locations + kept_ids)),
        "tool_locations": len(tool_locations),
        "tool_test_ids": len(tool_ids),
        "tool_retention": (
            (len(tool_kept_locations) + len(tool_kept_ids)) / tool_wanted if tool_wanted else 1.0
        ),
        "tool_missing": _ordered(
            set(tool_locations + tool_ids) - set(tool_kept_locations + tool_kept_ids)
        ),
        "seeded_not_reported": _ordered(
            set(seeded_locations + seeded_ids) - set(tool_locations + tool_ids)
        ),
        "reported_not_seeded": _ordered(
            set(tool_locations + tool_ids) - set(seeded_locations + seeded_ids)
        ),
        "feedback_token_breakdown": breakdown(rendered),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "feedback": rendered,
    }
    if any(g.parser_input_bytes < g.raw_bytes for g in gates):
        # Diagnosis, not the measured pipeline: the same compaction fed the whole log instead
        # of the capped output (a log over PARSE_LIMIT_BYTES), to tell losses of the cap from
        # losses of compaction.
        whole = render_for_agent(compact(uncapped), 1)
        kept = [x for x in seeded_locations if present(x, whole)]
        kept += [i for i in seeded_ids if i in whole]
        result["uncapped"] = {
            "findings": _findings(uncapped),
            "feedback_bytes": len(whole.encode()),
            "feedback_tokens": estimate_tokens(whole),
            "reduction_tokens": 1 - estimate_tokens(whole) / raw_tokens,
            "retention": len(kept) / wanted if wanted else 1.0,
        }
    if count_tiktoken is not None:
        result["raw_tiktoken"] = count_tiktoken(raw_text)
        result["feedback_tiktoken"] = count_tiktoken(rendered)
    result["goal_met"] = (
        result["reduction_tokens"] >= GOAL_REDUCTION and result["retention"] >= GOAL_RETENTION
    )
    return result


def run(only: list[str] | None = None, keep: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    count_tiktoken = _tokens_tiktoken()
    base = Path(tempfile.mkdtemp(prefix="harness-bench-feedback-"))
    try:
        scenarios = [s for s in SCENARIOS if not only or s.name in only]
        results = [run_scenario(s, base, count_tiktoken) for s in scenarios]
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    totals = {
        key: sum(r[key] for r in results)
        for key in ("raw_bytes", "raw_tokens", "feedback_bytes", "feedback_tokens")
    }
    totals["reduction_tokens"] = 1 - totals["feedback_tokens"] / totals["raw_tokens"]
    totals["reduction_bytes"] = 1 - totals["feedback_bytes"] / totals["raw_bytes"]
    for key in ("seeded_test_ids", "kept_test_ids", "seeded_locations", "kept_locations"):
        totals[key] = sum(r[key] for r in results)
    wanted = totals["seeded_locations"] + totals["seeded_test_ids"]
    kept = totals["kept_locations"] + totals["kept_test_ids"]
    totals["retention"] = kept / wanted if wanted else 1.0
    totals["scenarios_meeting_goal"] = sum(r["goal_met"] for r in results)
    return {
        "tokens": "ceil(chars / 4) for raw and feedback alike"
        + ("; tiktoken cl100k_base as a second column" if count_tiktoken else ""),
        "goal": {"reduction_tokens": GOAL_REDUCTION, "retention": GOAL_RETENTION},
        "scenarios": results,
        "totals": totals,
        "kept_dir": str(base) if keep else None,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


# ---------------------------------------------------------------------------------------------
# Reporting


def _some(items: list[str], shown: int = 8) -> str:
    return ", ".join(items[:shown]) + (" …" if len(items) > shown else "")


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def markdown(result: dict[str, Any]) -> str:
    tik = any("raw_tiktoken" in r for r in result["scenarios"])
    head = "| scenario | raw bytes | raw tokens | feedback bytes | feedback tokens |"
    head += " tiktoken raw → feedback |" if tik else ""
    head += " token reduction | test ids kept | path:line kept | truncated | goal |"
    lines = [
        f"Feedback compaction: {len(result['scenarios'])} seeded scenarios on examples/shop, "
        f"real ruff / mypy / pytest, {result['elapsed_s']} s. Tokens: {result['tokens']}.",
        "",
        head,
        "|---" + "|---:" * (head.count("|") - 2) + "|",
    ]
    for r in result["scenarios"]:
        row = (
            f"| {r['scenario']} | {r['raw_bytes']:,} | {r['raw_tokens']:,} "
            f"| {r['feedback_bytes']:,} | {r['feedback_tokens']:,} |"
        )
        if tik:
            row += f" {r.get('raw_tiktoken', 0):,} → {r.get('feedback_tiktoken', 0):,} |"
        row += (
            f" {_pct(r['reduction_tokens'])} | {r['kept_test_ids']}/{r['seeded_test_ids']} "
            f"| {r['kept_locations']}/{r['seeded_locations']} "
            f"| {'yes' if r['truncated'] else 'no'} | {'met' if r['goal_met'] else 'NOT met'} |"
        )
        lines.append(row)
    t = result["totals"]
    goal = result["goal"]
    total = (
        f"| **total** | {t['raw_bytes']:,} | {t['raw_tokens']:,} | {t['feedback_bytes']:,} "
        f"| {t['feedback_tokens']:,} |"
    )
    if tik:
        total += " |"
    total += (
        f" {_pct(t['reduction_tokens'])} | {t['kept_test_ids']}/{t['seeded_test_ids']} "
        f"| {t['kept_locations']}/{t['seeded_locations']} | | "
        f"{t['scenarios_meeting_goal']}/{len(result['scenarios'])} met |"
    )
    lines += [
        total,
        "",
        f"Goal, per scenario: at least {_pct(goal['reduction_tokens'])} fewer tokens than the raw "
        f"output and {_pct(goal['retention'])} of the seeded failing test ids and `path:line` "
        f"locations verbatim in the feedback (overall: {_pct(t['retention'])}). Raw: the whole "
        "text output of the gate commands; feedback: render_for_agent(compact(problems), 1).",
    ]

    for r in result["scenarios"]:
        lines += ["", f"### {r['scenario']}: {r['description']}", ""]
        lines += [
            "| gate | raw (text) bytes / tokens | parser input bytes | problems / findings "
            "(text) | machine format | bytes / tokens | problems / findings (machine) | "
            "exit | s |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for g in r["gates"]:
            machine = (
                f"`{g['machine_command']}` | {g['machine_bytes']:,} / {g['machine_tokens']:,} "
                f"| {g['machine_problems']} / {g['machine_findings']}"
                if g["machine_command"]
                else "JUnit XML (`--junitxml`) | | "
            )
            lines.append(
                f"| {g['gate']} `{g['command']}` | {g['raw_bytes']:,} / {g['raw_tokens']:,} "
                f"| {g['parser_input_bytes']:,} | {g['problems']} / {g['findings']} | {machine} "
                f"| {g['exit_code']} | {g['duration_s']} |"
            )
        parts = ", ".join(f"{k} {v:,}" for k, v in r["feedback_token_breakdown"].items() if v)
        lines += [
            "",
            f"- problems: {r['problems_raw']} parsed → {r['problems_compacted']} compacted; "
            f"feedback {r['feedback_tokens']:,} tokens (compact() reports "
            f"{r['feedback_tokens_reported']:,}), truncated: {r['truncated']}",
            f"- feedback tokens by kind of line: {parts}",
            f"- retention of seeded ids and locations: {_pct(r['retention'])}"
            + (f"; missing ({len(r['missing'])}): {_some(r['missing'])}" if r["missing"] else ""),
            f"- cross-check, tool-reported ({r['tool_test_ids']} failing ids from JUnit, "
            f"{r['tool_locations']} locations from ruff/mypy JSON and pytest crash lines): "
            f"{_pct(r['tool_retention'])} kept"
            + (
                f"; missing ({len(r['tool_missing'])}): {_some(r['tool_missing'])}"
                if r["tool_missing"]
                else ""
            ),
        ]
        whole_logs = [
            f"{g['gate']} {g['output_cut_bytes']:,} of {g['raw_bytes']:,} bytes"
            for g in r["gates"]
            if g["output_cut_bytes"] and g["parser_input_bytes"] >= g["raw_bytes"]
        ]
        if whole_logs:
            lines.append(
                f"- the output cap cut the middle of the in-memory output ({', '.join(whole_logs)})"
                "; as the gate runner does, the parser got the whole log instead"
            )
        if "uncapped" in r:
            u = r["uncapped"]
            cut = ", ".join(
                f"{g['gate']} {g['output_cut_bytes']:,} of {g['raw_bytes']:,} bytes"
                for g in r["gates"]
                if g["parser_input_bytes"] < g["raw_bytes"]
            )
            lines.append(
                f"- the output cap cut the middle of the output the parser gets ({cut}); "
                f"diagnosis only, the whole log through the same parser and compaction: "
                f"{u['findings']} findings, {u['feedback_tokens']:,} tokens "
                f"({_pct(u['reduction_tokens'])} fewer), retention {_pct(u['retention'])}"
            )
        if r["seeded_not_reported"]:
            lines.append(
                f"- seeded but not reported by the tools: {', '.join(r['seeded_not_reported'])}"
            )
        if r["reported_not_seeded"]:
            extra = r["reported_not_seeded"]
            lines.append(
                f"- reported by the tools but not seeded ({len(extra)}): {', '.join(extra[:10])}"
                + (" …" if len(extra) > 10 else "")
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Raw gate output against compacted feedback.")
    parser.add_argument("--only", choices=[s.name for s in SCENARIOS], action="append")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--show", choices=[s.name for s in SCENARIOS], help="also print this scenario's feedback"
    )
    args = parser.parse_args(argv)
    result = run(args.only, keep=args.keep)
    print(markdown(result))
    if args.show:
        shown = next(r for r in result["scenarios"] if r["scenario"] == args.show)
        print(f"\n#### feedback for {args.show}\n\n````markdown\n{shown['feedback']}````")
    if result["kept_dir"]:
        print(f"\nkept: {result['kept_dir']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
