"""Policy's `setup:` (harness.setup): the environment set-up runs once per base, in a sandbox,
and every task's gates (and the base runs) see what it made, read-only, at its fixed path.

Real bubblewrap, real git, a real venv (`python3 -m venv --without-pip`, no network) whose
tool has an absolute shebang into /harness/env: it runs only where the set-up made it."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    FINISH,
    WRITE_DONE,
    TinyProject,
    commit_files,
    escalation_problems,
    git_ok,
    run_cli,
)

from harness.config.policy import GateConfig
from harness.config.spec import Spec
from harness.gates.preexisting import PreexistingFailures
from harness.sandbox.local import WorktreeSandbox
from harness.setup.config import SetupConfig
from harness.setup.environment import EnvironmentSetup

# A venv with a tool whose shebang names the venv's python by its absolute path at set-up
# time ($HARNESS_ENV is /harness/env): as with pip's console scripts, it works nowhere else.
# The set-up also writes deps/ into the tree (git-ignored), which `copy:` carries to tasks.
MAKE_VENV = (
    'python3 -m venv --without-pip "$HARNESS_ENV" && '
    'printf "#!%s\\nimport sys\\nprint(\\"tool ran in\\", sys.prefix)\\n" '
    '"$HARNESS_ENV/bin/python" > "$HARNESS_ENV/bin/tool" && chmod +x "$HARNESS_ENV/bin/tool"'
)
# The set-up's own later commands find the venv first on PATH, as `pip install` would.
RECORD_LOCKFILE = 'cp requirements.txt "$HARNESS_ENV/installed.txt" && tool > "$HARNESS_ENV/saw"'
MAKE_DEPS = "mkdir -p deps && echo from-setup > deps/marker"

GATES: list[dict[str, Any]] = [
    {"name": "tool", "kind": "custom", "command": "tool"},  # $HARNESS_ENV/bin is on PATH
    {
        "name": "read-only",
        "kind": "custom",
        "command": 'if touch "$HARNESS_ENV/poison"; then echo "env is writable"; exit 1; fi',
    },
    {
        "name": "env-matches-tree",
        "kind": "custom",
        "command": 'cmp requirements.txt "$HARNESS_ENV/installed.txt" && test -f deps/marker',
    },
    {"name": "done", "kind": "test", "command": "test -f done.txt"},
]
SETUP: dict[str, Any] = {
    "commands": [MAKE_VENV, RECORD_LOCKFILE, MAKE_DEPS],
    "lockfiles": ["requirements.txt"],
    "copy": ["deps"],
    "timeout_s": 60,
}


@pytest.fixture
def project(tiny: TinyProject) -> TinyProject:
    commit_files(tiny.repo, {"requirements.txt": "pkg==1\n", ".gitignore": "build/\ndeps/\n"})
    return tiny


def set_up_runs(tiny: TinyProject, run_id: str = "r1") -> list[dict[str, Any]]:
    index = tiny.runs / run_id / "setup" / "index.jsonl"
    lines = index.read_text("utf-8").splitlines() if index.exists() else []
    return [json.loads(line) for line in lines]


def gate_logs(tiny: TinyProject, spec_id: str, gate: str) -> list[str]:
    logs = sorted((tiny.runs / "r1" / "tasks" / spec_id / "gates").glob(f"*-{gate}.log"))
    return [log.read_text("utf-8") for log in logs]


def test_one_set_up_serves_every_task_on_the_base_read_only(project: TinyProject) -> None:
    use_tool = {"tool": "run", "args": {"command": "tool"}}
    project.add_spec("a", attempts=[[use_tool, WRITE_DONE, FINISH]])
    for name in ("b", "c"):
        project.add_spec(name)
    project.write_policy(gates=GATES, setup=SETUP)
    result = project.run()
    assert result.exit_code == 0, result.stderr
    assert [project.task(n)["outcome"] for n in "abc"] == ["verified"] * 3, project.summary()
    # three tasks at concurrency 2, their attempts, verifications and the base runs: one set-up
    [only] = set_up_runs(project)
    assert only["ok"] and only["base"]
    for name in "abc":  # the tool ran at the fixed path, where its shebang points
        logs = gate_logs(project, name, "tool")
        assert logs and all("tool ran in /harness/env" in log for log in logs)
    # the agent's own commands see it too, from its first attempt on
    attempt = (project.runs / "r1" / "tasks" / "a" / "attempt-1.json").read_text("utf-8")
    assert "tool ran in /harness/env" in attempt
    env = project.runs / "r1" / "setup" / only["key"] / "env"
    assert (env / "saw").read_text("utf-8") == "tool ran in /harness/env\n"
    assert not (env / "poison").exists(), "a task wrote into the shared environment"


def test_the_base_runs_gates_in_the_same_environment(tiny_spec: Spec, tmp_path: Path) -> None:
    setup = EnvironmentSetup(SetupConfig.model_validate({"commands": [MAKE_VENV]}), tmp_path / "s")
    preexisting = PreexistingFailures(tmp_path / "run", setup=setup)
    gate = GateConfig(name="tool", kind="test", command="tool")
    preexisting.observed(tiny_spec, gate)
    [log] = (tmp_path / "run" / "base").glob("*/base-0-tool.log")
    assert "tool ran in /harness/env" in log.read_text("utf-8")


def test_a_failing_set_up_escalates_as_infrastructure_with_its_log(project: TinyProject) -> None:
    project.add_spec("a")
    project.add_spec("b")
    setup = {"commands": ["echo fetching pkg==1", "echo 'no such package' >&2; exit 7"]}
    project.write_policy(setup=setup)
    result = project.run()
    assert result.exit_code == 0, result.stderr  # escalated, not an error of the run
    for name in ("a", "b"):
        task = project.task(name)
        assert task["outcome"] == "escalated"
        assert task["reason"].startswith("infrastructure failure (not charged to the agent)")
        assert "set-up failed (exit 7)" in task["reason"]
        # no agent worked on a tree without its dependencies, and no gate ran
        assert task["gates"] == []
        assert not git_ok(project.repo, "cat-file", "-e", f"harness/r1/{name}:done.txt")
        [problem] = escalation_problems(project.root / task["escalation"])
        assert problem["category"] == "infrastructure"
        assert problem["owner_action_required"] is True
        log = Path(problem["log"])
        assert log.name == "setup.log"
        text = log.read_text("utf-8")
        assert "fetching pkg==1" in text and "no such package" in text
        assert "set-up command 2 failed (exit 7)" in text
    [failed] = set_up_runs(project)  # the second task did not run it again
    assert failed["ok"] is False


def test_a_lockfile_the_agent_changes_re_runs_the_set_up_for_that_task_only(
    project: TinyProject,
) -> None:
    bump = {"tool": "write_file", "args": {"path": "requirements.txt", "content": "pkg==2\n"}}
    project.add_spec("bumps", attempts=[[bump, WRITE_DONE, FINISH]])
    project.add_spec("keeps")
    project.write_policy(gates=GATES, setup=SETUP)
    result = project.run()
    assert result.exit_code == 0, result.stderr
    assert project.task("bumps")["outcome"] == "verified", project.summary()
    assert project.task("keeps")["outcome"] == "verified", project.summary()
    runs = set_up_runs(project)
    assert sorted((run["base"], run["spec"] if not run["base"] else "") for run in runs) == [
        (False, "bumps"),
        (True, ""),
    ]
    # the bumping task's attempt and verification shared its own set-up; its env has pkg==2
    own = next(run for run in runs if not run["base"])
    installed = project.runs / "r1" / "setup" / own["key"] / "env" / "installed.txt"
    assert installed.read_text("utf-8") == "pkg==2\n"


def test_a_set_up_for_the_agents_lockfile_gets_no_secrets(
    project: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent's lockfile makes the set-up run what the agent chose: the policy's secrets
    # reach the base's set-up only.
    monkeypatch.setenv("SETUP_INDEX_CRED", "cred-value-4711")
    bump = {"tool": "write_file", "args": {"path": "requirements.txt", "content": "pkg==2\n"}}
    project.add_spec("bumps", attempts=[[bump, WRITE_DONE, FINISH]])
    record = 'echo "${SETUP_INDEX_CRED:-absent}" > "$HARNESS_ENV/cred"'
    setup = {
        "commands": [record],
        "lockfiles": ["requirements.txt"],
        "secrets": ["SETUP_INDEX_CRED"],
    }
    project.write_policy(setup=setup)
    result = project.run()
    assert result.exit_code == 0, result.stderr
    seen = {
        run["base"]: (project.runs / "r1" / "setup" / run["key"] / "env" / "cred").read_text()
        for run in set_up_runs(project)
    }
    assert seen == {True: "cred-value-4711\n", False: "absent\n"}


def test_a_set_up_the_agents_lockfile_breaks_escalates_from_the_gates_with_its_log(
    project: TinyProject,
) -> None:
    broken = {"tool": "write_file", "args": {"path": "requirements.txt", "content": "nope==0\n"}}
    project.add_spec("breaks", attempts=[[broken, WRITE_DONE, FINISH]])
    setup = {"commands": ["! grep -q nope requirements.txt"], "lockfiles": ["requirements.txt"]}
    project.write_policy(setup=setup)
    result = project.run()
    assert result.exit_code == 0, result.stderr
    task = project.task("breaks")
    assert task["outcome"] == "escalated"
    assert task["reason"].startswith("infrastructure: gate 'done' could not be set up")
    assert [(g["phase"], g["passed"]) for g in task["gates"]] == [("attempt", False)]
    [problem] = escalation_problems(project.root / task["escalation"])
    assert (problem["category"], problem["owner_action_required"]) == ("infrastructure", True)
    assert problem["log"].endswith("setup.log")
    assert [(run["base"], run["ok"]) for run in set_up_runs(project)] == [
        (True, True),
        (False, False),
    ]


def test_a_listed_secret_that_is_not_set_is_a_one_line_error(
    project: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SETUP_INDEX_CRED", raising=False)
    project.add_spec("a")
    project.write_policy(setup={"commands": ["true"], "secrets": ["SETUP_INDEX_CRED"]})
    result = project.run()
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "setup.secrets: SETUP_INDEX_CRED is not set" in line
    assert not (project.runs / "r1").exists()


# --- the set-up's sandbox: secrets and network -------------------------------------------------


def ready(spec: Spec, sandbox: WorktreeSandbox, root: Path, **config: Any) -> tuple[str, str]:
    """Run the set-up for `sandbox`'s base; its error (or "") and its log."""
    setup = EnvironmentSetup(SetupConfig.model_validate(config), root)
    prepared = setup.ready(spec, sandbox)
    [log] = root.glob("*/setup.log")
    return (prepared.error.title if prepared.error else ""), log.read_text("utf-8")


def test_only_listed_secrets_reach_the_set_up_and_its_log_is_redacted(
    tiny_spec: Spec, sandbox: WorktreeSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names harness would not redact on its own (not *_TOKEN, *_KEY ...): listing does it.
    monkeypatch.setenv("SETUP_INDEX_CRED", "cred-value-4711")
    monkeypatch.setenv("UNLISTED_SETTING", "unlisted-value-0815")
    command = 'echo "cred=$SETUP_INDEX_CRED unlisted=${UNLISTED_SETTING:-absent}"'
    error, log = ready(
        tiny_spec, sandbox, tmp_path / "setup", commands=[command], secrets=["SETUP_INDEX_CRED"]
    )
    assert error == ""
    assert "cred=[REDACTED:SETUP_INDEX_CRED] unlisted=absent" in log
    assert "cred-value-4711" not in log


class Counter(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        Counter.hits += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    """An HTTP server on the host's loopback; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Counter.hits = 0
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("network", [False, True])
def test_the_set_up_reaches_the_network_only_when_policy_grants_it(
    tiny_spec: Spec, sandbox: WorktreeSandbox, tmp_path: Path, host_server: int, network: bool
) -> None:
    url = f"http://127.0.0.1:{host_server}/"
    fetch = f"python3 -c \"import urllib.request as u; u.urlopen('{url}', timeout=5)\""
    error, log = ready(tiny_spec, sandbox, tmp_path / "setup", commands=[fetch], network=network)
    if network:
        assert (error, Counter.hits) == ("", 1), log
    else:
        assert error.startswith("environment set-up failed (exit 1)")
        assert "Connection refused" in log and Counter.hits == 0


def test_doctor_does_not_call_tools_the_set_up_installs_missing(project: TinyProject) -> None:
    gates = [
        {"name": "env", "kind": "test", "command": '"$HARNESS_ENV/bin/pytest" -q'},
        {"name": "path", "kind": "lint", "command": "no-such-linter-xyz ."},
    ]
    project.add_spec("a")
    policy = project.write_policy(gates=gates, setup={"commands": ["python3 -m venv $HARNESS_ENV"]})
    argv = ["doctor", str(project.specs), "--policy", str(policy), "--runs-dir", str(project.runs)]
    result = run_cli(argv, cwd=project.root)
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("error:")], result.stdout
    [warning] = [line for line in lines if "no-such-linter-xyz" in line]
    assert warning.startswith("warning:") and "unless policy's setup: installs it" in warning
    assert "HARNESS_ENV" not in result.stdout
