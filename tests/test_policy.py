"""Policies: the shipped ones load; every mistake is an InputError naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO_ROOT

from harness.config.policy import load_policy
from harness.errors import InputError

GATES = """\
gates:
  - {name: lint, kind: lint, command: "ruff check ."}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert str(path) in message, f"the error does not name the file: {message}"
    assert "\n" not in message, f"errors are one line: {message!r}"
    return message


def test_default_policy_loads() -> None:
    policy = load_policy(REPO_ROOT / "policies" / "default.yaml")
    assert policy.agent.kind == "anthropic"
    assert policy.agent.model
    assert [g.name for g in policy.gates] == ["lint", "types", "tests"]
    assert [g.command for g in policy.gates] == [
        "ruff check --output-format=json .",
        "mypy -O json .",
        "pytest -q",
    ]
    assert policy.budget.max_attempts == 2
    assert policy.concurrency == 4
    assert policy.publish.auto_pr_tiers == [1, 2]
    assert policy.publish.protected_paths == [".github/**"]


def test_demo_policy_loads() -> None:
    policy = load_policy(REPO_ROOT / "policies" / "demo.yaml")
    assert policy.agent.kind == "replay"
    assert [g.name for g in policy.gates] == ["lint", "types", "tests", "integration"]
    assert [g.kind for g in policy.gates] == ["lint", "type", "test", "integration"]
    assert policy.integration.services_file == "harness-services.yaml"
    assert policy.budget.max_attempts == 2
    assert policy.budget.max_steps == 40
    assert "migrations/**" in policy.publish.protected_paths


def test_defaults_apply_when_only_gates_are_given(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, GATES))
    assert policy.agent.kind == "replay"
    assert policy.budget.max_attempts == 2
    assert policy.budget.max_cost_usd is None
    assert policy.concurrency == 4
    assert policy.publish.auto_pr_tiers == [1, 2]
    assert policy.publish.branch_prefix == "harness"
    assert policy.publish.protected_paths == []
    assert policy.gates[0].timeout_s == 600


def test_unknown_top_level_key_names_file_and_field(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, GATES + "concurency: 2\n"))
    assert "concurency" in message
    assert "unknown key" in message


def test_unknown_nested_key_names_the_dotted_field(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, GATES + "budget: {max_atempts: 3}\n"))
    assert "budget.max_atempts" in message
    assert "unknown key" in message


def test_unknown_key_in_a_gate_is_rejected(tmp_path: Path) -> None:
    text = "gates:\n  - {name: lint, kind: lint, comand: 'ruff check .'}\n"
    message = load_error(write(tmp_path, text))
    assert "gates.0.comand" in message


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('concurrency: "4"\n', "concurrency"),
        ("budget: {max_attempts: 1.5}\n", "budget.max_attempts"),
        ('budget: {max_attempts: "2"}\n', "budget.max_attempts"),
        ("publish: {auto_pr_tiers: [1, 4]}\n", "publish.auto_pr_tiers.1"),
        ("concurrency: 0\n", "concurrency"),
        ("agent: {kind: gpt}\n", "agent.kind"),
    ],
)
def test_wrong_types_and_values_are_rejected_not_coerced(
    tmp_path: Path, extra: str, field: str
) -> None:
    message = load_error(write(tmp_path, GATES + extra))
    assert f"{field}:" in message


def test_missing_gates_are_rejected(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "concurrency: 2\n"))
    assert "gates: required field is missing" in message


def test_empty_gate_list_is_rejected(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "gates: []\n"))
    assert "gates:" in message


def test_duplicate_gate_names_are_rejected(tmp_path: Path) -> None:
    text = GATES + "  - {name: lint, kind: test, command: pytest}\n"
    message = load_error(write(tmp_path, text))
    assert "gates:" in message
    assert "unique" in message
    assert "lint" in message


def test_gate_without_command_is_rejected(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "gates:\n  - {name: lint, kind: lint}\n"))
    assert "gates.0.command: required field is missing" in message


def test_invalid_yaml_is_an_input_error(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "gates: [\n  - {name: lint\n"))
    assert "not valid YAML" in message


def test_a_policy_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "- lint\n- tests\n"))
    assert "mapping" in message


def test_empty_policy_file_is_rejected(tmp_path: Path) -> None:
    load_error(write(tmp_path, ""))


def test_missing_policy_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.yaml")
    assert "not found" in message
