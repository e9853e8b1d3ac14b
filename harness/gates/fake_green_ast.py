"""Assertions weakened in tests that exist on both sides, found on the syntax tree.

A count of assertions misses a test made weaker with as many assertions as before:
`assert f(x) == 'y'` becoming `assert f(x)`, a comparison or an expected value changed,
`pytest.approx`'s or `assertAlmostEqual`'s tolerance widened, a checking loop's range narrowed,
a parametrize list cut. So each test function (by qualified name) present in base and head is
compared by its checks: every `assert`'s test, every `assert*(...)` call, `pytest.raises/warns`
calls, the iterables of loops whose body checks something, and `parametrize` decorators, each as
a normalised `ast.dump` (no positions). A check of the base missing from the head is a finding.

Tests renamed, added or removed are not compared here (fake_green.py reports removed ones).
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass

SHOWN_CHARS = 80


@dataclass(frozen=True)
class Weakened:
    test: str
    """Qualified name: `test_x` or `TestC.test_x`."""
    line: int
    """The test's line in the head."""
    change: str
    """What happened, e.g. "`assert f(x) == 'y'` became `assert f(x)`"."""


def weakened_assertions(before_src: str, after_src: str) -> list[Weakened]:
    """Per test present on both sides, its first weakened or removed check; [] when either
    side does not parse."""
    try:
        before, after = _tests(ast.parse(before_src)), _tests(ast.parse(after_src))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found: list[Weakened] = []
    for name, (_, old) in before.items():
        if name not in after:
            continue
        line, new = after[name]
        change = _first_change(old, new)
        if change is not None:
            found.append(Weakened(name, line, change))
    return found


Check = tuple[str, str]
"""(normalised ast.dump, source text to show)."""


def _tests(tree: ast.Module) -> dict[str, tuple[int, list[Check]]]:
    found: dict[str, tuple[int, list[Check]]] = {}
    _walk(tree.body, "", found)
    return found


def _walk(body: list[ast.stmt], prefix: str, found: dict[str, tuple[int, list[Check]]]) -> None:
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            found[prefix + node.name] = (node.lineno, _checks(node))
        elif isinstance(node, ast.ClassDef):
            _walk(node.body, f"{prefix}{node.name}.", found)


def _checks(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Check]:
    checks = [_check(d, "@") for d in function.decorator_list if _is_parametrize(d)]
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            checks.append(_check(node.test, "assert "))
        elif isinstance(node, ast.Call) and _is_check_call(node):
            checks.append(_check(node, ""))
        elif isinstance(node, ast.For | ast.AsyncFor) and _checks_inside(node):
            loop = ast.Tuple(elts=[node.target, node.iter], ctx=ast.Load())
            shown = f"for {ast.unparse(node.target)} in {ast.unparse(node.iter)}"
            checks.append((ast.dump(loop), shown))
    return checks


def _check(node: ast.expr, prefix: str) -> Check:
    return ast.dump(node), prefix + ast.unparse(node)


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_check_call(call: ast.Call) -> bool:
    name = _name(call.func)
    return name.startswith("assert") or name in ("raises", "warns", "deprecated_call")


def _is_parametrize(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Call) and _name(decorator.func) == "parametrize"


def _checks_inside(loop: ast.For | ast.AsyncFor) -> bool:
    return any(
        isinstance(n, ast.Assert) or (isinstance(n, ast.Call) and _is_check_call(n))
        for statement in loop.body
        for n in ast.walk(statement)
    )


def _first_change(old: list[Check], new: list[Check]) -> str | None:
    """The first check of `old` not in `new` (as many times), paired with the first check of
    `new` not in `old` when there is one: what it most likely became. A check kept whole
    inside a new one (`assert f(x)` becoming `assert f(x) == 'y'`) was strengthened, not lost."""
    missing, extra = _unmatched(old, new), _unmatched(new, old)
    missing = [(d, s) for d, s in missing if not any(d in e for e, _ in extra)]
    if not missing:
        return None
    gone = f"`{missing[0][1][:SHOWN_CHARS]}`"
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    if extra:
        return f"{gone} became `{extra[0][1][:SHOWN_CHARS]}`{more}"
    return f"{gone} was removed{more}"


def _unmatched(checks: list[Check], others: list[Check]) -> list[Check]:
    """The checks not in `others`, counting repeats."""
    left = Counter(dump for dump, _ in others)
    unmatched: list[Check] = []
    for dump, shown in checks:
        if left[dump] > 0:
            left[dump] -= 1
        else:
            unmatched.append((dump, shown))
    return unmatched
