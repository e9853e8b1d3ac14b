"""The adaptive API limiter (harness.agents.limiter) against the fake Messages API, driven by
the real SDK through harness's own call path (AnthropicAgent._call): AIMD finds the server's
concurrency cap, retries are jittered, the server's waits hold every request, and two worker
processes on one store (SQLite, PostgreSQL) share one limit."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fake_anthropic import FakeMessagesServer, Reply, message, rate_limited, sequence
from limiter_calls import REQUEST, call_from_threads, caller
from pg import create_database, drop_database

from harness.agents.limiter import PROBE_WINDOWS, AimdState, full_jitter_wait, next_state

OK = sequence(message("ok"), repeat_last=True)


def test_aimd_converges_to_the_servers_cap_within_two_halvings() -> None:
    """Started at 16 against a server that admits 4: two congestion episodes (16 → 8 → 4),
    whatever the number of 429s each brings; then a sawtooth around the cap."""
    with FakeMessagesServer(
        OK, api_key="test-key", max_concurrent=4, latency_s=0.05, concurrency_retry_after=None
    ) as server:
        agent = caller(server.base_url, 16)
        failures = call_from_threads(agent, threads=16, calls=8)

    assert failures == []
    seen = agent.fleet.limiter.limits_seen
    assert seen[:2] == [8, 4], seen
    # The sawtooth around the cap: probing one or two past it, halved back when refused.
    assert max(seen[2:], default=4) <= 6 and min(seen) >= 1, seen
    assert statistics.mean(seen[2:] or [4]) <= 4.5, seen
    calls = 16 * 8
    assert server.call_count == calls
    # The first burst (16 offered, 12 refused) is most of them; the sawtooth adds a few.
    assert server.rejected_for_concurrency / calls <= 0.3, server.rejected_for_concurrency


def test_retries_of_different_tasks_are_not_in_lockstep() -> None:
    """Eight requests told `retry-after: 1` at once: the retries wait at least the second
    asked for, and spread out over the jitter instead of arriving together."""

    together = threading.Barrier(8, timeout=10)

    def script(body: dict[str, Any], call_index: int) -> Reply:
        if call_index < 8:
            together.wait()  # the eight 429s go out at the same moment
            return rate_limited(1)
        return message("ok")

    with FakeMessagesServer(script, api_key="test-key") as server:
        agent = caller(server.base_url, 8, retry={"initial_backoff_s": 0.5})
        failures = call_from_threads(agent, threads=8, calls=1)

    assert failures == []
    first, retries = server.admitted_at[:8], server.admitted_at[8:]
    assert len(retries) == 8
    assert min(retries) - max(first) >= 1.0  # the server's wait is a floor
    spread = max(retries) - min(retries)
    assert spread >= 0.15, retries  # without jitter: all within a few ms
    assert statistics.pstdev(retries) > 0.05


def test_full_jitter_is_capped_and_floored() -> None:
    waits = [full_jitter_wait(6, 1.0, 10.0, 3.0) for _ in range(2000)]
    assert min(waits) >= 3.0 and max(waits) <= 10.0
    assert max(waits) - min(waits) > 5.0  # spread over [3, 10]
    assert all(full_jitter_wait(3, 1.0, 10.0, 3600.0) == 10.0 for _ in range(10))
    assert all(0 <= full_jitter_wait(1, 1.0, 10.0) <= 1.0 for _ in range(100))


def test_one_congestion_episode_halves_the_limit_once() -> None:
    state = AimdState(limit=8, ceiling=8)
    # Ten requests sent at t=1 all refused: one halving, not ten.
    for _ in range(10):
        state = next_state(state, "congested", sent_at=1.0, now=2.0, wait_until=None)
    assert state.limit == 4
    # A request sent after the halving that is refused too: a new episode.
    state = next_state(state, "congested", sent_at=2.5, now=3.0, wait_until=None)
    assert state.limit == 2
    # A window of successes (as many as the limit) adds one, back to just under the level
    # refused (4); trying 4 again takes PROBE_WINDOWS windows; never past the ceiling.
    for _ in range(2):
        state = next_state(state, "ok", sent_at=4.0, now=4.0, wait_until=None)
    assert state.limit == 3 and state.failing_since is None
    for _ in range(3 * PROBE_WINDOWS - 1):
        state = next_state(state, "ok", sent_at=5.0, now=5.0, wait_until=None)
    assert state.limit == 3
    state = next_state(state, "ok", sent_at=5.0, now=5.0, wait_until=None)
    assert state.limit == 4
    for _ in range(1000):
        state = next_state(state, "ok", sent_at=6.0, now=6.0, wait_until=None)
    assert state.limit == 8


def test_a_spent_rate_limit_holds_every_request_until_its_reset() -> None:
    """A 200 saying `anthropic-ratelimit-requests-remaining: 0` with a reset 0.6 s away: the
    next request (from any task) is not sent before the reset."""

    def script(body: dict[str, Any], call_index: int) -> Reply:
        if call_index > 0:
            return message("ok")
        reset = datetime.now(UTC) + timedelta(seconds=0.6)
        resets.append(reset.timestamp())
        headers = {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset.isoformat(),
        }
        return message("ok", headers=headers)

    resets: list[float] = []
    with FakeMessagesServer(script, api_key="test-key") as server:
        first, second = (caller(server.base_url, 4) for _ in range(2))
        second.fleet = first.fleet  # two tasks of one run
        first._call(dict(REQUEST))
        second._call(dict(REQUEST))
    assert server.admitted_at[1] >= resets[0] - 0.01, (server.admitted_at, resets)


def run_two_workers(store_url: str, server_cap: int | None) -> FakeMessagesServer:
    """Two worker processes, six threads each, limit 4 from policy, started at the same
    moment, against a server that admits `server_cap`; the server, with what it saw."""
    helper = Path(__file__).with_name("limiter_calls.py")
    with FakeMessagesServer(
        OK,
        api_key="test-key",
        max_concurrent=server_cap,
        latency_s=0.1,
        concurrency_retry_after=None,
    ) as server:
        argv = [store_url, server.base_url, "6", "6", "4"]
        workers = [
            subprocess.Popen(
                [sys.executable, str(helper), *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert server.call_count == 2 * 6 * 6
    return server


def test_two_worker_processes_share_the_limit_through_postgresql(postgres_server: str) -> None:
    """The peak the server was offered never exceeds its cap by more than one. (SQLite's
    sharing is the same SQL; every run in the other tests keeps its limiter there.)"""
    url = create_database(postgres_server)
    try:
        assert run_two_workers(url, 4).peak_offered_concurrency <= 5
    finally:
        drop_database(postgres_server, url)


def test_two_worker_processes_without_the_store_each_take_the_whole_limit() -> None:
    """The control: each process on its own sends up to its limit, 8 together (the server
    takes them all here, so no 429 makes either limiter back off)."""
    assert run_two_workers("memory", None).peak_concurrency > 5
