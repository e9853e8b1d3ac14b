"""The `command` agent: a CLI coding agent run inside the sandbox from an argv template. Here
the "CLI agent" is a shell script, so what harness hands it and what it can reach are visible."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import TinyProject, branch_exists, git

# Writes done.txt (what the gate wants) and copies what it was given, so the test can read it.
SCRIPT = (
    'cp "{prompt_file}" prompt-seen.md && pwd > workdir-seen.txt && '
    "env > env-seen.txt && echo made > done.txt"
)


def command_agent(script: str = SCRIPT, **settings: Any) -> dict[str, Any]:
    return {"kind": "command", "command": ["sh", "-c", script], **settings}


def test_command_agent_gets_the_prompt_and_its_change_is_gated(tiny: TinyProject) -> None:
    tiny.write_policy(agent=command_agent())
    tiny.add_spec("cli", replay=False, body="Create done.txt, please.\n")
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("cli")
    assert (task["outcome"], task["attempts"], task["agent"]) == ("verified", 1, "command")
    branch = "harness/r1/cli"
    prompt = git(tiny.repo, "show", f"{branch}:prompt-seen.md")
    assert "spec: cli\nattempt: 1" in prompt
    assert "Create done.txt, please." in prompt
    assert "`test -f done.txt`" in prompt  # the system prompt names the policy's gates
    workdir = git(tiny.repo, "show", f"{branch}:workdir-seen.txt").strip()
    assert workdir.endswith("/worktrees/cli")  # {workdir} and the cwd are the repo directory
    assert git(tiny.repo, "show", f"{branch}:done.txt").strip() == "made"
    log = tiny.runs / "r1" / "tasks" / "cli" / "agent" / "attempt-1" / "command.log"
    assert log.is_file()


def test_only_the_named_host_variables_reach_the_command_agent(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_API_KEY", "sk-passed-in-0001")
    monkeypatch.setenv("OTHER_SECRET_TOKEN", "tok-kept-out-0002")
    tiny.write_policy(agent=command_agent(env=["AGENT_API_KEY"]))
    tiny.add_spec("envs", replay=False)
    assert tiny.run().exit_code == 0

    seen = git(tiny.repo, "show", "harness/r1/envs:env-seen.txt")
    assert "AGENT_API_KEY=sk-passed-in-0001" in seen
    assert "tok-kept-out-0002" not in seen


PROBE = (
    "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\" "
    "&& echo reached > net.txt || echo refused > net.txt; echo made > done.txt"
)


@pytest.mark.parametrize(("network", "expected"), [(False, "refused"), (True, "reached")])
def test_network_only_when_the_policy_grants_it(
    tiny: TinyProject, http_server: int, network: bool, expected: str
) -> None:
    tiny.write_policy(agent=command_agent(PROBE.format(port=http_server), network=network))
    tiny.add_spec("net", replay=False)
    assert tiny.run().exit_code == 0

    assert git(tiny.repo, "show", "harness/r1/net:net.txt").strip() == expected


def test_a_failing_command_agent_escalates_and_keeps_its_work(tiny: TinyProject) -> None:
    tiny.write_policy(agent=command_agent("echo partial > wip.txt; echo 'out of ideas'; exit 3"))
    tiny.add_spec("fails", replay=False)
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("fails")
    assert (task["outcome"], task["attempts"]) == ("escalated", 1)
    assert task["reason"].startswith("agent error on attempt 1")
    assert "exited 3" in task["reason"] and "out of ideas" in task["reason"]
    assert branch_exists(tiny.repo, "harness/r1/fails")
    assert git(tiny.repo, "show", "harness/r1/fails:wip.txt").strip() == "partial"


def test_a_command_agent_past_its_time_limit_is_killed_and_escalates(tiny: TinyProject) -> None:
    tiny.write_policy(agent=command_agent("echo started > wip.txt; sleep 60", timeout_s=1))
    tiny.add_spec("slow", replay=False)
    result = tiny.run()

    assert result.exit_code == 0, result.stderr
    task = tiny.task("slow")
    assert task["outcome"] == "escalated"
    assert task["reason"].startswith("budget exhausted on attempt 1")
    assert "killed" in task["reason"]
    assert git(tiny.repo, "show", "harness/r1/slow:wip.txt").strip() == "started"


def test_command_agent_without_a_command_is_refused_before_anything_runs(
    tiny: TinyProject,
) -> None:
    tiny.write_policy(agent={"kind": "command"})
    tiny.add_spec("none", replay=False)
    result = tiny.run()

    assert result.exit_code == 2
    assert "agent.command" in result.stderr
    assert not tiny.runs.exists() or not any(tiny.runs.iterdir())
