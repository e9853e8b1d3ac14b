"""The `command` agent: a CLI coding agent (a headless Claude Code, aider, …) run inside the
sandbox from an argv template in policy. Its changes are gated like any other agent's."""

from __future__ import annotations

import os
import shlex
import time

from harness import redact
from harness.agents import AttemptContext, AttemptRecord
from harness.agents.prompt import repo_instructions, system_prompt, task_message
from harness.config.policy import AgentConfig, GateConfig
from harness.config.spec import Spec
from harness.feedback import Feedback
from harness.gates.record import excerpt
from harness.sandbox import Sandbox
from harness.sandbox.host_files import create_new


class CommandAgent:
    name = "command"

    def __init__(self, config: AgentConfig, gates: list[GateConfig]) -> None:
        assert config.command is not None
        self.argv = config.command
        self.config = config
        self.gates = gates

    def attempt(
        self, spec: Spec, sandbox: Sandbox, feedback: Feedback | None, context: AttemptContext
    ) -> AttemptRecord:
        # The prompt goes to the sandbox's scratch dir: readable by the agent, never committed.
        # The agent writes there too (a symlink at the next attempt's name would take harness's
        # write to any host file), so the file is created new, under a name it cannot guess.
        prompt = system_prompt(self.gates, repo_instructions(sandbox))
        prompt += "\n\n" + task_message(spec, context.number, feedback) + "\n"
        stem = f"prompt-attempt-{context.number}"
        prompt_file = create_new(sandbox.scratch, stem, ".md", prompt)
        argv = [
            part.replace("{prompt_file}", str(prompt_file)).replace("{workdir}", str(sandbox.path))
            for part in self.argv
        ]
        env = {name: os.environ[name] for name in self.config.env if name in os.environ}
        # Whatever the agent is handed, it may print or write: every writer redacts it from now
        # on, whatever the variable's name.
        redact.remember(env)
        timeout = max(1.0, min(self.config.timeout_s, context.deadline - time.monotonic()))
        done = sandbox.run(
            shlex.join(argv),
            timeout_s=timeout,
            log_path=context.log_dir / "command.log",
            env=env,
            network=self.config.network,
        )
        record = AttemptRecord(
            number=context.number,
            agent=self.name,
            stop_reason="finished",
            summary=excerpt(done.output),
            duration_s=done.duration_s,
        )
        if done.timed_out:
            record.stop_reason = "budget"
            record.error = f"the command agent ran past its {timeout:.0f} s limit and was killed"
        elif done.exit_code != 0:
            record.stop_reason = "error"
            record.error = (
                f"the command agent exited {done.exit_code}: {excerpt(done.output)[-500:]}"
            )
        return record
