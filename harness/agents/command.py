"""The `command` agent: a CLI coding agent (a headless Claude Code, aider, …) run inside the
sandbox from an argv template in policy. Its changes are gated like any other agent's."""

from __future__ import annotations

import os
import shlex
import time
from contextlib import nullcontext

from harness import redact
from harness.agents import AttemptContext, AttemptRecord
from harness.agents.limiter import AdaptiveLimiter
from harness.agents.prompt import repo_instructions, system_prompt, task_message
from harness.config.policy import AgentConfig, GateConfig
from harness.config.spec import Spec
from harness.feedback import Feedback
from harness.gates.record import excerpt
from harness.problems import Problem, problem_type, render_markdown
from harness.sandbox import Sandbox
from harness.sandbox.bridge import Denial
from harness.sandbox.egress_proxy import AllowlistProxy
from harness.sandbox.host_files import create_new

REFUSED_FILE = "egress-refused.txt"
NOT_STARTED = {126: "could not be executed", 127: "was not found"}
"""Exit codes with which a shell says the command never started."""


class CommandAgent:
    name = "command"

    def __init__(
        self, config: AgentConfig, gates: list[GateConfig], limiter: AdaptiveLimiter | None = None
    ) -> None:
        assert config.command is not None
        self.argv = config.command
        self.config = config
        self.gates = gates
        self.limiter = limiter
        """The run's API limiter: one slot per running CLI agent, since each calls the model
        API on its own (harness cannot see its requests, only how many such agents run)."""

    def attempt(
        self, spec: Spec, sandbox: Sandbox, feedback: Feedback | None, context: AttemptContext
    ) -> AttemptRecord:
        # The prompt goes to the sandbox's scratch dir: readable by the agent, never committed.
        # The agent writes there too (a symlink at the next attempt's name would take harness's
        # write to any host file), so the file is created new, under a name it cannot guess.
        prompt = system_prompt(self.gates, repo_instructions(sandbox))
        prompt += "\n\n" + task_message(spec, context.number, feedback) + "\n"
        prompt += refused_before(context, self.config.egress)
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
        log = context.log_dir / "command.log"
        refused: list[Denial] = []
        with self.limiter.slot(lease_s=timeout + 60) if self.limiter else nullcontext():
            if self.config.egress:  # the allowlisted hosts only, through tinyproxy
                with AllowlistProxy(self.config.egress) as proxy:
                    done = sandbox.run(
                        shlex.join(argv),
                        timeout_s=timeout,
                        log_path=log,
                        env=env,
                        egress=proxy.egress,
                    )
                    refused = proxy.denials()
            else:
                done = sandbox.run(shlex.join(argv), timeout_s=timeout, log_path=log, env=env)
        record = AttemptRecord(
            number=context.number,
            agent=self.name,
            stop_reason="finished",
            summary=excerpt(done.output),
            duration_s=done.duration_s,
            egress_refused=[str(denial) for denial in refused],
        )
        # Kept beside the attempt's log (harness's directory), for the next attempt's prompt.
        context.log_dir.mkdir(parents=True, exist_ok=True)
        (context.log_dir / REFUSED_FILE).write_text("".join(f"{d}\n" for d in refused), "utf-8")
        if done.timed_out:
            record.stop_reason = "budget"
            record.error = f"the command agent ran past its {timeout:.0f} s limit and was killed"
        elif done.exit_code in NOT_STARTED:
            # The shell's own codes: the agent never ran. A person must fix the set-up.
            record.stop_reason = "owner_action_required"
            record.error = (
                f"`{argv[0]}` {NOT_STARTED[done.exit_code]} in the sandbox (exit "
                f"{done.exit_code}); fix agent.command, or make the program visible inside the "
                f"sandbox (sandbox.read_paths): {excerpt(done.output)[-300:]}"
            )
        elif done.exit_code != 0:
            record.stop_reason = "error"
            record.error = (
                f"the command agent exited {done.exit_code}: {excerpt(done.output)[-500:]}"
            )
        return record


def refused_before(context: AttemptContext, allowed: list[str]) -> str:
    """The connections refused in the previous attempt, as a problem for this one's prompt."""
    previous = context.log_dir.parent / f"attempt-{context.number - 1}" / REFUSED_FILE
    refused = previous.read_text(encoding="utf-8").splitlines() if previous.is_file() else []
    if not refused:
        return ""
    problem = Problem(
        type=problem_type("egress-refused"),
        title="Your previous attempt tried to reach hosts policy does not allow",
        detail=f"refused: {', '.join(refused[:10])}. Policy allows only: "
        f"{', '.join(allowed) or 'nothing'} (agent.egress); everything else is refused.",
        code="egress-refused",
        category="policy",
    )
    return "\n" + render_markdown([problem]) + "\n"
