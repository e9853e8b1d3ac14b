"""The adaptive API limiter every model call of a run goes through (AIMD, as TCP does), the
jittered backoff between retries, and the circuit breaker.

- Concurrency: the limit starts at `agent.rate_limit.max_concurrent_requests` and halves
  (at least 1) on a 429 or 529, once per congestion episode: only a request sent after the
  last decrease can cause the next one, so ten requests rejected together halve it once, not
  ten times. It grows by 1 after a window of successes (as many as the limit), up to just
  under the limit the episode began at; past that (probing the level that was refused) by 1
  per PROBE_WINDOWS windows, so a found cap is not hit every few calls. It never grows
  above the policy's value: that value is the user's stated maximum for the key (a key shared
  with other users, a tier), and the server's real cap is found below it, not above.
- Not-before: a `retry-after` (or an `anthropic-ratelimit-*-reset` with nothing remaining)
  sets the earliest time any request may go, for every task, not only the one that was told.
- Breaker: the time since every call across the run began failing (reset by any success).
  Past `agent.circuit_breaker_s`, no new task starts and running tasks are deferred.

The state is behind `LimiterState`: `MemoryLimiterState` (one process) or the store's (many
processes on one database; harness.store.limiter_state), which run the same AIMD rules
(`next_state`). Times are epoch seconds, since processes share them.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from harness.store import Store

WINDOW_S = 60.0
PROBE_WINDOWS = 8
"""Windows of successes per step when growing back to the limit a 429 or 529 came at."""
POLL_S = 0.1
"""How often a waiting request looks again at state other processes may have changed."""

ReplyVerdict = Literal["ok", "congested", "failed"]
"""What a reply says about the API: it answered; it is over capacity (429, 529); it failed
otherwise (connection errors, 5xx, 401): only `ok` resets the breaker."""


@dataclass(frozen=True)
class AimdState:
    limit: int
    ceiling: int
    """The policy's max_concurrent_requests: the limit never grows past it."""
    successes: int = 0
    """Replies since the limit last changed; a window of them (= limit) adds 1."""
    decreased_at: float = 0.0
    """When the limit was last halved: only requests sent after it can halve it again."""
    not_before: float = 0.0
    """No request goes before this time (a server's retry-after, a rate-limit reset)."""
    failing_since: float | None = None
    """Since when every reply has been a failure (None after any success)."""
    congested_limit: int = 0
    """The limit at which the last congestion episode began (0: none yet)."""
    in_flight: int = 0


def next_state(
    state: AimdState, verdict: ReplyVerdict, sent_at: float, now: float, wait_until: float | None
) -> AimdState:
    """The AIMD rules, once for both backends."""
    limit, successes, decreased_at = state.limit, state.successes, state.decreased_at
    failing_since, congested_limit = state.failing_since, state.congested_limit
    if verdict == "ok":
        failing_since, successes = None, successes + 1
        # Back up to just under the level that was refused: one window of successes per
        # step. Trying that level again (probing): PROBE_WINDOWS windows per step, so a server
        # whose cap is found is not pushed into a 429 every few calls.
        probing = limit + 1 >= congested_limit > 0
        window = limit * (PROBE_WINDOWS if probing else 1)
        if successes >= window and limit < state.ceiling:
            limit, successes = limit + 1, 0
    else:
        failing_since = failing_since if failing_since is not None else now
        if verdict == "congested" and sent_at >= decreased_at:
            congested_limit = limit
            limit, successes, decreased_at = max(1, limit // 2), 0, now
    not_before = max(state.not_before, wait_until or 0.0)
    return replace(
        state,
        limit=limit,
        successes=successes,
        decreased_at=decreased_at,
        not_before=not_before,
        failing_since=failing_since,
        congested_limit=congested_limit,
    )


def full_jitter_wait(
    retry: int, initial_s: float, max_wait_s: float, floor_s: float | None = None
) -> float:
    """The wait before retry number `retry` (1-based): uniform(0, backoff) with backoff =
    initial · 2^(retry-1), capped at max_wait_s, on top of the server's `retry-after` as a
    floor; never over max_wait_s. ("Full jitter": AWS Architecture Blog, "Exponential Backoff
    And Jitter".) Waiters told the same retry-after spread out instead of retrying at once."""
    floor = min(max(floor_s or 0.0, 0.0), max_wait_s)
    backoff = min(max_wait_s, initial_s * 2.0 ** (retry - 1))
    return min(max_wait_s, floor + random.uniform(0.0, min(backoff, max_wait_s - floor)))


class LimiterState(Protocol):
    """Where the limiter's state lives; every method is one atomic step."""

    def try_acquire(self, holder: str, lease_s: float, ceiling: int) -> float:
        """Take a slot for `holder` (0.0), or say how long to wait before asking again."""

    def release(self, holder: str) -> None: ...

    def report(
        self, verdict: ReplyVerdict, sent_at: float, wait_until: float | None, ceiling: int
    ) -> AimdState:
        """A reply's verdict, and the earliest time the server said any request may go; the
        state after it."""

    def snapshot(self, ceiling: int) -> AimdState: ...


class MemoryLimiterState:
    """The state in this process (tests, benchmarks, and agents made outside a run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: AimdState | None = None
        self._holders: dict[str, float] = {}

    def _current(self, ceiling: int) -> AimdState:
        if self._state is None or self._state.ceiling != ceiling:
            self._state = AimdState(limit=ceiling, ceiling=ceiling)
        return self._state

    def try_acquire(self, holder: str, lease_s: float, ceiling: int) -> float:
        now = time.time()
        with self._lock:
            state = self._current(ceiling)
            self._holders = {h: until for h, until in self._holders.items() if until >= now}
            if now < state.not_before:
                return state.not_before - now
            if len(self._holders) >= state.limit:
                return POLL_S
            self._holders[holder] = now + lease_s
            return 0.0

    def release(self, holder: str) -> None:
        with self._lock:
            self._holders.pop(holder, None)

    def report(
        self, verdict: ReplyVerdict, sent_at: float, wait_until: float | None, ceiling: int
    ) -> AimdState:
        with self._lock:
            self._state = next_state(
                self._current(ceiling), verdict, sent_at, time.time(), wait_until
            )
            return self._state

    def snapshot(self, ceiling: int) -> AimdState:
        with self._lock:
            return replace(self._current(ceiling), in_flight=len(self._holders))


class StoreLimiterState:
    """The state in the run's store, shared by every worker process on it, under `key` (a
    hash naming the API key, never the key: see `limiter_key`)."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key

    def try_acquire(self, holder: str, lease_s: float, ceiling: int) -> float:
        return self.store.api_try_acquire(self.key, holder, lease_s, ceiling)

    def release(self, holder: str) -> None:
        self.store.api_release(self.key, holder)

    def report(
        self, verdict: ReplyVerdict, sent_at: float, wait_until: float | None, ceiling: int
    ) -> AimdState:
        return self.store.api_report(self.key, verdict, sent_at, wait_until, ceiling)

    def snapshot(self, ceiling: int) -> AimdState:
        return self.store.api_state(self.key, ceiling)


def limiter_key(kind: str, *secrets: str | None) -> str:
    """What names one API account in the store: the agent kind and a hash of its credentials
    and endpoint. The key itself is never stored, and the hash is truncated (a salt-free
    fingerprint of a high-entropy secret, as `ssh-keygen -l` shows a key's)."""
    digest = hashlib.sha256("\0".join(s or "" for s in secrets).encode()).hexdigest()
    return f"{kind}:{digest[:16]}"


@dataclass(frozen=True)
class Admission:
    sent_at: float
    """When the slot was granted (epoch): what decides whether a 429 starts a new episode."""


class AdaptiveLimiter:
    """What agents call: `with limiter.slot() as admitted: …; limiter.report(…)`."""

    def __init__(
        self,
        state: LimiterState,
        ceiling: int,
        tokens_per_minute: int | None,
        *,
        holder_prefix: str = "",
    ) -> None:
        self.state = state
        self.ceiling = ceiling
        self.tokens_per_minute = tokens_per_minute
        self.holder_prefix = holder_prefix
        """Names this process in slot holders (the store's worker id: a crashed process's
        slots are freed at once on its host, elsewhere when their lease lapses)."""
        self._cond = threading.Condition()
        self._window: deque[tuple[float, int]] = deque()
        self._in_flight = 0
        self.peak_in_flight = 0
        self.waited_s = 0.0
        self.last_failure: str | None = None
        """The last failed request's error, as this process saw it."""
        self.limits_seen: list[int] = []
        """The limit after each change this process saw (for tests and benchmarks)."""

    @contextmanager
    def slot(self, lease_s: float = 900.0) -> Iterator[Admission]:
        started = time.monotonic()
        holder = f"{self.holder_prefix}/{uuid.uuid4().hex}"
        while True:
            with self._cond:
                if self._tokens_admissible():
                    wait = self.state.try_acquire(holder, lease_s, self.ceiling)
                    if wait <= 0:
                        self._in_flight += 1
                        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
                        break
                else:
                    wait = self._next_expiry()
                # Woken early by a local release; other processes' are seen by polling.
                self._cond.wait(timeout=min(wait, 1.0))
        self.waited_s += time.monotonic() - started
        try:
            yield Admission(sent_at=time.time())
        finally:
            self.state.release(holder)
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def report(
        self,
        verdict: ReplyVerdict,
        admission: Admission,
        wait_until: float | None,
        failure: str | None = None,
    ) -> None:
        """A reply's verdict; `failure`: what a failed request's error said (the breaker names
        the last one when it stops a call)."""
        if failure is not None:
            self.last_failure = failure
        after = self.state.report(verdict, admission.sent_at, wait_until, self.ceiling)
        with self._cond:
            if after.limit != (self.limits_seen or [self.ceiling])[-1]:
                self.limits_seen.append(after.limit)
        with self._cond:
            self._cond.notify_all()

    def failing_for(self) -> float:
        """Seconds since every call began failing (0 when the last one succeeded)."""
        since = self.state.snapshot(self.ceiling).failing_since
        return 0.0 if since is None else max(0.0, time.time() - since)

    def record(self, tokens: int) -> None:
        with self._cond:
            self._window.append((time.monotonic(), tokens))

    def _tokens_admissible(self) -> bool:
        if self.tokens_per_minute is None:
            return True
        cutoff = time.monotonic() - WINDOW_S
        while self._window and self._window[0][0] < cutoff:
            self._window.popleft()
        return sum(tokens for _, tokens in self._window) < self.tokens_per_minute

    def _next_expiry(self) -> float:
        if not self._window:
            return 1.0
        return max(0.05, self._window[0][0] + WINDOW_S - time.monotonic())
