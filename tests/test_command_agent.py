"""The `command` agent: a CLI coding agent run inside the sandbox from an argv template. Here
the "CLI agent" is a shell script, so what harness hands it and what it can reach are visible."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import TinyProject, branch_exists, git
from test_egress import Recorder

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


# Attempt 1 calls an allowed and a refused host through the proxy variables and dials the
# allowed one directly; attempt 2 (after the gate failed) keeps its prompt and passes.
PROBE = """
import os, socket, sys, urllib.request
prompt = open(sys.argv[1]).read()
if "attempt: 2" in prompt:
    open("prompt-2.md", "w").write(prompt)
    open("done.txt", "w").write("made")
    sys.exit(0)
seen = []
for url in ["http://127.0.0.2:{allowed}/ok", "http://127.0.0.3:{denied}/steal"]:
    try:
        seen.append(url + " " + urllib.request.urlopen(url, data=b"x", timeout=10).read().decode())
    except Exception as exc:
        seen.append(url + " refused " + str(getattr(exc, "code", exc)))
try:
    socket.create_connection(("127.0.0.2", {allowed}), timeout=5)
    seen.append("direct reached")
except OSError as exc:
    seen.append("direct failed " + exc.strerror)
open("net.txt", "w").write("\\n".join(seen))
"""


def test_network_true_is_refused_naming_egress(tiny: TinyProject) -> None:
    tiny.write_policy(agent=command_agent(network=True))
    tiny.add_spec("net", replay=False)
    result = tiny.run()

    assert result.exit_code == 2
    assert "agent.network" in result.stderr and "agent.egress" in result.stderr


def test_an_egress_entry_that_is_not_a_host_name_is_one_line_naming_it(tiny: TinyProject) -> None:
    tiny.write_policy(agent=command_agent(egress=["api.anthropic.com", "https://evil.example"]))
    tiny.add_spec("net", replay=False)
    result = tiny.run()

    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if "agent.egress" in line]
    assert "agent.egress.1" in line and "'https://evil.example' is not a host name" in line


def test_a_networked_agent_reaches_its_allowed_host_and_not_another(tiny: TinyProject) -> None:
    allowed, denied = Recorder("127.0.0.2"), Recorder("127.0.0.3")
    try:
        probe = PROBE.format(allowed=allowed.port, denied=denied.port)
        agent = {
            "kind": "command",
            "command": ["python", "-c", probe, "{prompt_file}"],
            "egress": ["127.0.0.2"],
        }
        tiny.write_policy(agent=agent)
        tiny.add_spec("net", replay=False)
        result = tiny.run()
    finally:
        for server in (allowed, denied):
            server.shutdown()
            server.server_close()

    assert result.exit_code == 0, result.stderr
    assert tiny.task("net")["attempts"] == 2
    seen = git(tiny.repo, "show", "harness/r1/net:net.txt").splitlines()
    assert seen == [
        f"http://127.0.0.2:{allowed.port}/ok hello from 0.2",
        f"http://127.0.0.3:{denied.port}/steal refused 403",
        "direct failed Connection refused",
    ]
    assert [(method, path) for method, path, _ in allowed.seen] == [("POST", "/ok")]
    assert denied.seen == []
    record = json.loads((tiny.runs / "r1" / "tasks" / "net" / "attempt-1.json").read_text())
    assert record["egress_refused"] == [f"POST 127.0.0.3:{denied.port}"]
    prompt = git(tiny.repo, "show", "harness/r1/net:prompt-2.md")
    assert "tried to reach hosts policy does not allow" in prompt
    assert f"refused: POST 127.0.0.3:{denied.port}" in prompt


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


# --- an agent that cannot run is an error a person must fix, not an escalation ---------------


def test_a_command_agent_not_found_is_an_error_and_the_run_exits_1(tiny: TinyProject) -> None:
    tiny.write_policy(agent={"kind": "command", "command": ["no-such-agent-cli", "{prompt_file}"]})
    tiny.add_spec("missing", replay=False)
    result = tiny.run()

    assert result.exit_code == 1, result.stderr
    task = tiny.task("missing")
    assert (task["outcome"], task["attempts"], task["escalation"]) == ("error", 1, None)
    assert task["reason"].startswith(
        "owner_action_required: the command agent could not run on attempt 1: "
        "`no-such-agent-cli` was not found in the sandbox (exit 127)"
    )
    assert task["gates"] == []  # no gate ran on a tree no agent touched


def test_a_command_agent_crashing_at_its_start_is_an_error(tiny: TinyProject) -> None:
    """It exits non-zero having changed nothing (a missing config, a bad flag): every attempt
    would do the same."""
    tiny.write_policy(agent=command_agent("echo 'config file not found' >&2; exit 1"))
    tiny.add_spec("crash", replay=False)
    result = tiny.run()

    assert result.exit_code == 1, result.stderr
    task = tiny.task("crash")
    assert (task["outcome"], task["attempts"], task["escalation"]) == ("error", 1, None)
    assert task["reason"].startswith(
        "owner_action_required: the command agent could not run on attempt 1: it failed "
        "before doing anything: the command agent exited 1"
    )
    assert "config file not found" in task["reason"]
