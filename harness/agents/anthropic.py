"""The `anthropic` agent: Claude through the Messages API, in a tool-use loop over the agent
tools, with per-task and per-run budgets and transient errors retried within a cap.

Every call is costed from the policy's price table (cache writes and reads at their own
prices, and a billed reply that fails to parse still counts), recorded with secrets redacted
in the task's trajectory.jsonl, and admitted through the run's fleet limiter.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import anthropic
from anthropic.types import Message
from tenacity import RetryCallState, Retrying, retry_if_exception

from harness import redact
from harness.agents import AttemptContext, AttemptRecord, Usage
from harness.agents.api_errors import (
    CallFailed,
    CircuitOpen,
    MalformedReply,
    call_failed,
    error_details,
    is_transient,
    reset_at,
    retry_after_s,
    verdict,
    wait_until,
)
from harness.agents.fleet import Fleet
from harness.agents.limiter import full_jitter_wait
from harness.agents.prompt import repo_instructions, system_prompt, task_message, tool_definitions
from harness.agents.tools import SandboxTools
from harness.config.policy import AgentConfig, GateConfig, Price
from harness.config.spec import Spec
from harness.feedback import Feedback
from harness.problems import Problem, problem_type
from harness.run.ledger import utc_now
from harness.sandbox import Sandbox

API_KEY_VARIABLE = "ANTHROPIC_API_KEY"
BASE_URL_VARIABLE = "ANTHROPIC_BASE_URL"


class AnthropicAgent:
    name = "anthropic"

    def __init__(
        self,
        config: AgentConfig,
        price: Price,
        fleet: Fleet,
        gates: list[GateConfig],
        client: anthropic.Anthropic | None = None,
    ) -> None:
        assert config.model is not None
        self.model = config.model
        self.config = config
        self.price = price
        self.fleet = fleet
        self.gates = gates
        # The SDK's own retries are off: it honours retry-after without any cap (a server
        # asking for an hour gets an hour) and without jitter. Ours are capped and jittered,
        # and feed the run's adaptive limiter; see RetryConfig and harness.agents.limiter.
        self.client = client or anthropic.Anthropic(
            api_key=os.environ[API_KEY_VARIABLE],
            base_url=os.environ.get(BASE_URL_VARIABLE) or None,
            max_retries=0,
            timeout=config.retry.request_timeout_s,
        )

    def attempt(
        self, spec: Spec, sandbox: Sandbox, feedback: Feedback | None, context: AttemptContext
    ) -> AttemptRecord:
        started = time.monotonic()
        record = AttemptRecord(number=context.number, agent=self.name, stop_reason="error")
        tools = SandboxTools(sandbox, context.deadline, context.log_dir)
        trajectory = context.trajectory
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.config.max_tokens,
            # Cache breakpoints on the system prompt and the (static) tools: every call of
            # every attempt of the task re-reads them from the prompt cache.
            "system": [
                {
                    "type": "text",
                    "text": system_prompt(self.gates, repo_instructions(sandbox)),
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "tools": _with_cache_breakpoint(tool_definitions()),
            "messages": [{"role": "user", "content": task_message(spec, context.number, feedback)}],
        }
        sent = 0
        while True:
            if (stop := self._budget_stop(context, record)) is not None:
                record.stop_reason, record.problem = "budget", stop
                record.error = stop.detail
                break
            try:
                message, usage, entry = self._call(request)
            except CallFailed as failed:
                record.usage = record.usage + failed.usage
                record.stop_reason = failed.stop_reason  # type: ignore[assignment]
                record.problem, record.error = failed.problem, failed.problem.detail
                self._log(trajectory, context, request["messages"][sent:], {"error": record.error})
                break
            record.usage = record.usage + usage
            self._log(trajectory, context, request["messages"][sent:], entry)
            sent = len(request["messages"])
            request["messages"].append(
                {
                    "role": "assistant",
                    "content": [b.model_dump(exclude_none=True) for b in message.content],
                }
            )
            tool_uses = [block for block in message.content if block.type == "tool_use"]
            if not tool_uses:
                # The model ended its turn without calling finish: its work is what it is;
                # the gates decide.
                record.stop_reason = "finished"
                record.summary = "".join(b.text for b in message.content if b.type == "text")
                break
            results: list[dict[str, Any]] = []
            finished = False
            for block in tool_uses:
                if len(record.steps) >= context.budget.max_steps:
                    record.stop_reason = "max_steps"
                    break
                args = block.input if isinstance(block.input, dict) else {}
                call = tools.call(block.name, args)
                record.steps.append(call)
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": block.id,
                        "content": call.result or "(empty)",
                        "is_error": not call.ok,
                    }
                )
                if block.name == "finish" and call.ok:
                    finished, record.summary = True, call.result
            if record.stop_reason == "max_steps":
                break
            if finished:
                record.stop_reason = "finished"
                break
            request["messages"].append({"role": "user", "content": results})
        record.duration_s = time.monotonic() - started
        return record

    def _budget_stop(self, context: AttemptContext, record: AttemptRecord) -> Problem | None:
        budget = context.budget
        spent = context.spent + record.usage
        reasons = []
        if budget.max_cost_usd is not None and spent.cost_usd >= budget.max_cost_usd:
            reasons.append(
                f"task cost ${spent.cost_usd:.4f} reached the cap ${budget.max_cost_usd}"
            )
        if (
            budget.max_input_tokens is not None
            and spent.all_input_tokens >= budget.max_input_tokens
        ):
            reasons.append(
                f"input tokens {spent.all_input_tokens} reached {budget.max_input_tokens}"
            )
        if budget.max_output_tokens is not None and spent.output_tokens >= budget.max_output_tokens:
            reasons.append(
                f"output tokens {spent.output_tokens} reached {budget.max_output_tokens}"
            )
        if self.fleet.spend.exhausted():
            reasons.append(
                f"the run's cost ${self.fleet.spend.total.cost_usd:.4f} reached its cap "
                f"${self.fleet.spend.max_cost_usd}"
            )
        if time.monotonic() >= context.deadline:
            reasons.append(f"the wall-clock budget ({budget.wall_clock_s:.0f} s) ran out")
        if context.stopping():
            reasons.append("the run is stopping and its grace period is over")
        if not reasons:
            return None
        return Problem(
            type=problem_type("budget-exhausted"),
            title="Budget exhausted",
            detail="; ".join(reasons),
            category="policy",
            retryable=False,
        )

    def _call(self, request: dict[str, Any]) -> tuple[Message, Usage, dict[str, Any]]:
        """One model call with capped, fully jittered retries; the billed usage is returned or
        carried by the CallFailed it raises. A CallFailed for a transient error carries when
        the call may be tried again (`retry_after_s`): the task is parked or deferred."""
        billed = Usage()
        retries = self.config.retry
        limiter = self.fleet.limiter
        made = 0  # requests made for this call; retries are made - 1

        def breaker_open() -> bool:
            return limiter.failing_for() >= self.config.circuit_breaker_s

        def wait(retry_state: RetryCallState) -> float:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            return full_jitter_wait(
                retry_state.attempt_number,
                retries.initial_backoff_s,
                retries.max_wait_s,
                retry_after_s(exc),
            )

        def stop(retry_state: RetryCallState) -> bool:
            return retry_state.attempt_number > retries.max_retries or breaker_open()

        def transient(exc: BaseException) -> bool:
            asked = retry_after_s(exc)
            if asked is not None and asked > retries.max_wait_s:
                return False  # not obeyed: it would stall the run; the task is deferred
            return is_transient(exc)

        try:
            if breaker_open():
                raise CircuitOpen(limiter.failing_for(), limiter.last_failure)
            for attempt in Retrying(
                stop=stop,
                wait=wait,
                retry=retry_if_exception(transient),
                reraise=True,
            ):
                with attempt:
                    made += 1
                    try:
                        message, usage, entry = self._call_once(request)
                    except MalformedReply as exc:
                        billed = billed + exc.usage
                        raise
                    billed = billed + usage
        except (anthropic.APIError, MalformedReply, OSError, CircuitOpen) as exc:
            breaker = self.config.circuit_breaker_s if breaker_open() else None
            raise call_failed(exc, billed, max(0, made - 1), retries, breaker) from None
        entry["retries"] = made - 1
        return message, billed, entry

    def _call_once(self, request: dict[str, Any]) -> tuple[Message, Usage, dict[str, Any]]:
        queued = time.monotonic()
        limiter = self.fleet.limiter
        max_wait_s = self.config.retry.max_wait_s
        with limiter.slot(lease_s=self.config.retry.request_timeout_s + 60) as admitted:
            sent = time.monotonic()
            try:
                raw = self.client.messages.with_raw_response.create(**request)
            except (anthropic.APIError, OSError) as exc:
                failure = ": ".join(error_details(exc))
                limiter.report(verdict(exc), admitted, wait_until(exc, max_wait_s), failure)
                raise
            latency = time.monotonic() - sent
            limiter.report("ok", admitted, reset_at(raw.headers, max_wait_s))
        body = _json_or_none(raw.text())
        usage = self._usage((body or {}).get("usage"))
        self.fleet.spend.add(usage)
        limiter.record(usage.all_input_tokens + usage.output_tokens)
        try:
            message = raw.parse()
        except Exception as exc:  # the SDK raises several types for a body it cannot read
            raise MalformedReply(f"the reply did not parse as a message: {exc}", usage) from None
        # The SDK does not validate replies: a body without a list of content blocks parses.
        if not isinstance(message.content, list):
            raise MalformedReply("the reply has no list of content blocks", usage)
        entry = {
            "response": redact.current().value(body),
            "usage": usage.model_dump(),
            "latency_s": round(latency, 4),
            "queued_s": round(sent - queued, 4),
            "request_id": raw.request_id,
        }
        return message, usage, entry

    def _usage(self, raw: Any) -> Usage:
        if not isinstance(raw, dict):
            return Usage(calls=1)
        counts = {
            key: int(raw.get(key) or 0)
            for key in (
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            )
        }
        cost = self.price.cost(
            counts["input_tokens"],
            counts["output_tokens"],
            counts["cache_creation_input_tokens"],
            counts["cache_read_input_tokens"],
        )
        return Usage(
            calls=1,
            input_tokens=counts["input_tokens"],
            output_tokens=counts["output_tokens"],
            cache_write_tokens=counts["cache_creation_input_tokens"],
            cache_read_tokens=counts["cache_read_input_tokens"],
            cost_usd=cost,
        )

    def _log(
        self, path: Path, context: AttemptContext, new_messages: list[Any], entry: dict[str, Any]
    ) -> None:
        line = {
            "ts": utc_now(),
            "attempt": context.number,
            "model": self.model,
            "new_messages": redact.current().value(new_messages),
            **entry,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, default=str) + "\n")


def _with_cache_breakpoint(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*tools[:-1], {**tools[-1], "cache_control": {"type": "ephemeral"}}]


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
