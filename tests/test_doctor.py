"""`harness doctor` and `harness run --dry-run`: one test per finding, each on a real sandbox,
real git repositories and a real store; the demo is clean and a broken policy lists every
problem."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO_ROOT, CliResult, TinyProject, commit_files, git, run_cli

from harness.sandbox import bubblewrap as bwrap
from harness.sandbox import limits


def doctor(tiny: TinyProject, *args: str, policy: Path | None = None) -> CliResult:
    argv = ["doctor", str(tiny.specs), "--policy", str(policy or tiny.root / "policy.yaml")]
    return run_cli([*argv, "--runs-dir", str(tiny.runs), *args], cwd=tiny.root)


def findings(result: CliResult, level: str = "error") -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(f"{level}:")]


def a_venv_outside_the_view(root: Path, tool: str) -> Path:
    """A virtualenv-shaped directory (pyvenv.cfg, bin/) under `root` holding an executable
    `tool`: found on the host, outside every sandbox's view (pytest's tmp dir is under /tmp,
    which is the sandbox's own private tmpfs)."""
    venv = root / "project-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    program = venv / "bin" / tool
    program.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    program.chmod(0o755)
    return venv


@pytest.fixture
def fresh_probes() -> Iterator[None]:
    """The sandbox's probes are cached per process: cleared around a test that changes what
    they see, so no other test sees its answer."""
    bwrap.probe.cache_clear()
    bwrap.hardening_gaps.cache_clear()
    yield
    bwrap.probe.cache_clear()
    bwrap.hardening_gaps.cache_clear()


# --- clean ------------------------------------------------------------------------------------


def test_the_demo_is_clean(demo_repo: Path) -> None:
    argv = ["doctor", "specs", "--policy", "policies/demo.yaml", "--runs-dir", "runs"]
    result = run_cli(argv, cwd=demo_repo)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "doctor: no problems found" in result.stdout
    assert not (demo_repo / "runs").exists(), "doctor creates nothing"
    assert git(demo_repo, "worktree", "list").count("\n") == 1, "no worktree was made"


def test_a_broken_policy_lists_every_problem(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    tiny.add_spec("one", replay=False)
    policy = tiny.write_policy(
        gates=[
            {"name": "lint", "kind": "lint", "command": "no-such-linter --check ."},
            {"name": "tests", "kind": "test", "command": "test -f done.txt"},
        ],
        agent={"kind": "anthropic", "model": "m"},
        prices={"m": {"input": 1.0, "output": 1.0, "cache_write": 1.0, "cache_read": 1.0}},
        store={"url": f"postgresql://u@127.0.0.1:{closed_port()}/db"},
        publish={"forge": "gitlab"},
    )
    result = doctor(tiny, policy=policy)
    assert result.exit_code == 1, result.stdout
    errors = findings(result)
    subjects = [line.split(":")[1].strip() for line in errors]
    assert subjects == ["agent", "publish", "store", "gate lint"], result.stdout
    assert "ANTHROPIC_API_KEY" in errors[0]
    assert "GITLAB_TOKEN" in errors[1]
    assert "cannot connect" in errors[2]
    assert "no-such-linter" in errors[3]
    assert "doctor: 4 errors, 0 warnings" in result.stdout


# --- the sandbox ------------------------------------------------------------------------------


def test_no_bubblewrap_is_an_error(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_probes: None
) -> None:
    tiny.add_spec("one")
    bare = tmp_path / "bin-without-bwrap"
    bare.mkdir()
    for tool in ("sh", "git", "test"):  # what the rest of the checks start
        found = [Path(d, tool) for d in os.environ["PATH"].split(":") if Path(d, tool).is_file()]
        (bare / tool).symlink_to(found[0])
    monkeypatch.setenv("PATH", str(bare))
    result = doctor(tiny)
    assert result.exit_code == 1, result.stdout
    (line,) = [line for line in findings(result) if line.startswith("error: sandbox:")]
    assert "bubblewrap (bwrap) is not installed" in line
    assert "apt-get install bubblewrap" in line


def test_partial_hardening_is_a_warning(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_probes: None
) -> None:
    tiny.add_spec("one")
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path / "no-cgroups")
    monkeypatch.setattr(bwrap, "cgroups_usable", limits.cgroups_usable)
    result = doctor(tiny)
    assert result.exit_code == 0, result.stdout
    (line,) = findings(result, "warning")
    assert line.startswith("warning: sandbox: hardening is partial: no cgroup v1 memory")
    assert "fix:" in line


# --- the tools, as the sandbox sees them --------------------------------------------------------


def test_a_gate_tool_that_is_nowhere_is_an_error(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    policy = tiny.write_policy(gates=[{"name": "lint", "kind": "lint", "command": "nolint ."}])
    result = doctor(tiny, policy=policy)
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: gate lint: `nolint` is not found inside the sandbox")
    assert "nor on this host" in line
    assert "gates[0].command" in line


def test_a_gate_tool_the_sandbox_cannot_see_names_the_read_path_to_add(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny.add_spec("one")
    venv = a_venv_outside_the_view(tiny.root, "projlint")
    monkeypatch.setenv("PATH", f"{venv / 'bin'}:{os.environ['PATH']}")
    gates = [{"name": "lint", "kind": "lint", "command": "projlint ."}]
    result = doctor(tiny, policy=tiny.write_policy(gates=gates))
    assert result.exit_code == 1
    (line,) = findings(result)
    assert f"it is {venv}/bin/projlint, which the sandbox's view does not include" in line
    assert f"sandbox: {{read_paths: [{venv}]}}" in line
    # The fix it names works: with the read path, the tool resolves inside the sandbox.
    fixed = tiny.write_policy(gates=gates, sandbox={"read_paths": [str(venv)]})
    assert doctor(tiny, policy=fixed).exit_code == 0


def test_a_linked_gate_tool_names_where_the_link_and_its_target_live(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny.add_spec("one")
    venv = a_venv_outside_the_view(tiny.root, "projlint")
    links = tiny.root / "links"
    links.mkdir()
    (links / "projlint").symlink_to(venv / "bin" / "projlint")
    monkeypatch.setenv("PATH", f"{links}:{os.environ['PATH']}")
    gates = [{"name": "lint", "kind": "lint", "command": "projlint ."}]
    result = doctor(tiny, policy=tiny.write_policy(gates=gates))
    assert result.exit_code == 1
    (line,) = findings(result)
    assert f"it is {links}/projlint (a link to {venv}/bin/projlint)" in line
    assert f"sandbox: {{read_paths: [{links}, {venv}]}}" in line
    fixed = tiny.write_policy(gates=gates, sandbox={"read_paths": [str(links), str(venv)]})
    assert doctor(tiny, policy=fixed).exit_code == 0


def test_an_uncommitted_tool_in_the_repository_is_an_error(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    script = tiny.repo / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    script.chmod(0o755)
    gates = [{"name": "check", "kind": "custom", "command": "./check.sh"}]
    result = doctor(tiny, policy=tiny.write_policy(gates=gates))
    assert result.exit_code == 1
    (error,) = findings(result)
    assert "not committed at base" in error
    # Committed, it is in the sandbox's tree (and the repository is clean again).
    commit_files(tiny.repo, {}, "add check.sh")
    assert doctor(tiny, policy=tiny.write_policy(gates=gates)).exit_code == 0


def test_an_acceptance_command_tool_is_checked_too(tiny: TinyProject) -> None:
    tiny.add_spec("one", acceptance=["nosuchtest -q"])
    result = doctor(tiny)
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: spec one: `nosuchtest` is not found")
    assert "acceptance[0]" in line


# --- the agent --------------------------------------------------------------------------------


def test_a_missing_api_key_is_an_error(tiny: TinyProject, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny.add_spec("one", replay=False)
    prices = {"m": {"input": 1.0, "output": 1.0, "cache_write": 1.0, "cache_read": 1.0}}
    policy = tiny.write_policy(agent={"kind": "anthropic", "model": "m"}, prices=prices)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = doctor(tiny, policy=policy)
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: agent: ANTHROPIC_API_KEY is not set")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert doctor(tiny, policy=policy).exit_code == 0


def test_a_command_agent_whose_cli_does_not_resolve_is_an_error(tiny: TinyProject) -> None:
    tiny.add_spec("one", replay=False)
    policy = tiny.write_policy(agent={"kind": "command", "command": ["no-agent", "{prompt_file}"]})
    result = doctor(tiny, policy=policy)
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: agent: `no-agent` is not found inside the sandbox")
    assert "agent.command[0]" in line


def test_a_missing_replay_file_is_an_error_for_its_spec(tiny: TinyProject) -> None:
    tiny.add_spec("scripted")
    tiny.add_spec("unscripted", replay=False)
    tiny.add_spec("human", tier=3, replay=False)  # escalated before any agent: needs none
    result = doctor(tiny)
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: spec unscripted: ")
    assert "unscripted.replay.yaml: no replay trajectory" in line


# --- the store --------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_store_is_an_error(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    url = f"postgresql://harness:secret@127.0.0.1:{closed_port()}/harness"
    result = doctor(tiny, "--store", url)
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: store: ")
    assert "secret" not in result.stdout


def test_a_sqlite_store_that_cannot_be_created_is_an_error(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    blocker = tiny.root / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = doctor(tiny, "--store", f"sqlite:///{blocker}/runs/harness.db")
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: store: ") and "cannot be created" in line


# --- the specs' repositories ------------------------------------------------------------------


def test_a_missing_repository_and_a_missing_base_are_errors(tiny: TinyProject) -> None:
    tiny.add_spec("nowhere", repo="../no-such-repo")
    tiny.add_spec("unbased", base="no-such-branch")
    result = doctor(tiny)
    assert result.exit_code == 1
    lines = findings(result)
    assert len(lines) == 2, result.stdout
    assert "nowhere.md: repo:" in lines[0] and "is not a directory" in lines[0]
    assert "unbased.md: base: ref 'no-such-branch' not found" in lines[1]


def test_uncommitted_changes_are_a_warning_in_doctor_and_run(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    (tiny.repo / "README.md").write_text("# edited, not committed\n", encoding="utf-8")
    (tiny.repo / "new.txt").write_text("untracked\n", encoding="utf-8")
    result = doctor(tiny)
    assert result.exit_code == 0, result.stdout
    (line,) = findings(result, "warning")
    assert "has uncommitted changes (README.md, new.txt); they will not be used" in line
    run = tiny.run()
    assert run.exit_code == 0, run.stderr
    assert "README.md, new.txt); they will not be used" in run.stderr


# --- usage --------------------------------------------------------------------------------------


def test_an_invalid_policy_is_a_finding_and_the_other_checks_still_run(
    tiny: TinyProject,
) -> None:
    tiny.add_spec("one", replay=False)
    policy = tiny.root / "bad.yaml"
    policy.write_text("gates: []\nbudget: {max_atempts: 3}\n", encoding="utf-8")
    result = doctor(tiny, "--store", f"sqlite:///{tiny.root}/f/runs.db", policy=policy)
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith(f"error: policy: {policy}: gates:")
    assert "budget.max_atempts: unknown key" in line


def test_bad_usage_exits_2(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    assert doctor(tiny, policy=tiny.root / "no-such.yaml").exit_code == 2
    argv = ["doctor", str(tiny.root / "nothing-here"), "--policy", str(tiny.root / "policy.yaml")]
    assert run_cli(argv, cwd=tiny.root).exit_code == 2


def test_run_dry_run_checks_and_creates_nothing(tiny: TinyProject) -> None:
    tiny.add_spec("one", replay=False)
    result = tiny.run(str(tiny.specs), "--dry-run")
    assert result.exit_code == 1
    (line,) = findings(result)
    assert line.startswith("error: spec one: ")
    assert not tiny.runs.exists()
    tiny.add_spec("one")
    assert tiny.run(str(tiny.specs), "--dry-run").exit_code == 0
    assert not tiny.runs.exists()


def test_the_policy_is_found_upwards_from_the_specs(tiny: TinyProject) -> None:
    tiny.add_spec("one")
    argv = ["doctor", str(tiny.specs), "--runs-dir", str(tiny.runs)]
    missing = run_cli(argv, cwd=REPO_ROOT)
    assert missing.exit_code == 2
    assert "no policy given, and no harness.yaml or .harness/policy.yaml" in missing.stderr
    assert "pass --policy FILE" in missing.stderr
    (tiny.root / ".harness").mkdir()
    (tiny.root / "policy.yaml").rename(tiny.root / ".harness" / "policy.yaml")
    assert run_cli(argv, cwd=REPO_ROOT).exit_code == 0
