"""Whole runs against a fake Messages API that pushes back (issue #14): no task is lost.

- 20 tasks at concurrency 10, a server that admits 4 at once, sheds 15 % with 529 and tells
  one request `retry-after: 3600`: 19 verified, 1 deferred with `retry_at`, exit 75; then
  `harness resume --now` verifies the deferred one, its cut attempt not charged.
- A server that answers 529 to everything: the circuit breaker stops the run starting tasks
  within its time, and defers them all.

Real git, real bubblewrap, the tiny project's one fast gate (`test -f done.txt`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from fake_anthropic import (
    FakeMessagesServer,
    ReplayScript,
    answer_once,
    block_text,
    overloaded,
    rate_limited,
    sequence,
    shedding,
)
from helpers import CliResult, TinyProject, make_tiny_repo, run_cli

KEY = "test-key"
MODEL = "claude-test-1"
PRICES = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}
SPECS = [f"task-{n:02d}" for n in range(20)]
TOLD_TO_WAIT = "task-07"
WALL_CLOCK_S = 120


def write_policy(tiny: TinyProject, **agent: Any) -> None:
    tiny.write_policy(
        agent={
            "kind": "anthropic",
            "model": MODEL,
            "max_tokens": 256,
            "retry": {"max_retries": 6, "initial_backoff_s": 0.05, "max_wait_s": 2},
            **agent,
        },
        budget={"max_attempts": 2, "max_steps": 10, "wall_clock_s": WALL_CLOCK_S},
        prices={MODEL: PRICES},
        concurrency=10,
    )


def asks_for(spec_id: str) -> Any:
    def picks(body: dict[str, Any]) -> bool:
        return f"spec: {spec_id}\n" in block_text(body["messages"][0]["content"]) + "\n"

    return picks


@dataclass
class PushedBack:
    tiny: TinyProject
    first: CliResult
    resumed: CliResult
    server: FakeMessagesServer
    summary_before: dict[str, Any]
    shown: CliResult
    """`harness show r1` between the run and the resume."""
    too_early: CliResult
    """`harness resume r1` (without --now) before the deferred task's retry_at."""

    def tasks(self, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {task["spec_id"]: task for task in summary["tasks"]}


@pytest.fixture(scope="module")
def pushed_back(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushedBack]:
    root = tmp_path_factory.mktemp("limiter-e2e")
    make_tiny_repo(root / "repo")
    tiny = TinyProject(root)
    for spec_id in SPECS:
        tiny.add_spec(spec_id)  # write done.txt, finish: two model calls
    write_policy(tiny)
    script = answer_once(
        shedding(ReplayScript(tiny.specs), 0.15, seed=14),
        rate_limited(3600),
        asks_for(TOLD_TO_WAIT),
    )
    with (
        FakeMessagesServer(script, api_key=KEY, max_concurrent=4, latency_s=0.3) as server,
        pytest.MonkeyPatch.context() as env,
    ):
        for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS"):
            env.delenv(name, raising=False)
        env.setenv("ANTHROPIC_API_KEY", KEY)
        env.setenv("ANTHROPIC_BASE_URL", server.base_url)
        first = tiny.run()
        summary_before = tiny.summary()
        shown = run_cli(["show", "r1", "--runs-dir", str(tiny.runs)], cwd=root)
        too_early = run_cli(["resume", "r1", "--runs-dir", str(tiny.runs)], cwd=root)
        resumed = run_cli(["resume", "r1", "--now", "--runs-dir", str(tiny.runs)], cwd=root)
        yield PushedBack(tiny, first, resumed, server, summary_before, shown, too_early)


def test_nineteen_verified_one_deferred_exit_75(pushed_back: PushedBack) -> None:
    first = pushed_back.first
    assert first.exit_code == 75, first.stdout + first.stderr
    tasks = pushed_back.tasks(pushed_back.summary_before)
    outcomes = {spec_id: task["outcome"] for spec_id, task in tasks.items()}
    assert outcomes == {s: "deferred" if s == TOLD_TO_WAIT else "verified" for s in SPECS}
    deferred = tasks[TOLD_TO_WAIT]
    assert (deferred["attempts"], deferred["escalation"], deferred["pr"]) == (0, None, None)
    assert "asked to wait 3600 s, over the 2 s cap" in deferred["reason"]
    retry_at = datetime.fromisoformat(deferred["retry_at"])
    assert 3500 < (retry_at - datetime.now(UTC)).total_seconds() <= 3600
    assert "1 task deferred" in first.stdout and "harness resume r1" in first.stdout
    # The server pushed back for real: 429s over its cap and 529s shed.
    statuses = [request.status for request in pushed_back.server.requests]
    assert statuses.count(429) >= 1 and statuses.count(529) > 0


def test_show_says_deferred_and_when_to_resume(pushed_back: PushedBack) -> None:
    shown = pushed_back.shown.stdout
    assert "deferred" in shown and "19 verified" not in shown  # a table, not only counts
    assert "1 task deferred by the model API: `harness resume r1` continues them after" in shown


def test_no_task_ran_over_its_time(pushed_back: PushedBack) -> None:
    for task in pushed_back.summary_before["tasks"]:
        assert task["duration_s"] <= WALL_CLOCK_S, task


def test_the_deferred_task_kept_its_sandbox_for_the_resume(pushed_back: PushedBack) -> None:
    events = pushed_back.tiny.events(TOLD_TO_WAIT)
    assert ("task", "deferred") in events
    assert ("teardown", "enter") in events  # after the resume, not before
    first_teardown = events.index(("teardown", "enter"))
    assert events.index(("task", "deferred")) < first_teardown
    assert ("provision", "enter") in events[: events.index(("task", "deferred"))]
    # Provisioned once: the resume took the kept sandbox, it did not make another.
    assert events.count(("provision", "exit")) == 1


def test_resume_before_retry_at_says_when_and_leaves_it_deferred(pushed_back: PushedBack) -> None:
    early = pushed_back.too_early
    assert early.exit_code == 75, early.stdout + early.stderr
    assert "1 deferred task not due yet (the first at " in early.stdout
    assert "`harness resume r1 --now` takes them at once" in early.stdout


def test_resume_now_verifies_the_deferred_task_without_charging_an_attempt(
    pushed_back: PushedBack,
) -> None:
    resumed = pushed_back.resumed
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    tasks = pushed_back.tasks(pushed_back.tiny.summary())
    assert {task["outcome"] for task in tasks.values()} == {"verified"}
    assert tasks[TOLD_TO_WAIT]["attempts"] == 1 and tasks[TOLD_TO_WAIT]["retry_at"] is None


def test_the_circuit_breaker_stops_starting_tasks_and_defers_the_rest(tmp_path: Any) -> None:
    make_tiny_repo(tmp_path / "repo")
    tiny = TinyProject(tmp_path)
    for spec_id in SPECS[:6]:
        tiny.add_spec(spec_id)
    breaker_s = 1.5
    retry = {"max_retries": 2, "initial_backoff_s": 0.05, "max_wait_s": 0.2}
    write_policy(tiny, retry=retry, circuit_breaker_s=breaker_s)
    policy = yaml.safe_load((tiny.root / "policy.yaml").read_text("utf-8"))
    policy["concurrency"] = 2
    (tiny.root / "policy.yaml").write_text(yaml.safe_dump(policy), "utf-8")
    with FakeMessagesServer(sequence(overloaded(), repeat_last=True), api_key=KEY) as server:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ANTHROPIC_API_KEY", KEY)
            env.setenv("ANTHROPIC_BASE_URL", server.base_url)
            result = tiny.run()
        sent = server.admitted_at

    assert result.exit_code == 75, result.stdout + result.stderr
    tasks = tiny.summary()["tasks"]
    assert {task["outcome"] for task in tasks} == {"deferred"}
    # Running ones deferred at their next call, parked ones when due, the rest never started.
    assert all("circuit breaker open" in task["reason"] for task in tasks)
    # The last request went within the breaker's time (plus one capped wait and slack) of the
    # first; each task would otherwise have burnt its own retries, again and again.
    assert sent[-1] - sent[0] <= breaker_s + 0.2 + 1.0, sent
    assert result.stdout.count("circuit breaker: every model call") == 1


def test_a_key_refused_everywhere_ends_its_tasks_in_error_and_the_breaker_stops_the_rest(
    tmp_path: Any,
) -> None:
    """401 to everything (a locked key): the tasks that ran end in error (a person must fix
    the key), and once every call has failed for the breaker's time no further task starts."""
    make_tiny_repo(tmp_path / "repo")
    tiny = TinyProject(tmp_path)
    for spec_id in SPECS[:12]:
        tiny.add_spec(spec_id)
    write_policy(tiny, circuit_breaker_s=1.0)
    policy = yaml.safe_load((tiny.root / "policy.yaml").read_text("utf-8"))
    policy["concurrency"] = 1
    (tiny.root / "policy.yaml").write_text(yaml.safe_dump(policy), "utf-8")
    with FakeMessagesServer(sequence(overloaded()), api_key="another-key") as server:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ANTHROPIC_API_KEY", KEY)  # not the server's: 401 to every request
            env.setenv("ANTHROPIC_BASE_URL", server.base_url)
            result = tiny.run()
        refused = [request for request in server.requests if request.status == 401]

    assert result.exit_code == 1, result.stdout + result.stderr
    tasks = tiny.summary()["tasks"]
    errors = [task for task in tasks if task["outcome"] == "error"]
    deferred = [task for task in tasks if task["outcome"] == "deferred"]
    assert errors and deferred and len(errors) + len(deferred) == len(tasks)
    assert all("authentication_error" in task["reason"] for task in errors), errors
    # Started before the breaker opened: deferred at its first call; the rest never started.
    assert all("circuit breaker open" in task["reason"] for task in deferred)
    assert any("circuit breaker open: not started" in task["reason"] for task in deferred)
    assert len(refused) == len(errors)  # one request per task that ran, none after
    assert result.stdout.count("circuit breaker: every model call") == 1
