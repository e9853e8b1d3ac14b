"""The blueprint's routing, edge by edge: the real task graph and its real nodes, with a fake
sandbox and a fake agent plugged in through their protocols (TaskSandbox, Agent).

The fake sandbox is a real git worktree of a tiny repository (so commits, diffs and the
fake-green guard are real), but its commands are scripted: each gate run takes the next
scripted result, so a test says exactly what the gates report, attempt by attempt. No
bubblewrap, no subprocess per gate: these tests are about where the graph goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import init_repo

from graphs.task import TaskState, build_task_graph
from harness.agents import AttemptContext, AttemptRecord, StopReason
from harness.agents.fleet import Fleet
from harness.agents.select import AgentUnavailable
from harness.config.policy import parse_policy
from harness.config.spec import Spec, load_spec
from harness.feedback import Feedback
from harness.gates.caches import GateCaches
from harness.gates.preexisting import PreexistingFailures
from harness.git import GitRepository, Worktree
from harness.integration.local import LocalIntegration
from harness.publish.local import LocalPublisher
from harness.run.context import LiveTasks, RunConfig, RunContext, RunServices
from harness.run.effects import Effects
from harness.run.ledger import RunLedger
from harness.sandbox import Completed, TaskSandbox
from harness.sandbox.bridge import Egress
from harness.sandbox.bubblewrap import Isolation
from harness.store import open_store

RUN = "r1"


@dataclass
class ScriptedSandbox:
    """A TaskSandbox whose tree is a real worktree and whose commands answer from a script."""

    worktree: Worktree
    scratch: Path
    results: list[Completed]
    """What each command run returns, in order; an unscripted run fails the test."""
    commands: list[str] = field(default_factory=list)
    isolation: str = "scripted"
    torn_down: bool = False

    @property
    def path(self) -> Path:
        return self.worktree.project

    def run(
        self,
        command: str,
        timeout_s: float,
        log_path: Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        egress: Egress | None = None,
    ) -> Completed:
        self.commands.append(command)
        assert self.results, f"unscripted command run: {command!r}"
        done = self.results.pop(0)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(done.output, encoding="utf-8")
        return Completed(done.exit_code, done.output, done.duration_s, done.timed_out, 0, log_path)

    def read(self, relpath: str) -> str:
        return (self.path / relpath).read_text(encoding="utf-8")

    def write(self, relpath: str, content: str) -> None:
        (self.path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (self.path / relpath).write_text(content, encoding="utf-8")

    def teardown(self) -> None:
        self.torn_down = True


@dataclass
class ScriptedSandboxes:
    """Stands in for harness.sandbox.lifecycle.TaskSandboxes: one sandbox, statuses noted."""

    sandbox: ScriptedSandbox
    marks: list[str] = field(default_factory=list)
    released: list[tuple[str, bool]] = field(default_factory=list)

    def get(self, spec: Spec) -> TaskSandbox:
        return self.sandbox

    def mark(self, spec_id: str, status: str) -> None:
        self.marks.append(status)

    def release(self, spec_id: str, *, verified: bool) -> None:
        self.released.append((spec_id, verified))


Step = Callable[[TaskSandbox], None]


@dataclass
class ScriptedAgent:
    """An Agent whose attempts write what the script says and stop how it says."""

    attempts: list[tuple[list[Step], StopReason]]
    name: str = "scripted"
    seen: list[Feedback | None] = field(default_factory=list)

    def attempt(
        self, spec: Spec, sandbox: TaskSandbox, feedback: Feedback | None, context: AttemptContext
    ) -> AttemptRecord:
        self.seen.append(feedback)
        steps, stop = self.attempts[context.number - 1]
        for step in steps:
            step(sandbox)
        return AttemptRecord(number=context.number, agent=self.name, stop_reason=stop)


def write(path: str, text: str = "x\n") -> Step:
    return lambda sandbox: sandbox.write(path, text)


def ok() -> Completed:
    return Completed(0, "all good\n", 0.01)


def failing(message: str = "app.py:3:1: E1 something is wrong") -> Completed:
    return Completed(1, f"{message}\nFound 1 error.\n", 0.01)


@dataclass
class Task:
    """One task through the real blueprint; what it ended with and the nodes it went through."""

    ctx: RunContext
    sandboxes: ScriptedSandboxes
    agent: ScriptedAgent
    path: list[str]
    final: dict[str, Any]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("x = 1\n", encoding="utf-8")
    return init_repo(repo)


@pytest.fixture
def run_task(tmp_path: Path, repo: Path) -> Iterator[Callable[..., Task]]:
    stores = []

    def run(
        results: list[Completed],
        attempts: list[tuple[list[Step], StopReason]] | None = None,
        *,
        tier: int = 1,
        started_ago_s: float = 0.0,
        agent_error: Exception | None = None,
        **policy: Any,
    ) -> Task:
        spec_path = tmp_path / "spec.md"
        front = {"id": "t", "title": "A task", "tier": tier, "repo": str(repo)}
        spec_path.write_text(f"---\n{yaml.safe_dump(front)}---\nDo it.\n", encoding="utf-8")
        spec = load_spec(spec_path)
        document = {
            "agent": {"kind": "replay"},
            "gates": [{"name": "check", "kind": "lint", "command": "check", "timeout_s": 30}],
            "budget": {"max_attempts": 2, "max_steps": 20, "wall_clock_s": 120},
            "infrastructure": {"retries": 0},
            "feedback": {"check_base": False},
            "publish": {"auto_pr_tiers": [1], "protected_paths": [".github/**"]},
        } | policy
        parsed = parse_policy(yaml.safe_dump(document), tmp_path / "policy.yaml")
        run_dir = tmp_path / "runs" / RUN
        run_dir.mkdir(parents=True)
        root = tmp_path / "worktree"
        GitRepository(repo).add_worktree(root, f"harness/{RUN}/t", spec.base_commit)
        sandbox = ScriptedSandbox(Worktree.create(root, root), tmp_path / "scratch", results)
        sandbox.scratch.mkdir()
        sandboxes = ScriptedSandboxes(sandbox)
        agent = ScriptedAgent(attempts or [([write("app.py", "x = 2\n")], "finished")])

        def new_agent(spec: Spec) -> ScriptedAgent:
            if agent_error is not None:
                raise agent_error
            return agent

        store = open_store(f"sqlite:///{tmp_path / 'harness.db'}")
        stores.append(store)
        config = RunConfig(RUN, run_dir, parsed, tmp_path / "policy.yaml", "now")
        ledger = RunLedger(run_dir, RUN)
        services = RunServices(
            store=store,
            worker="worker",
            ledger=ledger,
            effects=Effects(store),
            publisher=LocalPublisher(run_dir, config.relative),
            isolation=Isolation(False, "scripted"),
            fleet=Fleet.for_policy(parsed),
            preexisting=(preexisting := PreexistingFailures(run_dir)),
            caches=GateCaches(preexisting),
            integration=LocalIntegration(),
        )
        # The scripted stand-ins are structurally what the graph uses of the real ones.
        ctx = RunContext(config, services, LiveTasks(sandboxes, new_agent))  # type: ignore[arg-type]
        initial: TaskState = {"spec": spec, "started_at": time.time() - started_ago_s}
        path: list[str] = []
        final: dict[str, Any] = dict(initial)
        graph = build_task_graph()
        for step in graph.stream(initial, {"configurable": {"run": ctx}}, stream_mode="updates"):
            for name, update in step.items():
                path.append(name)
                final |= update or {}
        ledger.close()
        return Task(ctx, sandboxes, agent, path, final)

    yield run
    for store in stores:
        store.close()


AGENT_TO_VERIFIED = ["agent", "gates", "guard", "verify", "publish", "teardown"]


def test_a_passing_attempt_is_verified_and_published(run_task: Callable[..., Task]) -> None:
    task = run_task([ok()])  # one gate run: verification reuses it (harness.gates.reuse)
    assert task.path == ["triage", "provision", *AGENT_TO_VERIFIED]
    assert task.final["outcome"] == "verified"
    assert task.final["verify_reused"].attempt == 1
    assert task.final["pr"] == f"runs/{RUN}/prs/t.md"
    assert task.sandboxes.released == [("t", True)]
    assert task.sandboxes.marks == ["validating", "ready"]
    # the attempt's work was committed on the branch, with its idempotency key
    assert f"Harness-Key: {RUN}/t/commit/1" in task.sandboxes.sandbox.worktree.head_message()


def test_tier_3_escalates_before_any_agent_runs(run_task: Callable[..., Task]) -> None:
    task = run_task([], tier=3)
    assert task.path == ["triage", "escalate", "teardown"]
    assert task.final["outcome"] == "escalated"
    assert task.final["reason"].startswith("tier 3 (human-led)")
    assert task.agent.seen == []


def test_no_agent_is_an_error_a_person_must_fix(run_task: Callable[..., Task]) -> None:
    task = run_task([], agent_error=AgentUnavailable("no key"))
    assert task.path == ["triage", "teardown"]
    assert task.final["outcome"] == "error"
    assert task.final["reason"] == "owner_action_required: no agent: no key"
    [problem] = task.final["problems"]
    assert problem.category == "policy" and problem.type.endswith("agent-unavailable")
    assert problem.owner_action_required


def test_a_failing_gate_feeds_back_then_the_retry_verifies(run_task: Callable[..., Task]) -> None:
    attempts = [
        ([write("app.py", "x = 2\n")], "finished"),
        ([write("app.py", "x = 3\n")], "finished"),
    ]
    task = run_task([failing(), ok(), ok()], attempts)
    assert task.path == [
        "triage", "provision", "agent", "gates", "feedback", *AGENT_TO_VERIFIED
    ]  # fmt: skip
    assert task.final["outcome"] == "verified" and task.final["attempt"] == 2
    # the second attempt was told what the first one's gate found, and the file says the same
    first, second = task.agent.seen
    assert first is None and second is not None and second.problems
    told = (task.ctx.config.task_dir("t") / "feedback-1.md").read_text(encoding="utf-8")
    assert "something is wrong" in told
    assert task.final["found"]["1"] and task.final["fixed"]["2"]


def test_the_attempt_budget_escalates(run_task: Callable[..., Task]) -> None:
    attempts = [([write("app.py", "x = 2\n")], "finished")] * 2
    task = run_task([failing(), failing()], attempts)
    assert task.path == [
        "triage", "provision", "agent", "gates", "feedback", "agent", "gates", "escalate",
        "teardown",
    ]  # fmt: skip
    assert task.final["reason"] == "budget exhausted: gate 'check' still failing after 2 attempts"
    assert task.sandboxes.released == [("t", False)]


def test_the_wall_clock_is_checked_after_the_gates(run_task: Callable[..., Task]) -> None:
    # Attempts are left (3), but the task started longer ago than its wall-clock budget.
    task = run_task([failing()], budget={"max_attempts": 3, "wall_clock_s": 60}, started_ago_s=61)
    assert task.path == ["triage", "provision", "agent", "gates", "escalate", "teardown"]
    assert task.final["reason"] == "wall-clock budget exhausted"


def test_the_step_budget_escalates_at_once(run_task: Callable[..., Task]) -> None:
    task = run_task([], [([write("app.py", "x = 2\n")], "max_steps")])
    assert task.path == ["triage", "provision", "agent", "escalate", "teardown"]
    assert task.final["reason"] == "step budget exhausted on attempt 1: 20 tool calls"
    assert task.sandboxes.sandbox.commands == []  # no gate ran


def test_a_missing_tool_ends_the_task_in_error(run_task: Callable[..., Task]) -> None:
    task = run_task([Completed(127, "sh: 1: check: not found\n", 0.01)])
    assert task.path == ["triage", "provision", "agent", "gates", "teardown"]
    assert task.final["outcome"] == "error"
    assert "'check' was not found in the sandbox" in task.final["reason"]


def test_infrastructure_escalates_without_charging_the_agent(
    run_task: Callable[..., Task],
) -> None:
    task = run_task([Completed(-9, "", 30.0, timed_out=True)])
    assert task.path == ["triage", "provision", "agent", "gates", "escalate", "teardown"]
    assert task.final["reason"].startswith("infrastructure: gate 'check' timed out on every try")


def test_a_protected_path_escalates_at_the_guard(run_task: Callable[..., Task]) -> None:
    task = run_task([ok()], [([write(".github/workflows/ci.yml")], "finished")])
    assert task.path == ["triage", "provision", "agent", "gates", "guard", "escalate", "teardown"]
    assert task.final["reason"] == "touches protected paths: .github/workflows/ci.yml"


def test_fake_green_escalates_at_the_guard(run_task: Callable[..., Task]) -> None:
    task = run_task([ok()], [([write("app.py", "x = 1  # noqa\n")], "finished")])
    assert task.path == ["triage", "provision", "agent", "gates", "guard", "escalate", "teardown"]
    assert task.final["reason"].startswith("fake-green guard: 1 finding(s) (suppression_added)")
    assert [p.code for p in task.final["problems"]] == ["suppression_added"]


def test_fake_green_under_flag_is_listed_in_the_pr(run_task: Callable[..., Task]) -> None:
    attempts = [([write("app.py", "x = 1  # noqa\n")], "finished")]
    task = run_task([ok(), ok()], attempts, guard={"action": "flag"})
    assert task.path == ["triage", "provision", *AGENT_TO_VERIFIED]
    pr = (task.ctx.config.run_dir / "prs" / "t.md").read_text(encoding="utf-8")
    assert "Flagged by the fake-green guard" in pr and "suppression_added" in pr


def test_a_verify_failure_escalates(run_task: Callable[..., Task]) -> None:
    task = run_task([ok(), failing()], verify={"rerun": True})
    assert task.path == [
        "triage", "provision", "agent", "gates", "guard", "verify", "escalate", "teardown"
    ]  # fmt: skip
    assert task.final["reason"] == "verification failed: gate 'check' failed on the committed tree"


def test_nothing_to_publish_escalates(run_task: Callable[..., Task]) -> None:
    task = run_task([ok(), ok()], [([], "finished")])
    assert task.path == ["triage", "provision", *AGENT_TO_VERIFIED[:-1], "escalate", "teardown"]
    assert task.final["reason"].startswith("no changes")


def test_a_tier_outside_auto_pr_tiers_escalates_after_verifying(
    run_task: Callable[..., Task],
) -> None:
    task = run_task([ok(), ok()], tier=2)
    assert task.path == ["triage", "provision", *AGENT_TO_VERIFIED[:-1], "escalate", "teardown"]
    assert "tier 2 is not in publish.auto_pr_tiers" in task.final["reason"]
    record = (task.ctx.config.run_dir / "escalations" / "t.md").read_text(encoding="utf-8")
    assert f"branch `harness/{RUN}/t`" in record


def test_a_node_that_raises_ends_in_error_and_still_tears_down(
    run_task: Callable[..., Task],
) -> None:
    def crash(sandbox: TaskSandbox) -> None:
        raise RuntimeError("boom")

    task = run_task([], [([crash], "finished")])
    assert task.path == ["triage", "provision", "agent", "teardown"]
    assert task.final["outcome"] == "error"
    assert task.final["reason"].startswith("agent failed: RuntimeError: boom")
    assert task.sandboxes.released == [("t", False)]
