"""Model calls through harness's own retry and limiter path (AnthropicAgent._call), from many
threads, for the limiter tests and bench/limiter.py; and, run as a script, one worker process
of the two-process store test:

    python tests/limiter_calls.py STORE_URL BASE_URL THREADS CALLS CEILING

makes THREADS x CALLS calls, the limiter's state in the store at STORE_URL (`memory`: in the
process alone); it prints `ready` and starts on a line on stdin, so that two processes start
together. Exit 0 when every call succeeded.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import anthropic

from harness.agents.anthropic import AnthropicAgent
from harness.agents.api_errors import CallFailed
from harness.agents.fleet import Fleet
from harness.agents.limiter import LimiterState, StoreLimiterState
from harness.config.policy import Policy

KEY = "test-key"
MODEL = "claude-test-1"
PRICES = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello"}],
}


def caller(
    base_url: str,
    ceiling: int,
    *,
    state: LimiterState | None = None,
    retry: dict[str, Any] | None = None,
    **agent: Any,
) -> AnthropicAgent:
    """An anthropic agent whose fleet (limiter) starts at `ceiling` requests at once."""
    policy = Policy.model_validate(
        {
            "agent": {
                "kind": "anthropic",
                "model": MODEL,
                "retry": {"initial_backoff_s": 0.05, "max_wait_s": 2, **(retry or {})},
                "rate_limit": {"max_concurrent_requests": ceiling},
                **agent,
            },
            "gates": [{"name": "done", "kind": "test", "command": "true"}],
            "prices": {MODEL: PRICES},
        }
    )
    client = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0)
    fleet = Fleet.for_policy(policy, state)
    return AnthropicAgent(policy.agent, policy.prices[MODEL], fleet, policy.gates, client=client)


def call_from_threads(
    agent: AnthropicAgent, threads: int, calls: int, before: Callable[[], None] = lambda: None
) -> list[str]:
    """`threads` threads each making `calls` calls; the failures (one line each)."""
    failures: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        before()
        for _ in range(calls):
            try:
                agent._call(dict(REQUEST))
            except CallFailed as failed:
                with lock:
                    failures.append(failed.problem.detail)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return failures


def main(argv: list[str]) -> int:
    from harness.store import open_store

    url, base_url, threads, calls, ceiling = argv
    store = open_store(url) if url != "memory" else None
    state = StoreLimiterState(store, "anthropic:shared") if store is not None else None
    agent = caller(base_url, int(ceiling), state=state)
    print("ready", flush=True)
    sys.stdin.readline()
    failures = call_from_threads(agent, int(threads), int(calls))
    if store is not None:
        store.close()
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
