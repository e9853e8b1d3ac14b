"""How calls to the Messages API fail, as harness sees it: which errors are transient
(retried, within a cap on any single wait), what wait a server asked for, and the problem an
attempt ends with when a call fails for good."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import anthropic

from harness.agents import Usage
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


def call_failed(exc: BaseException, billed: Usage, retries: int, max_wait_s: float) -> CallFailed:
    """What ends an attempt after a call failed for good: infrastructure (retryable, not the
    agent's doing) or a refusal a person must act on."""
    kind, message = error_details(exc)
    asked = retry_after_s(exc)
    if is_transient(exc) or isinstance(exc, MalformedReply):
        cap = max_wait_s
        if asked is not None and asked > cap:
            why = f"the server asked to wait {asked:.0f} s, over the {cap:.0f} s cap"
        else:
            why = f"still failing after {retries} retries"
        problem = Problem(
            type=problem_type("model-api-unavailable"),
            title="The model API is unavailable",
            detail=f"{kind}: {message} ({why})",
            status=getattr(exc, "status_code", None),
            category="infrastructure",
            retryable=True,
            retry_after_s=asked,
        )
        return CallFailed(problem, "infrastructure", billed)
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
