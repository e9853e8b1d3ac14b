"""Spec ids and the policy's branch prefix are held to git's own ref rules when they load, so a
name git refuses is one clear input error (exit 2), not a failure at provision."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import TinyProject

from harness.config.policy import parse_policy
from harness.config.spec import load_spec
from harness.errors import InputError

# Each passes the old patterns ([a-z0-9][a-z0-9._-]* and [A-Za-z0-9][A-Za-z0-9_./-]*); git
# refuses every one of them in refs/heads/<prefix>/<run-id>/<id>.
BAD_IDS = ["fix..pagination", "fix.lock", "fix-pagination."]
GATES = [{"name": "lint", "kind": "lint", "command": "true", "timeout_s": 5}]
BAD_PREFIXES = ["harness//nightly", "harness/.hidden", "harness..x", "harness/", "bot.lock/x"]


def write_spec(tiny: TinyProject, spec_id: str) -> Path:
    path = tiny.specs / "bad.md"
    front = {"id": spec_id, "title": "A task", "tier": 2, "repo": str(tiny.repo)}
    path.write_text(f"---\n{yaml.safe_dump(front)}---\nDo it.\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("spec_id", BAD_IDS)
def test_a_spec_id_git_refuses_is_one_clear_error(tiny: TinyProject, spec_id: str) -> None:
    path = write_spec(tiny, spec_id)
    with pytest.raises(InputError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path.resolve()}: id: ") or message.startswith(f"{path}: id: ")
    assert repr(spec_id) in message and "git" in message and "rename" in message


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_a_branch_prefix_git_refuses_is_one_clear_error(tmp_path: Path, prefix: str) -> None:
    text = yaml.safe_dump({"gates": GATES, "publish": {"branch_prefix": prefix}})
    with pytest.raises(InputError) as caught:
        parse_policy(text, tmp_path / "policy.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'policy.yaml'}: publish.branch_prefix: ")
    assert repr(prefix) in message and "git" in message


def test_good_names_still_load(tiny: TinyProject, tmp_path: Path) -> None:
    assert load_spec(write_spec(tiny, "fix-pagination.v2")).id == "fix-pagination.v2"
    text = yaml.safe_dump({"gates": GATES, "publish": {"branch_prefix": "team/harness.bot"}})
    assert parse_policy(text, tmp_path / "p.yaml").publish.branch_prefix == "team/harness.bot"


def test_the_cli_exits_2_on_a_bad_id_before_anything_runs(tiny: TinyProject) -> None:
    tiny.write_policy()
    write_spec(tiny, "fix..pagination")
    result = tiny.run()
    assert result.exit_code == 2
    assert "id: 'fix..pagination'" in result.stderr
    assert not (tiny.runs / "r1" / "worktrees").exists()
