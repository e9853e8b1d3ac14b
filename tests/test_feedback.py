"""Feedback compaction (harness/feedback.py): dedupe, grouping, gate order, the diff between
attempts, the token budget, and what always survives it."""

from __future__ import annotations

import yaml

from harness.feedback import (
    Feedback,
    compact,
    estimate_tokens,
    render_for_agent,
)
from harness.problems import Location, Problem, ProblemItem, problem_type, render_markdown

LINT = problem_type("lint-finding")
TYPE = problem_type("type-error")
TEST = problem_type("test-failed")


def context(line: int, text: str) -> str:
    return "\n".join(
        f"{'>' if n == line else ' '} {n:3} | {text if n == line else 'pass'}"
        for n in range(line - 3, line + 4)
    )


def lint(path: str, line: int, code: str, message: str, col: int = 1) -> Problem:
    return Problem(
        type=LINT,
        title="Lint finding",
        detail=message,
        gate="lint",
        command="ruff check .",
        exit_code=1,
        code=code,
        location=Location(path=path, line=line, column=col),
        context=context(line, f"# {code} here"),
    )


def mypy(path: str, line: int, code: str, message: str) -> Problem:
    return Problem(
        type=TYPE,
        title="Type error",
        detail=message,
        gate="types",
        command="mypy .",
        exit_code=1,
        code=code,
        location=Location(path=path, line=line, column=5),
        context=context(line, "return total"),
    )


def traceback(frames: int = 40) -> str:
    lines = ["AssertionError: assert 0 == 1", " +  where 0 = clamp_page(5, 0, 10)"]
    for n in range(frames):
        lines.append(f'  File "shop/module_{n}.py", line {n + 10}, in helper_{n}')
        lines.append(f"    result = helper_{n + 1}(value, page={n})")
    return "\n".join(lines)


def failing_test(test_id: str, line: int, pre_existing: bool = False) -> Problem:
    path = test_id.split("::")[0]
    return Problem(
        type=TEST,
        title="Test failed",
        detail=traceback(),
        gate="tests",
        command="pytest -q",
        exit_code=1,
        code="AssertionError",
        location=Location(path=path, line=line),
        test_id=test_id,
        context=context(line, "assert clamp_page(5, 0, 10) == 1"),
        pre_existing=pre_existing,
    )


def infrastructure() -> Problem:
    return Problem(
        type=problem_type("gate-timeout"),
        title="Gate timed out",
        detail="pytest -q ran past its 900 s timeout.\nThe sandbox was killed.\nRe-run by policy.",
        gate="tests",
        command="pytest -q",
        exit_code=None,
        category="infrastructure",
        retryable=True,
        context="last output:\n" + "\n".join(f"tests/test_slow.py::test_{n} ..." for n in range(8)),
    )


LINT_PROBLEMS = [
    lint("shop/cart.py", 1, "F401", "`os` imported but unused", col=8),
    lint("shop/cart.py", 2, "F401", "`sys` imported but unused", col=8),
    lint("shop/cart.py", 40, "E501", "Line too long (120 > 100)", col=101),
    lint("shop/pagination.py", 3, "F401", "`math` imported but unused", col=8),
    lint("shop/pagination.py", 12, "E501", "Line too long (104 > 100)", col=101),
    lint("shop/pagination.py", 30, "E501", "Line too long (131 > 100)", col=101),
]
TYPE_PROBLEMS = [
    mypy("shop/cart.py", 22, "return-value", 'Incompatible return value type (got "str")'),
    mypy(
        "shop/orders.py",
        8,
        "arg-type",
        'Argument 1 to "total" of "Cart" has incompatible type "list[str]"; expected '
        '"Sequence[Decimal]" (and the second argument "currency" of type "str | None" as well)',
    ),
]
TEST_IDS = [
    "tests/test_pagination.py::test_clamp_page",
    "tests/test_pagination.py::test_last_page",
    "tests/test_cart.py::test_total",
]
TEST_PROBLEMS = [
    failing_test(TEST_IDS[0], 50),
    failing_test(TEST_IDS[1], 71),
    failing_test(TEST_IDS[2], 12, pre_existing=True),
]
ALL = [*LINT_PROBLEMS, *TYPE_PROBLEMS, *TEST_PROBLEMS, infrastructure()]
BIG = 100_000


def locations(problems: list[Problem]) -> list[str]:
    return [f"{p.location.path}:{p.location.line}" for p in problems if p.location]


def test_estimate_tokens_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


def test_identical_problems_from_a_gate_run_twice_collapse() -> None:
    once = compact(ALL, max_tokens=BIG)
    twice = compact(ALL + [p.model_copy(deep=True) for p in ALL], max_tokens=BIG)
    assert twice.raw_count == 2 * len(ALL)
    assert twice.problems == once.problems
    assert len({p.key() for p in twice.problems}) == len(twice.problems)


def test_findings_of_one_code_in_one_file_become_one_problem_with_its_items() -> None:
    feedback = compact(LINT_PROBLEMS, max_tokens=BIG)
    by_subject = {(p.location.path if p.location else "", p.code): p for p in feedback.problems}
    assert len(feedback.problems) == 4  # F401, E501 in cart.py; F401, E501 in pagination.py
    group = by_subject[("shop/cart.py", "F401")]
    assert [str(item.location) for item in group.errors] == ["shop/cart.py:1:8", "shop/cart.py:2:8"]
    assert [item.message for item in group.errors] == [
        "`os` imported but unused",
        "`sys` imported but unused",
    ]
    assert all(item.context and "F401 here" in item.context for item in group.errors)
    assert len(by_subject[("shop/pagination.py", "E501")].errors) == 2
    # A lone finding stays a plain problem.
    lone = by_subject[("shop/cart.py", "E501")]
    assert lone.errors == [] and str(lone.location) == "shop/cart.py:40:101"


def test_failing_tests_are_never_grouped() -> None:
    feedback = compact(TEST_PROBLEMS, max_tokens=BIG)
    assert [p.test_id for p in feedback.problems] == [TEST_IDS[2], TEST_IDS[0], TEST_IDS[1]]
    assert all(p.errors == [] for p in feedback.problems)


def test_gate_order_is_the_inputs_and_within_a_gate_by_file_then_line() -> None:
    shuffled = [
        TYPE_PROBLEMS[1],
        LINT_PROBLEMS[4],
        TEST_PROBLEMS[1],
        TYPE_PROBLEMS[0],
        LINT_PROBLEMS[0],
        TEST_PROBLEMS[0],
    ]
    feedback = compact(shuffled, max_tokens=BIG)
    assert [p.gate for p in feedback.problems] == [
        "types",
        "types",
        "lint",
        "lint",
        "tests",
        "tests",
    ]
    assert locations(feedback.problems) == [
        "shop/cart.py:22",
        "shop/orders.py:8",
        "shop/cart.py:1",
        "shop/pagination.py:12",
        "tests/test_pagination.py:50",
        "tests/test_pagination.py:71",
    ]


def test_new_still_failing_and_fixed_across_two_attempts() -> None:
    first = [*LINT_PROBLEMS[:2], TYPE_PROBLEMS[0], TEST_PROBLEMS[0], TEST_PROBLEMS[2]]
    where = Location(path="tests/test_pagination.py", line=53)
    moved = TEST_PROBLEMS[0].model_copy(update={"location": where})
    second = [LINT_PROBLEMS[0], moved, TEST_PROBLEMS[1], LINT_PROBLEMS[3]]
    feedback = compact(second, previous=first, max_tokens=BIG)

    assert [p.test_id or str(p.location) for p in feedback.new] == [
        "shop/pagination.py:3:8",
        TEST_IDS[1],
    ]
    # Line numbers move; the key does not.
    assert [p.test_id or str(p.location) for p in feedback.still_failing] == [
        "shop/cart.py:1:8",
        TEST_IDS[0],
    ]
    fixed = [p.test_id or str(p.location) for p in feedback.fixed]
    assert fixed == ["shop/cart.py:2:8", "shop/cart.py:22:5", TEST_IDS[2]]

    text = render_for_agent(feedback, 2)
    front = yaml.safe_load(text.split("---")[1])
    assert front == {
        "attempt": 2,
        "problems": 4,
        "new": 2,
        "still_failing": 2,
        "fixed": 3,
        "truncated": False,
    }
    assert f"{TEST_IDS[0]} (still failing)" in text
    assert f"{TEST_IDS[1]} (new)" in text
    assert "Fixed since attempt 1: shop/cart.py:2:8 F401, shop/cart.py:22:5 return-value" in text


def test_the_diff_is_the_same_against_a_compacted_previous_attempt() -> None:
    first = [*LINT_PROBLEMS, *TYPE_PROBLEMS]
    second = [LINT_PROBLEMS[0], LINT_PROBLEMS[4], TYPE_PROBLEMS[1]]
    raw = compact(second, previous=first, max_tokens=BIG)
    for budget in (BIG, 50):
        shown = compact(first, max_tokens=budget).problems
        again = compact(second, previous=shown, max_tokens=BIG)
        assert again.new == raw.new == []
        assert again.still_failing == raw.still_failing
        assert [(p.key(), p.location) for p in again.fixed] == [
            (p.key(), p.location) for p in raw.fixed
        ]


def test_a_tiny_budget_keeps_every_test_id_and_every_location() -> None:
    feedback = compact(ALL, max_tokens=200)
    text = render_for_agent(feedback, 1)
    assert feedback.truncated
    assert "truncated: true" in text
    for test_id in TEST_IDS:
        assert test_id in text
    for where in locations(ALL):
        assert where in text, where
    for problem in LINT_PROBLEMS:
        assert str(problem.location) in text  # path:line:col
    assert 'File "shop/module_3' not in text  # the tracebacks went


def test_a_large_budget_keeps_contexts_and_details() -> None:
    feedback = compact(ALL, max_tokens=BIG)
    text = render_for_agent(feedback, 1)
    assert not feedback.truncated
    assert text.count("```text") == len(ALL)
    assert "assert clamp_page(5, 0, 10) == 1" in text
    assert 'File "shop/module_39.py", line 49' in text


def test_a_middling_budget_degrades_in_steps() -> None:
    full = compact(ALL, max_tokens=BIG)
    sizes = []
    for budget in (full.tokens - 1, 1200, 200):
        feedback = compact(ALL, max_tokens=budget)
        assert feedback.truncated
        sizes.append(feedback.tokens)
    assert sizes == sorted(sizes, reverse=True)
    # Step 1 keeps the first contexts (lint's, first in gate order), drops the rest.
    step1 = compact(ALL, max_tokens=full.tokens - 1)
    assert step1.problems[0].errors[0].context is not None
    assert all(p.context is None for p in step1.problems if p.test_id)


def test_tokens_is_the_estimate_of_the_rendered_text() -> None:
    for budget in (BIG, 1000, 200):
        feedback = compact(ALL, max_tokens=budget)
        assert feedback.tokens == estimate_tokens(render_for_agent(feedback, 1))
        if not feedback.truncated:
            assert feedback.tokens <= budget
    second = compact(ALL[:3], previous=ALL, max_tokens=BIG, attempt=3)
    assert second.tokens == estimate_tokens(render_for_agent(second, 3))


def test_infrastructure_problems_are_kept_whole_under_any_budget() -> None:
    infra = infrastructure()
    feedback = compact(ALL, max_tokens=50)
    kept = [p for p in feedback.problems if p.category == "infrastructure"]
    assert kept == [infra]
    text = render_for_agent(feedback, 1)
    assert infra.detail.splitlines()[2] in text
    assert "tests/test_slow.py::test_7" in text
    assert "Infrastructure problems are not in the code" in text


def test_pre_existing_problems_are_marked() -> None:
    text = render_for_agent(compact(TEST_PROBLEMS, max_tokens=BIG), 1)
    assert f"{TEST_IDS[2]} (pre-existing on base)" in text
    assert "already failing on the base commit" in text
    assert "fix the code under test, not the tests" in text


def test_five_hundred_e501s_compact_far_below_their_naive_rendering() -> None:
    problems = [
        lint(
            f"shop/module_{n % 25}.py", 10 + n, "E501", f"Line too long ({101 + n % 50} > 100)", 101
        )
        for n in range(500)
    ]
    feedback = compact(problems, max_tokens=4000)
    text = render_for_agent(feedback, 1)
    naive = estimate_tokens(render_markdown(problems))
    assert len(feedback.problems) == 25
    assert feedback.tokens * 3 < naive
    for problem in problems:
        assert f"`{problem.location}` E501" in text


def test_a_parsers_grouped_problem_is_regrouped_by_code_and_file() -> None:
    grouped = Problem(
        type=TYPE,
        title="Type error",
        detail="Found 3 errors in 2 files",
        gate="types",
        command="mypy .",
        exit_code=1,
        errors=[
            ProblemItem(message="a", code="arg-type", location=Location(path="b.py", line=2)),
            ProblemItem(message="b", code="arg-type", location=Location(path="a.py", line=9)),
            ProblemItem(message="c", code="arg-type", location=Location(path="a.py", line=1)),
        ],
    )
    feedback = compact([grouped], max_tokens=BIG)
    assert [(str(p.location), len(p.errors)) for p in feedback.problems] == [
        ("a.py", 2),
        ("b.py:2", 0),
    ]
    assert [str(i.location) for i in feedback.problems[0].errors] == ["a.py:1", "a.py:9"]


def test_no_problems_renders_and_round_trips() -> None:
    feedback = compact([], max_tokens=BIG)
    assert feedback.problems == [] and not feedback.truncated
    assert "Every gate passed." in render_for_agent(feedback, 1)
    full = compact(ALL, previous=ALL[:4], max_tokens=BIG)
    again = Feedback.model_validate_json(full.model_dump_json())
    assert again == full
    assert render_for_agent(again, 2) == render_for_agent(full, 2)
    front, body = render_for_agent(full, 2).split("---\n", 2)[1:]
    assert front.startswith("attempt: 2\n") and body.startswith("## What happened\n")


def test_a_policy_problem_keeps_its_items_and_their_test_ids() -> None:
    policy = Problem(
        type=problem_type("protected-path"),
        title="Protected path changed",
        detail="The change touches paths the policy protects.\nRevert them.",
        gate="policy",
        category="policy",
        retryable=False,
        errors=[
            ProblemItem(message="modified", location=Location(path=".github/workflows/ci.yml")),
            ProblemItem(message="skip added", test_id="tests/test_cart.py::test_total"),
        ],
    )
    feedback = compact([policy, *TEST_PROBLEMS], max_tokens=10)
    assert feedback.problems[0] == policy
    text = render_for_agent(feedback, 1)
    assert "- `.github/workflows/ci.yml` modified" in text
    assert "- tests/test_cart.py::test_total skip added" in text
    assert "Revert them." in text
    assert "undo that part" in text


def test_step_two_cuts_details_to_their_first_lines() -> None:
    full = compact(TEST_PROBLEMS, max_tokens=BIG)
    # Three contexts: step 1 (keep the first three) changes nothing, so step 2 it is.
    step2 = compact(TEST_PROBLEMS, max_tokens=full.tokens - 1)
    text = render_for_agent(step2, 1)
    assert step2.truncated and "(77 more lines)" in text
    assert all(len(p.detail.splitlines()) == 6 for p in step2.problems)
    assert all(test_id in text for test_id in TEST_IDS)
    assert text.count("```text") == 3
