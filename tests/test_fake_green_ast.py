"""Weakened assertions on the syntax tree (harness/gates/fake_green_ast.py): a test kept by
name whose checks say less than on the base is a finding, whatever the count of asserts."""

from __future__ import annotations

import pytest

from harness.gates.fake_green_ast import weakened_assertions


def source(body: str, decorator: str = "") -> str:
    lines = "\n".join(f"    {line}" for line in body.splitlines())
    return f"import pytest\n\n\n{decorator}def test_it(self=None):\n{lines}\n"


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        ("assert f(x) == 'y'", "assert f(x)", "`assert f(x) == 'y'` became `assert f(x)`"),
        ("assert f(x) == 1", "assert f(x) >= 1", "became `assert f(x) >= 1`"),
        ("assert f(x) == 1", "assert f(x) == 2", "became `assert f(x) == 2`"),
        (
            "assert f() == pytest.approx(0.3)",
            "assert f() == pytest.approx(0.3, rel=0.5)",
            "rel=0.5",
        ),
        (
            "self.assertAlmostEqual(f(), 0.3, places=7)",
            "self.assertAlmostEqual(f(), 0.3, places=1)",
            "places=1",
        ),
        (
            "for n in range(100):\n    assert f(n) >= 0",
            "for n in range(3):\n    assert f(n) >= 0",
            "`for n in range(100)` became `for n in range(3)`",
        ),
        ("assert a\nassert b", "assert a", "`assert b` was removed"),
        ("with pytest.raises(ValueError):\n    f()", "f()", "pytest.raises(ValueError)"),
    ],
)
def test_a_weakened_check_is_found(before: str, after: str, said: str) -> None:
    [found] = weakened_assertions(source(before), source(after))
    assert found.test == "test_it"
    assert said in found.change


def test_a_narrowed_parametrize_is_found() -> None:
    wide = "@pytest.mark.parametrize('n', [1, 2, 3])\n"
    narrow = "@pytest.mark.parametrize('n', [1])\n"
    [found] = weakened_assertions(source("assert n", wide), source("assert n", narrow))
    assert "parametrize" in found.change


def test_methods_are_compared_by_qualified_name() -> None:
    before = "class TestC:\n    def test_m(self):\n        assert f() == 1\n"
    after = "class TestC:\n    def test_m(self):\n        assert f()\n"
    [found] = weakened_assertions(before, after)
    assert found.test == "TestC.test_m"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("assert f(x) == 1", "assert f(x) == 1\nassert g(x)"),  # a check added
        ("assert f(x)", "assert f(x) == 'y'"),  # strengthened
        ("assert a\nassert b", "assert b\nassert a"),  # reordered
        ("assert f(x) == 1  # old", "y = 2\nassert f(x) == 1"),  # other lines changed
    ],
)
def test_kept_or_strengthened_checks_are_not_findings(before: str, after: str) -> None:
    assert weakened_assertions(source(before), source(after)) == []


def test_renamed_removed_or_unparsable_tests_are_left_to_the_other_checks() -> None:
    assert weakened_assertions(source("assert f() == 1"), "def test_other():\n    pass\n") == []
    assert weakened_assertions(source("assert f() == 1"), "def test_it(:\n") == []
