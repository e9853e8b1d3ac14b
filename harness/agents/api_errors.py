"""How calls to the Messages API fail, as harness sees it: which errors are transient
(retried, within a cap on any single wait), what wait a server asked for (retry-after, the
`anthropic-ratelimit-*` headers), what a reply tells the limiter, and the problem an attempt
ends with when a call fails for good."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

import anthropic

from harness.agents import Usage
from harness.agents.limiter import ReplyVerdict, full_jitter_wait
from harness.config.policy import RetryConfig
from harness.problems import Problem, problem_type

TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}


class CallFailed(Exception):
    """A model call that ended the attempt; `usage` is what was billed on the way."""

    def __init__(self, problem: Problem, stop_reason: str, usage: Usage) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.stop_reason = stop_reason
        self.usage = usage


class MalformedReply(Exception):
    """A 200 whose body did not parse as a Message: retried like a transient error. The call
    was billed all the same; `usage` is what its body said, when it said anything."""

    def __init__(self, message: str, usage: Usage) -> None:
        super().__init__(message)
        self.usage = usage


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, anthropic.APIConnectionError | MalformedReply):
        return True
    return isinstance(exc, anthropic.APIStatusError) and exc.status_code in TRANSIENT_STATUS


def retry_after_s(exc: BaseException | None) -> float | None:
    """The wait a server asked for: retry-after-ms, else retry-after (seconds or a date)."""
    if not isinstance(exc, anthropic.APIStatusError):
        return None
    headers = exc.response.headers
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        if (value := headers.get("retry-after")) is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
    return None


def error_details(exc: BaseException) -> tuple[str, str]:
    """The API's error type and message, or the exception's own."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("type", type(exc).__name__)), str(error.get("message", exc))
    return type(exc).__name__, str(exc)


class CircuitOpen(Exception):
    """No call was made: every call across the run has been failing for too long."""

    def __init__(self, failing_for_s: float, last_failure: str | None) -> None:
        last = f"; the last: {last_failure}" if last_failure else ""
        super().__init__(f"every model call of the run has failed for {failing_for_s:.0f} s{last}")


def verdict(exc: BaseException) -> ReplyVerdict:
    """What a failed request says about the API, for the limiter: over capacity (429, 529),
    down or refusing the key (the breaker counts these), or up (the request was at fault)."""
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code in (429, 529):
            return "congested"
        if exc.status_code in (401, 403) or exc.status_code >= 500:
            return "failed"
        return "ok"
    return "failed"


def wait_until(exc: BaseException, max_wait_s: float) -> float | None:
    """The earliest time (epoch) the server said any request may go, when it is within the
    cap: a retry-after (or a rate-limit reset) past max_wait_s is not obeyed by the run (the
    one task told is deferred; the others go on)."""
    if not isinstance(exc, anthropic.APIStatusError):
        return None
    asked = retry_after_s(exc)
    until = None if asked is None or asked > max_wait_s else time.time() + asked
    reset = reset_at(exc.response.headers, max_wait_s)
    return max(until or 0.0, reset or 0.0) or None


RATE_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")


def reset_at(headers: Mapping[str, str], max_wait_s: float) -> float | None:
    """The latest `anthropic-ratelimit-<limit>-reset` (RFC 3339) among the limits with nothing
    `-remaining`, as an epoch time within max_wait_s from now; None when none is spent."""
    now, latest = time.time(), None
    for limit in RATE_LIMITS:
        remaining = headers.get(f"anthropic-ratelimit-{limit}-remaining")
        reset = headers.get(f"anthropic-ratelimit-{limit}-reset")
        if remaining is None or reset is None or remaining.strip() != "0":
            continue
        try:
            at = datetime.fromisoformat(reset.strip().replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if now < at <= now + max_wait_s:
            latest = max(latest or at, at)
    return latest


def call_failed(
    exc: BaseException,
    billed: Usage,
    retries: int,
    config: RetryConfig,
    breaker_s: float | None = None,
) -> CallFailed:
    """What ends an attempt after a call failed for good: infrastructure (the task is parked
    or deferred until `retry_after_s`, not charged to the agent) or a refusal a person must
    act on. `breaker_s`: the run's circuit breaker is open (the task waits that long)."""
    kind, message = error_details(exc)
    asked = retry_after_s(exc)
    cap = config.max_wait_s
    if isinstance(exc, CircuitOpen):  # no call made: the run's failures say what is wrong
        return CallFailed(_unavailable(exc, str(exc), breaker_s or cap), "infrastructure", billed)
    if breaker_s is not None and is_transient(exc):
        why = "the run's circuit breaker opened"
        problem = _unavailable(exc, f"{kind}: {message} ({why})", breaker_s)
        return CallFailed(problem, "infrastructure", billed)
    if is_transient(exc) or isinstance(exc, MalformedReply):
        if asked is not None and asked > cap:
            why = f"the server asked to wait {asked:.0f} s, over the {cap:.0f} s cap"
            again = asked
        else:
            why = f"still failing after {retries} retries"
            # Parked for about one more backoff, fully jittered, the server's ask as a floor.
            again = full_jitter_wait(retries + 2, config.initial_backoff_s, cap, asked)
        return CallFailed(
            _unavailable(exc, f"{kind}: {message} ({why})", again), "infrastructure", billed
        )
    problem = Problem(
        type=problem_type("model-api-refused"),
        title="The model API refused the request",
        detail=f"{kind}: {message}",
        status=getattr(exc, "status_code", None),
        category="infrastructure",
        retryable=False,
        owner_action_required=True,
    )
    return CallFailed(problem, "owner_action_required", billed)


def _unavailable(exc: BaseException, detail: str, again_s: float) -> Problem:
    return Problem(
        type=problem_type("model-api-unavailable"),
        title="The model API is unavailable",
        detail=detail,
        status=getattr(exc, "status_code", None),
        category="infrastructure",
        retryable=True,
        retry_after_s=round(again_s, 3),
    )
