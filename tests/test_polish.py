"""What the command line says to a user: its version, help that reads whole, counts that agree
with their nouns, errors that say what a valid value looks like, and the project's policy found
without --policy."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from helpers import FINISH, TinyProject, run_cli


def test_version(tmp_path: Path) -> None:
    result = run_cli(["--version"], cwd=tmp_path)
    assert result.exit_code == 0
    assert result.stdout == f"harness {version('harness')}\n"


def test_every_command_is_summed_up_in_a_whole_sentence(tmp_path: Path) -> None:
    for argv in (["--help"], ["sandbox", "--help"]):
        result = run_cli(argv, cwd=tmp_path)
        assert result.exit_code == 0
        listing = result.stdout.split("Commands:\n", 1)[1]
        lines = [line.strip() for line in listing.splitlines() if line.strip()]
        assert lines, result.stdout
        for line in lines:
            assert line.endswith(".") and not line.endswith("..."), line


def test_gc_counts_agree_with_their_noun(tmp_path: Path) -> None:
    result = run_cli(["gc", "--dry-run", "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "gc: would take 0 actions; nothing was removed" in result.stdout


def test_a_run_counts_its_task_in_the_singular(tiny: TinyProject) -> None:
    tiny.add_spec("only")
    result = tiny.run()
    assert result.exit_code == 0, result.stderr
    assert "run r1: 1 task, concurrency" in result.stdout


def test_an_invalid_spec_id_says_what_a_valid_one_looks_like(tiny: TinyProject) -> None:
    tiny.add_spec("Fix_Pagination")
    result = tiny.run()
    assert result.exit_code == 2
    assert "id: not a valid id: use 1 to 80 lowercase letters, digits" in result.stderr
    assert "e.g. 'fix-pagination'" in result.stderr
    assert "(got 'Fix_Pagination')" in result.stderr
    assert not re.search(r"\^\[|pattern", result.stderr), result.stderr


def test_an_invalid_gate_name_says_what_a_valid_one_looks_like(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    gates = [{"name": "unit tests", "kind": "test", "command": "true"}]
    result = tiny.run(policy=tiny.write_policy(gates=gates))
    assert result.exit_code == 2
    assert "gates.0.name: 'unit tests' is not valid here; write letters, digits" in result.stderr
    assert "e.g. lint or unit-tests" in result.stderr
    assert "pattern" not in result.stderr


def test_run_finds_the_projects_harness_yaml(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    (tiny.root / "policy.yaml").rename(tiny.root / "harness.yaml")
    argv = ["run", str(tiny.specs), "--runs-dir", str(tiny.runs), "--run-id", "r1"]
    result = run_cli(argv, cwd=tiny.root / "repo")
    assert result.exit_code == 0, result.stderr
    assert tiny.task("one")["outcome"] == "verified"
    assert tiny.summary()["policy"] == "../harness.yaml"  # as a user would write it


def test_records_name_no_directory_of_the_machine_that_ran_them(tiny: TinyProject) -> None:
    tiny.add_spec("stuck", attempts=[[FINISH], [FINISH]])
    tiny.add_spec("done")
    assert tiny.run().exit_code == 0
    escalation = (tiny.root / tiny.task("stuck")["escalation"]).read_text("utf-8")
    pr = (tiny.root / tiny.task("done")["pr"]).read_text("utf-8")
    for record in (escalation, pr):
        assert str(tiny.root) not in record, record
    log = r"tasks/stuck/gates/attempt-2-done[\w-]*\.log"
    assert re.search(rf"full output \(in the run's directory\): `{log}`", escalation)
    assert re.search(rf'"log": "{log}"', escalation), escalation
    assert "from `done.md`" in pr  # the spec lives outside the repository: its name alone


def test_flags_are_plain_flags(tmp_path: Path) -> None:
    for command, flag in (("run", "--dry-run"), ("gc", "--dry-run"), ("resume", "--force")):
        result = run_cli([command, "--help"], cwd=tmp_path)
        assert result.exit_code == 0
        assert flag in result.stdout
        assert "--no-" not in result.stdout and "[default: no-" not in result.stdout, command
