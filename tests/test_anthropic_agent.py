"""The `anthropic` agent backend against the fake Messages API (tests/fake_anthropic.py), driven
by the real anthropic SDK: the tool-use loop, feedback between attempts, capped retries,
owner-action errors, tool errors, budgets, the fleet limiter, cost accounting and redaction.

Most tests run `harness run --agent anthropic` in-process on the tiny project (shell-command
gates, so a run takes a second or two); a few call `AnthropicAgent.attempt` directly on a real
WorktreeSandbox. No test waits on a clock: waits the harness asks for are recorded (and long
ones cut short) by the `sleeps` fixture, so a harness that obeyed `retry-after: 3600` fails
fast instead of hanging.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import pytest
from fake_anthropic import (
    FakeMessagesServer,
    RecordedRequest,
    ReplayScript,
    Reply,
    Script,
    Usage,
    block_text,
    error,
    message,
    overloaded,
    rate_limited,
    raw,
    sequence,
    text,
    tool_use,
)
from helpers import (
    CliResult,
    TinyProject,
    branch_exists,
    escalation_problems,
    git,
    run_cli,
)

from harness.agents import AttemptContext, AttemptRecord
from harness.agents import Usage as HarnessUsage
from harness.agents.anthropic import AnthropicAgent
from harness.agents.fleet import Fleet
from harness.config.policy import Policy
from harness.config.spec import Spec
from harness.sandbox.local import WorktreeSandbox

KEY = "test-key"
MODEL = "claude-test-1"
PRICES = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}
RUN_ID = "r1"
WRITE_DONE = ("write_file", {"path": "done.txt", "content": "done\n"})
FINISH = ("finish", {"summary": "done"})


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_ambient_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)


Serve = Callable[..., FakeMessagesServer]


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """Start a fake Messages API and point ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL at it."""
    servers: list[FakeMessagesServer] = []

    def start(script: Script, *, key: str = KEY, **kwargs: Any) -> FakeMessagesServer:
        server = FakeMessagesServer(script, api_key=key, **kwargs).start()
        servers.append(server)
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every time.sleep() asked for during the test. Waits over 2 s are recorded but cut short,
    so a harness that obeys an hour-long retry-after fails the test instead of hanging it."""
    recorded: list[float] = []
    real_sleep = time.sleep
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            recorded.append(seconds)
        real_sleep(min(seconds, 2.0))

    monkeypatch.setattr(time, "sleep", sleep)
    return recorded


def write_policy(tiny: TinyProject, gates: list[dict[str, Any]] | None = None, **over: Any) -> Path:
    """An anthropic policy for the tiny project: fast retries, shell-command gates."""
    agent: dict[str, Any] = {
        "kind": "anthropic",
        "model": MODEL,
        "max_tokens": 1024,
        "retry": {"max_retries": 6, "initial_backoff_s": 0.05, "max_wait_s": 120},
    }
    agent |= over.pop("agent", {})
    budget: dict[str, Any] = {"max_attempts": 2, "max_steps": 20, "wall_clock_s": 300}
    budget |= over.pop("budget", {})
    return tiny.write_policy(gates, agent=agent, budget=budget, prices={MODEL: PRICES}, **over)


def run(tiny: TinyProject, policy: Path, *extra: str, run_id: str = RUN_ID) -> CliResult:
    argv = ["run", str(tiny.specs), "--policy", str(policy), "--agent", "anthropic"]
    argv += ["--runs-dir", str(tiny.runs), "--run-id", run_id, *extra]
    return run_cli(argv, cwd=tiny.root)


def reply(*calls: tuple[str, dict[str, Any]], usage: Usage | None = None) -> Reply:
    """An assistant turn calling these tools, in order."""
    return message([text("Working."), *(tool_use(name, args) for name, args in calls)], None, usage)


def task_dir(tiny: TinyProject, spec_id: str, run_id: str = RUN_ID) -> Path:
    return tiny.runs / run_id / "tasks" / spec_id


def trajectory(tiny: TinyProject, spec_id: str, run_id: str = RUN_ID) -> list[dict[str, Any]]:
    """The task's trajectory lines, wherever under its task directory the file is."""
    found = sorted(task_dir(tiny, spec_id, run_id).rglob("trajectory.jsonl"))
    assert found, f"no trajectory.jsonl under {task_dir(tiny, spec_id, run_id)}"
    return [json.loads(line) for p in found for line in p.read_text("utf-8").splitlines()]


def statuses(server: FakeMessagesServer) -> list[int]:
    return [r.status for r in server.requests]


def first_user_text(body: dict[str, Any]) -> str:
    return block_text(body["messages"][0]["content"])


def tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    """The tool_result blocks of the request's last (user) message."""
    last = request.body["messages"][-1]
    assert last["role"] == "user" and isinstance(last["content"], list)
    return [b for b in last["content"] if b.get("type") == "tool_result"]


def cost(usage: Usage) -> float:
    return (
        usage.input_tokens * PRICES["input"]
        + usage.output_tokens * PRICES["output"]
        + usage.cache_creation_input_tokens * PRICES["cache_write"]
        + usage.cache_read_input_tokens * PRICES["cache_read"]
    ) / 1_000_000


# --- 1. feedback between attempts ----------------------------------------------------------

WANT = hashlib.sha256(b"fix").hexdigest()[:12]
# The right content is only in the gate's output (a hash computed when the gate runs), never in
# the spec, the system prompt or the gate command: attempt 2 can only get it from the feedback.
FIX_GATE = [
    {
        "name": "fixed",
        "kind": "test",
        "command": 'w=$(printf fix | sha256sum | cut -c1-12); test "$(cat fixed.txt)" = "$w" '
        '|| { echo "fixed.txt is wrong: want $w"; exit 1; }',
        "timeout_s": 30,
    }
]


def feedback_script(body: dict[str, Any], call_index: int) -> Reply:
    first = first_user_text(body)
    attempt = re.search(r"^attempt: (\d+)$", first, re.MULTILINE)
    assert attempt is not None, first
    if any(m["role"] == "assistant" for m in body["messages"]):
        return reply(FINISH)
    wanted = re.search(r"want ([0-9a-f]{12})", first)
    content = "wrong" if attempt.group(1) == "1" else (wanted.group(1) if wanted else "no hint")
    return reply(("write_file", {"path": "fixed.txt", "content": content}))


def test_attempt_two_acts_on_the_gate_feedback(tiny: TinyProject, serve: Serve) -> None:
    tiny.add_spec("fix", replay=False)
    server = serve(feedback_script)
    result = run(tiny, write_policy(tiny, FIX_GATE))

    assert result.exit_code == 0, result.stdout
    task = tiny.task("fix")
    assert (task["outcome"], task["attempts"], task["agent"]) == ("verified", 2, "anthropic")
    # The gate is of kind test: its failure on attempt 1 is re-run once on the same tree (the
    # flaky check), and fails again, so it is the agent's to fix. Attempt 2's run, on the
    # committed tree, is the verification (harness.gates.reuse).
    assert [(g["phase"], g["attempt"], g["passed"]) for g in task["gates"]] == [
        ("attempt", 1, False),
        ("attempt", 1, False),
        ("attempt", 2, True),
    ]
    bodies = [r.body for r in server.requests]
    assert statuses(server) == [200] * 4
    openers = [b for b in bodies if len(b["messages"]) == 1]
    # The `attempt:` contract line is the opener's second line (the feedback's YAML front
    # matter, further down, has an `attempt:` line of its own).
    assert [first_user_text(b).splitlines()[:2] for b in openers] == [
        ["spec: fix", "attempt: 1"],
        ["spec: fix", "attempt: 2"],
    ]
    first, second = (first_user_text(b) for b in openers)
    assert "want" not in first and "previous attempt" not in first
    assert f"fixed.txt is wrong: want {WANT}" in second
    assert "Your previous attempt did not pass the gates" in second
    # What attempt 2 was told is exactly what the run recorded as its feedback.
    told = (task_dir(tiny, "fix") / "feedback-1.md").read_text("utf-8")
    assert told.strip() in second
    assert git(tiny.repo, "show", f"{task['branch']}:fixed.txt") == WANT
    assert task["usage"]["calls"] == 4


def test_request_shape_system_prompt_tools_and_cache_breakpoints(
    tiny: TinyProject, serve: Serve
) -> None:
    (tiny.repo / "AGENTS.md").write_text("Always use tabs. MARKER-42\n", encoding="utf-8")
    git(tiny.repo, "add", "-A")
    git(tiny.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "agents")
    tiny.add_spec("shape", replay=False, body="Create done.txt, please.\n")
    server = serve(sequence(reply(WRITE_DONE), reply(FINISH)))
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 0, result.stdout
    assert tiny.task("shape")["outcome"] == "verified"
    first = server.requests[0].body
    assert first["model"] == MODEL and first["max_tokens"] == 1024
    [system] = first["system"]
    assert system["cache_control"] == {"type": "ephemeral"}
    assert "test -f done.txt" in system["text"] and "MARKER-42" in system["text"]
    names = [t["name"] for t in first["tools"]]
    assert set(names) == {"list_files", "read_file", "search", "write_file", "edit_file"} | {
        "run",
        "finish",
    }
    assert first["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in t for t in first["tools"][:-1])
    opener = first_user_text(first)
    assert opener.splitlines()[:2] == ["spec: shape", "attempt: 1"]
    assert "Create done.txt, please." in opener
    # The second call carries the whole conversation: the tool_use and its result.
    second = server.requests[1].body
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    [result_block] = tool_results(server.requests[1])
    assert result_block["is_error"] is False and "wrote done.txt" in result_block["content"]


# --- 2-4. transient errors and retry-after ---------------------------------------------------


def test_overloaded_storm_is_retried_and_the_task_completes(
    tiny: TinyProject, serve: Serve, sleeps: list[float]
) -> None:
    tiny.add_spec("storm", replay=False)
    server = serve(
        sequence(overloaded(), overloaded(), overloaded(), reply(WRITE_DONE), reply(FINISH))
    )
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 0, result.stdout
    task = tiny.task("storm")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    assert statuses(server) == [529, 529, 529, 200, 200]
    # Only replies that were billed count as calls.
    assert task["usage"]["calls"] == 2
    lines = trajectory(tiny, "storm")
    assert [line.get("retries") for line in lines] == [3, 0]
    # Full jitter: retry n waits uniform(0, 0.05 * 2^(n-1)) (harness.agents.limiter).
    backoffs = sleeps[:3]
    assert all(0 <= s <= 0.05 * 2**n for n, s in enumerate(backoffs)), sleeps


def test_overloaded_past_max_retries_is_parked_then_deferred_by_the_breaker(
    tiny: TinyProject, serve: Serve, sleeps: list[float]
) -> None:
    """Retries run out: the task is parked and tried again in the run (not escalated), until
    the circuit breaker (every call failing for 1 s) defers it; no attempt is charged."""
    tiny.add_spec("down", replay=False)
    server = serve(sequence(overloaded(), repeat_last=True))
    retry = {"max_retries": 2, "initial_backoff_s": 0.05, "max_wait_s": 0.2}
    policy = write_policy(tiny, agent={"retry": retry, "circuit_breaker_s": 1.0})
    result = run(tiny, policy)

    assert result.exit_code == 75, result.stdout
    task = tiny.task("down")
    assert (task["outcome"], task["attempts"], task["escalation"]) == ("deferred", 0, None)
    assert "circuit breaker" in task["reason"] and "overloaded_error" in task["reason"]
    assert task["retry_at"] is not None
    statuses_seen = statuses(server)
    assert set(statuses_seen) == {529} and len(statuses_seen) > 3  # parked, tried again
    assert task["gates"] == []
    assert "circuit breaker" in result.stdout and "harness resume r1" in result.stdout


@pytest.mark.parametrize(
    ("limited", "asked"),
    [(rate_limited(1), 1.0), (rate_limited(0.25, ms=True), 0.25)],
    ids=["retry-after", "retry-after-ms"],
)
def test_rate_limit_is_retried_after_the_wait_the_server_asked_for(
    tiny: TinyProject, serve: Serve, sleeps: list[float], limited: Reply, asked: float
) -> None:
    tiny.add_spec("limited", replay=False)
    server = serve(sequence(limited, reply(WRITE_DONE), reply(FINISH)))
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 0, result.stdout
    task = tiny.task("limited")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    assert statuses(server) == [429, 200, 200]
    # The server's wait is the floor, full jitter on top (at most the first backoff, 0.05 s).
    assert any(asked <= s <= asked + 0.05 for s in sleeps), sleeps
    assert [line.get("retries") for line in trajectory(tiny, "limited")] == [1, 0]


def _http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), True)


@pytest.mark.parametrize(
    "limited",
    [
        lambda: rate_limited(3600),
        lambda: rate_limited(3600, ms=True),
        lambda: error(429, "rate_limit_error", "slow down", {"retry-after": _http_date_in(3600)}),
    ],
    ids=["seconds", "ms", "http-date"],
)
def test_hour_long_retry_after_is_not_obeyed(
    tiny: TinyProject, serve: Serve, sleeps: list[float], limited: Callable[[], Reply]
) -> None:
    tiny.add_spec("hour", replay=False)
    server = serve(sequence(limited(), reply(WRITE_DONE), reply(FINISH)))
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 75, result.stdout  # deferred: resume later
    assert statuses(server) == [429]  # one request; no retry, no hour-long wait
    assert not [s for s in sleeps if s > 120], sleeps
    task = tiny.task("hour")
    assert (task["outcome"], task["attempts"], task["escalation"]) == ("deferred", 0, None)
    reason = task["reason"]
    assert reason.startswith("deferred until ")
    assert "rate_limit_error" in reason and "over the 120 s cap" in reason
    assert task["gates"] == []
    retry_at = datetime.fromisoformat(task["retry_at"])
    assert 3000 < (retry_at - datetime.now(UTC)).total_seconds() <= 3600


# --- 5. errors a person must fix -----------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "key", "status", "kind", "says"),
    [
        (sequence(reply(FINISH)), "wrong-key-0000", 401, "authentication_error", "x-api-key"),
        (
            sequence(error(404, "not_found_error", f"model: {MODEL}")),
            KEY,
            404,
            "not_found_error",
            f"model: {MODEL}",
        ),
        (
            sequence(error(400, "invalid_request_error", "max_tokens: too large")),
            KEY,
            400,
            "invalid_request_error",
            "max_tokens: too large",
        ),
    ],
    ids=["401-bad-key", "404-unknown-model", "400-bad-request"],
)
def test_refused_request_is_an_error_owner_action_required(
    tiny: TinyProject,
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
    script: Script,
    key: str,
    status: int,
    kind: str,
    says: str,
) -> None:
    tiny.add_spec("refused", replay=False)
    server = serve(script)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 1, result.stdout  # the agent could not run: a broken set-up
    assert statuses(server) == [status]  # not retried
    task = tiny.task("refused")
    assert (task["outcome"], task["attempts"], task["escalation"]) == ("error", 1, None)
    assert task["reason"].startswith(
        "owner_action_required: the anthropic agent could not run on attempt 1"
    )
    assert kind in task["reason"] and says in task["reason"]


# --- 6-7. tool errors go back to the model; the loop continues ---------------------------------


def make_agent(
    server: FakeMessagesServer, **over: Any
) -> tuple[AnthropicAgent, Policy, anthropic.Anthropic]:
    raw_policy: dict[str, Any] = {
        "agent": {"kind": "anthropic", "model": MODEL, "retry": {"initial_backoff_s": 0.05}},
        "gates": [{"name": "done", "kind": "test", "command": "test -f done.txt"}],
        "prices": {MODEL: PRICES},
        **over,
    }
    policy = Policy.model_validate(raw_policy)
    client = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0)
    agent = AnthropicAgent(
        policy.agent, policy.prices[MODEL], Fleet.for_policy(policy), policy.gates, client=client
    )
    return agent, policy, client


def attempt(
    agent: AnthropicAgent, policy: Policy, spec: Spec, sandbox: WorktreeSandbox, logs: Path
) -> AttemptRecord:
    context = AttemptContext(
        number=1,
        budget=policy.budget,
        spent=HarnessUsage(),
        deadline=time.monotonic() + 120,
        log_dir=logs / "agent" / "attempt-1",
        trajectory=logs / "trajectory.jsonl",
    )
    return agent.attempt(spec, sandbox, None, context)  # attempt 1: no feedback


def test_malformed_tool_input_comes_back_as_a_tool_error_and_the_loop_continues(
    tiny_spec: Spec, sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    script = sequence(
        message(
            [
                tool_use("edit_file", {"path": "README.md", "old": "# tiny"}, id="toolu_no_new"),
                tool_use("delete_everything", {}, id="toolu_unknown"),
            ]
        ),
        message(
            [
                tool_use(
                    "edit_file",
                    {"path": "README.md", "old": "# tiny", "new": "# small"},
                    "toolu_ok",
                )
            ]
        ),
        message([tool_use("finish", {"summary": "renamed"}, id="toolu_fin")]),
    )
    with FakeMessagesServer(script, api_key=KEY) as server:
        agent, policy, client = make_agent(server)
        with client:
            record = attempt(agent, policy, tiny_spec, sandbox, tmp_path / "logs")
        requests = server.requests

    assert record.stop_reason == "finished" and record.summary == "renamed"
    assert [r.status for r in requests] == [200, 200, 200]
    bad, unknown = tool_results(requests[1])
    assert (bad["tool_use_id"], bad["is_error"]) == ("toolu_no_new", True)
    assert "invalid arguments for edit_file" in bad["content"]
    assert "new" in bad["content"] and "Field required" in bad["content"]
    assert (unknown["tool_use_id"], unknown["is_error"]) == ("toolu_unknown", True)
    assert "unknown tool 'delete_everything'" in unknown["content"]
    [ok] = tool_results(requests[2])
    assert (ok["tool_use_id"], ok["is_error"]) == ("toolu_ok", False)
    assert [(s.tool, s.ok) for s in record.steps] == [
        ("edit_file", False),
        ("delete_everything", False),
        ("edit_file", True),
        ("finish", True),
    ]
    assert sandbox.read("README.md") == "# small\n"
    assert record.usage.calls == 3


def test_path_escapes_are_refused_and_nothing_is_written_outside(
    tiny_spec: Spec, sandbox: WorktreeSandbox, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:12]
    outside_tmp = Path(f"/tmp/harness-escape-{tag}.txt")
    outside_rel = f"../escape-{tag}.txt"
    escapes = [
        tool_use("read_file", {"path": "../../../../../../etc/passwd"}, id="toolu_r1"),
        tool_use("read_file", {"path": "/etc/passwd"}, id="toolu_r2"),
        tool_use("write_file", {"path": str(outside_tmp), "content": "x"}, id="toolu_w1"),
        tool_use("write_file", {"path": outside_rel, "content": "x"}, id="toolu_w2"),
        tool_use("edit_file", {"path": "../../etc/hosts", "old": "a", "new": "b"}, id="toolu_e"),
        tool_use("list_files", {"path": ".."}, id="toolu_l"),
        tool_use("write_file", {"path": ".git", "content": "gitdir: /tmp\n"}, id="toolu_git"),
        tool_use("run", {"command": "ln -s /etc etc-link"}, id="toolu_ln"),
    ]
    script = sequence(
        message(escapes),
        message([tool_use("read_file", {"path": "etc-link/passwd"}, id="toolu_link")]),
        message([tool_use("write_file", {"path": "done.txt", "content": "ok"}, id="toolu_in")]),
        message([tool_use("finish", {"summary": "tried"}, id="toolu_fin")]),
    )
    dot_git = (sandbox.root / ".git").read_text("utf-8")
    with FakeMessagesServer(script, api_key=KEY) as server:
        agent, policy, client = make_agent(server)
        with client:
            record = attempt(agent, policy, tiny_spec, sandbox, tmp_path / "logs")
        requests = server.requests

    assert record.stop_reason == "finished"
    assert [r.status for r in requests] == [200] * 4
    results = {r["tool_use_id"]: r for r in tool_results(requests[1])}
    for refused in ("toolu_r1", "toolu_r2", "toolu_w1", "toolu_w2", "toolu_e", "toolu_l"):
        assert results[refused]["is_error"] is True, results[refused]
        assert "outside the repository" in results[refused]["content"] or (
            "relative to the repository" in results[refused]["content"]
        ), results[refused]
    assert results["toolu_git"]["is_error"] is True
    assert "git metadata" in results["toolu_git"]["content"]
    assert (sandbox.root / ".git").read_text("utf-8") == dot_git
    [link] = tool_results(requests[2])
    assert link["is_error"] is True and "outside the repository" in link["content"]
    everything_sent = json.dumps([r.body for r in requests])
    assert "root:x:0:0" not in everything_sent
    assert not outside_tmp.exists()
    assert not (sandbox.path / outside_rel).resolve().exists()
    [inside] = tool_results(requests[3])
    assert inside["is_error"] is False and sandbox.read("done.txt") == "ok"


# --- 8. budgets ------------------------------------------------------------------------------

STEP_USAGE = Usage(10, 60)  # $0.00093 a call at PRICES


@pytest.mark.parametrize(
    ("budget", "says"),
    [
        ({"max_output_tokens": 100}, "output tokens 120 reached 100"),
        ({"max_cost_usd": 0.0015}, "reached the cap $0.0015"),
        ({"max_input_tokens": 15}, "input tokens 20 reached 15"),
    ],
    ids=["output-tokens", "cost", "input-tokens"],
)
def test_budget_hit_mid_task_escalates_and_keeps_the_work(
    tiny: TinyProject, serve: Serve, budget: dict[str, Any], says: str
) -> None:
    tiny.add_spec("capped", replay=False)
    server = serve(
        sequence(
            reply(("write_file", {"path": "part1.txt", "content": "one\n"}), usage=STEP_USAGE),
            reply(("write_file", {"path": "part2.txt", "content": "two\n"}), usage=STEP_USAGE),
            reply(WRITE_DONE, usage=STEP_USAGE),
            reply(FINISH, usage=STEP_USAGE),
        )
    )
    result = run(tiny, write_policy(tiny, budget=budget))

    assert result.exit_code == 0, result.stdout
    assert server.call_count == 2  # the third call was never made
    task = tiny.task("capped")
    assert (task["outcome"], task["attempts"]) == ("escalated", 1)
    assert task["reason"].startswith("budget exhausted on attempt 1")
    assert says in task["reason"]
    assert task["gates"] == []  # the attempt stopped; nothing to gate
    branch = task["branch"]
    assert branch and branch_exists(tiny.repo, branch)
    assert git(tiny.repo, "show", f"{branch}:part1.txt") == "one\n"
    assert git(tiny.repo, "show", f"{branch}:part2.txt") == "two\n"
    usage = task["usage"]
    assert (usage["calls"], usage["input_tokens"], usage["output_tokens"]) == (2, 20, 120)
    assert usage["cost_usd"] == pytest.approx(2 * cost(STEP_USAGE), rel=1e-9)
    [problem] = escalation_problems(tiny.root / task["escalation"])
    assert problem["title"] == "Budget exhausted" and says in problem["detail"]


def test_run_budget_stops_every_task_of_the_run(tiny: TinyProject, serve: Serve) -> None:
    for spec_id in ("first", "second"):
        tiny.add_spec(spec_id, replay=False)
    server = serve(sequence(reply(WRITE_DONE, usage=STEP_USAGE), repeat_last=True))
    policy = write_policy(tiny, run_budget={"max_cost_usd": 0.0005})
    result = run(tiny, policy, "--concurrency", "1")

    assert result.exit_code == 0, result.stdout
    tasks = tiny.summary()["tasks"]
    assert [t["outcome"] for t in tasks] == ["escalated", "escalated"]
    assert all("the run's cost" in t["reason"] for t in tasks), [t["reason"] for t in tasks]
    assert server.call_count == 1  # the first call spent the run's budget; no more were made
    assert sum(t["usage"]["calls"] for t in tasks) == 1


# --- 9. many tasks, one key --------------------------------------------------------------------


class OfferedGauge(FakeMessagesServer):
    """The fake, also counting the requests it holds from their arrival until it starts writing
    their answer. The fake's own `peak_offered_concurrency` frees a request only after its
    answer is written, so a client that sends its next request at once is, rarely, counted
    twice (and answered 429); this count cannot exceed what the client had in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holding = self.peak_holding = 0
        self._gauge = threading.Lock()

    def _handle(self, handler: Any) -> None:
        send, left = handler.send, False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                with self._gauge:
                    self.holding -= 1

        def send_after_leaving(*args: Any) -> None:
            leave()
            send(*args)

        with self._gauge:
            self.holding += 1
            self.peak_holding = max(self.peak_holding, self.holding)
        handler.send = send_after_leaving
        try:
            super()._handle(handler)
        finally:
            leave()


def test_twenty_parallel_tasks_stay_within_the_fleet_limit(
    tiny: TinyProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_ids = [f"task-{n:02d}" for n in range(20)]
    for spec_id in spec_ids:
        tiny.add_spec(spec_id)  # with a replay file: write done.txt, finish
    policy = write_policy(
        tiny, agent={"rate_limit": {"max_concurrent_requests": 4}}, concurrency=20
    )
    with OfferedGauge(ReplayScript(tiny.specs), api_key=KEY, max_concurrent=4) as server:
        server.latency_s = 0.3  # long enough for the tasks' calls to pile up at the limiter
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        result = run(tiny, policy, "--concurrency", "20")

    assert result.exit_code == 0, result.stdout
    tasks = tiny.summary()["tasks"]
    assert {t["spec_id"]: t["outcome"] for t in tasks} == dict.fromkeys(spec_ids, "verified")
    assert all(t["usage"]["calls"] == 2 for t in tasks)
    assert server.peak_concurrency <= 4
    assert server.peak_holding <= 4  # what harness sent at once (without its limiter: ~20)
    assert server.call_count == 40 and server.script_errors == []


# --- 10. cost accounting and malformed replies ------------------------------------------------

USAGE_A = Usage(1000, 200, cache_creation_input_tokens=500, cache_read_input_tokens=4000)
USAGE_B = Usage(1200, 100, cache_creation_input_tokens=0, cache_read_input_tokens=5000)
USAGE_M = Usage(700, 30, cache_creation_input_tokens=40, cache_read_input_tokens=300)
JSON = {"content-type": "application/json"}


def test_cost_is_computed_from_the_price_table(tiny: TinyProject, serve: Serve) -> None:
    tiny.add_spec("costed", replay=False)
    serve(sequence(reply(WRITE_DONE, usage=USAGE_A), reply(FINISH, usage=USAGE_B)))
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 0, result.stdout
    summary = tiny.summary()
    [task] = summary["tasks"]
    assert task["outcome"] == "verified"
    # By hand: (2200 * 3 + 300 * 15 + 500 * 3.75 + 9000 * 0.30) / 1e6 = $0.015675
    assert cost(USAGE_A) + cost(USAGE_B) == pytest.approx(0.015675, rel=1e-12)
    usage = task["usage"]
    assert usage["cost_usd"] == pytest.approx(0.015675, rel=1e-9)
    counts = ("calls", "input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")
    assert {k: usage[k] for k in counts} == {
        "calls": 2,
        "input_tokens": 2200,
        "output_tokens": 300,
        "cache_write_tokens": 500,
        "cache_read_tokens": 9000,
    }
    assert summary["usage"] == usage
    per_call = [line["usage"]["cost_usd"] for line in trajectory(tiny, "costed")]
    assert per_call == pytest.approx([cost(USAGE_A), cost(USAGE_B)], rel=1e-9)


def test_unparsable_reply_is_retried_and_counted(tiny: TinyProject, serve: Serve) -> None:
    tiny.add_spec("garbled", replay=False)
    server = serve(
        sequence(
            reply(WRITE_DONE, usage=USAGE_A),
            raw(200, b'{"type": "message", "content": [', JSON),
            reply(FINISH, usage=USAGE_B),
        )
    )
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 0, result.stdout
    task = tiny.task("garbled")
    assert (task["outcome"], task["attempts"]) == ("verified", 1)
    assert statuses(server) == [200, 200, 200]
    usage = task["usage"]
    assert usage["calls"] == 3  # the garbled reply was a call too
    assert usage["input_tokens"] == 2200 and usage["output_tokens"] == 300
    assert usage["cost_usd"] == pytest.approx(cost(USAGE_A) + cost(USAGE_B), rel=1e-9)
    assert [line.get("retries") for line in trajectory(tiny, "garbled")] == [0, 1]


def _message_json(**fields: Any) -> bytes:
    body = {
        "id": "msg_0123456789abcdef01234567",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": USAGE_M.to_json(),
        **fields,
    }
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "body",
    [_message_json(content=...), _message_json(content=None), _message_json(content=7)],
    ids=["no-content", "null-content", "content-not-a-list"],
)
def test_billed_reply_that_is_not_a_message_is_retried_and_costed(
    tiny: TinyProject, serve: Serve, body: bytes
) -> None:
    """A 200 whose JSON has usage but no usable content: the SDK's parse() does not validate
    (it returns a Message with content None), so the harness must notice, retry and bill it."""
    tiny.add_spec("hollow", replay=False)
    server = serve(
        sequence(
            reply(WRITE_DONE, usage=USAGE_A), raw(200, body, JSON), reply(FINISH, usage=USAGE_B)
        )
    )
    result = run(tiny, write_policy(tiny))

    task = tiny.task("hollow")
    assert (task["outcome"], task["reason"]) == ("verified", None)
    assert result.exit_code == 0, result.stdout
    assert statuses(server) == [200, 200, 200]
    usage = task["usage"]
    assert usage["calls"] == 3
    assert usage["input_tokens"] == 2200 + USAGE_M.input_tokens
    expected = cost(USAGE_A) + cost(USAGE_M) + cost(USAGE_B)
    assert usage["cost_usd"] == pytest.approx(expected, rel=1e-9)


# --- 11. no key ----------------------------------------------------------------------------------


def test_without_an_api_key_every_task_is_an_error_before_any_agent_runs(
    tiny: TinyProject, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken set-up, not an escalation: every task ends in error (owner_action_required),
    no request is made, nothing is provisioned, and the run exits 1."""
    for spec_id in ("one", "two"):
        tiny.add_spec(spec_id, replay=False)
    server = serve(sequence(reply(WRITE_DONE), repeat_last=True))
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 1, result.stdout + result.stderr
    assert server.requests == []
    tasks = tiny.summary()["tasks"]
    assert [t["outcome"] for t in tasks] == ["error", "error"]
    for task in tasks:
        assert (task["attempts"], task["branch"], task["escalation"]) == (0, None, None)
        assert task["reason"].startswith(
            "owner_action_required: no agent: ANTHROPIC_API_KEY is not set"
        )
        assert tiny.events(task["spec_id"]) == [
            ("triage", "enter"),
            ("triage", "exit"),
            ("teardown", "enter"),
            ("teardown", "exit"),
        ]
        assert not branch_exists(tiny.repo, f"harness/{RUN_ID}/{task['spec_id']}")


# --- 12. secrets and the trajectory ----------------------------------------------------------


@pytest.fixture
def secret_run(tiny: TinyProject, serve: Serve) -> tuple[TinyProject, str, str]:
    """A run whose agent reads a file holding the API key and an sk-ant-… token, and writes
    the key back into the tree (so it is in a response too)."""
    key = f"test-key-{uuid.uuid4().hex}"
    token = "sk-ant-api03-" + "Zq7" * 12
    (tiny.repo / "config.env").write_text(f"KEY={key}\nOTHER={token}\n", encoding="utf-8")
    git(tiny.repo, "add", "-A")
    git(tiny.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "config")
    tiny.add_spec("leaky", replay=False)
    serve(
        sequence(
            reply(("read_file", {"path": "config.env"})),
            reply(("run", {"command": "cat config.env"})),
            reply(("write_file", {"path": "done.txt", "content": f"copied {key} {token}\n"})),
            reply(FINISH),
        ),
        key=key,
    )
    result = run(tiny, write_policy(tiny))
    assert result.exit_code == 0, result.stdout
    assert tiny.task("leaky")["outcome"] == "verified"
    return tiny, key, token


def test_trajectory_redacts_the_api_key_and_key_shaped_strings(
    secret_run: tuple[TinyProject, str, str],
) -> None:
    tiny, key, token = secret_run
    paths = sorted(task_dir(tiny, "leaky").rglob("trajectory.jsonl"))
    assert paths
    logged = "".join(p.read_text("utf-8") for p in paths)
    assert "config.env" in logged and "[REDACTED" in logged  # the file's text did reach it
    assert key not in logged
    assert token not in logged and "sk-ant-api03" not in logged


def test_no_record_of_the_agent_conversation_holds_the_key(
    secret_run: tuple[TinyProject, str, str],
) -> None:
    """Not just trajectory.jsonl: the attempt record (attempt-<n>.json) holds every tool call's
    result too, so it must be redacted like the trajectory."""
    tiny, key, token = secret_run
    records = sorted(task_dir(tiny, "leaky").glob("attempt-*.json"))
    assert [p.name for p in records] == ["attempt-1.json"]
    recorded = records[0].read_text("utf-8")
    assert "config.env" in recorded  # the tool calls are in it
    assert key not in recorded
    assert token not in recorded


def test_trajectory_is_where_the_readme_says(tiny: TinyProject, serve: Serve) -> None:
    """README: every request and response is in runs/<run-id>/tasks/<spec-id>/trajectory.jsonl."""
    tiny.add_spec("where", replay=False)
    serve(sequence(reply(WRITE_DONE), reply(FINISH)))
    result = run(tiny, write_policy(tiny))

    assert result.exit_code == 0, result.stdout
    path = task_dir(tiny, "where") / "trajectory.jsonl"
    assert path.is_file(), sorted(
        str(p.relative_to(tiny.runs)) for p in task_dir(tiny, "where").rglob("*")
    )
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert [(line["attempt"], line["model"]) for line in lines] == [(1, MODEL)] * 2
    assert all(line["request_id"].startswith("req_") for line in lines)
