"""The optional tie-break judge (`fleet: {judge: {model: …}}`): when verified variants tie on
every deterministic criterion, a model other than theirs compares two variants' compressed
evidence (outcome, attempts, diffstat, gate records, cost; never the raw trajectories or
the diff) and says which it prefers. Its call goes through the run's limiter and counts in
the run's spend; its vote is advisory (recorded in rank_reason and summary.json) and only
orders a tie. Any failure (an API error, a reply that is not a vote) leaves the tie in
variant order: the judge never blocks a ranking."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import anthropic

from harness import redact
from harness.agents import Usage
from harness.agents.anthropic import API_KEY_VARIABLE, BASE_URL_VARIABLE
from harness.agents.api_errors import error_details, verdict, wait_until
from harness.agents.fleet import Fleet
from harness.agents.select import policy_for
from harness.config.policy import Policy, Price
from harness.config.spec import Spec
from harness.errors import InputError
from harness.fleet.ranking import Evidence, TieBreaker, Vote

MAX_TOKENS = 400
REQUEST_TIMEOUT_S = 120.0
WHY_LIMIT = 300
"""Characters of the judge's reason kept (it lands in a one-line rank reason)."""

INSTRUCTIONS = (
    "Two attempts, A and B, at the same coding task both passed every deterministic check and "
    "tie on attempts, diff size, cost and time. From the evidence below, which change would "
    "you rather merge? Reply with one JSON object only: "
    '{"prefer": "A" or "B", "why": "one short sentence"}.'
)


class AnthropicJudge:
    """A judge on the Messages API (the same key and base URL as the anthropic agent)."""

    def __init__(self, model: str, price: Price, fleet: Fleet, client: anthropic.Anthropic) -> None:
        self.model = model
        self.price = price
        self.fleet = fleet
        self.client = client

    def compare(self, a: Evidence, b: Evidence) -> Vote | None:
        prompt = f"{INSTRUCTIONS}\n\n{compressed('A', a)}\n\n{compressed('B', b)}"
        limiter = self.fleet.limiter
        with limiter.slot(lease_s=REQUEST_TIMEOUT_S + 60) as admitted:
            try:
                raw = self.client.messages.with_raw_response.create(
                    model=self.model,
                    max_tokens=MAX_TOKENS,
                    messages=[{"role": "user", "content": redact.current().text(prompt)}],
                    timeout=REQUEST_TIMEOUT_S,
                )
            except (anthropic.APIError, OSError) as exc:
                failure = ": ".join(error_details(exc))
                limiter.report(verdict(exc), admitted, wait_until(exc, REQUEST_TIMEOUT_S), failure)
                return None
            limiter.report("ok", admitted, None)
        try:
            message = raw.parse()
        except Exception:  # the SDK raises several types for a body it cannot read
            return None
        self.fleet.spend.add(self._usage(message.usage))
        said = "".join(block.text for block in message.content if block.type == "text")
        return _vote(said, self.model, a.task.spec_id, b.task.spec_id)

    def _usage(self, usage: anthropic.types.Usage) -> Usage:
        written = usage.cache_creation_input_tokens or 0
        read = usage.cache_read_input_tokens or 0
        return Usage(
            calls=1,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_write_tokens=written,
            cache_read_tokens=read,
            cost_usd=self.price.cost(usage.input_tokens, usage.output_tokens, written, read),
        )


def compressed(label: str, evidence: Evidence) -> str:
    """What the judge sees of one variant: what harness measured, a few lines."""
    task, diff = evidence.task, evidence.diff
    gates = "\n".join(
        f"- {gate.name} ({gate.kind}, attempt {gate.attempt}): "
        f"{'passed' if gate.passed else 'failed'}, {gate.duration_s:.1f} s"
        for gate in task.gates
    )
    return (
        f"## {label}\n"
        f"outcome: {task.outcome}; attempts: {task.attempts}; "
        f"held-out checks: {evidence.holdout_passed}/{evidence.holdout_total}\n"
        f"diff: {diff.lines} lines in {diff.files} files ({diff.outside_paths} outside paths)\n"
        f"cost: ${task.usage.cost_usd:.4f} ({task.usage.calls} model calls); "
        f"time: {task.duration_s:.1f} s\n"
        f"diffstat:\n{diff.diffstat or '(none)'}\n"
        f"gates:\n{gates or '(none)'}"
    )


def _vote(said: str, model: str, a: str, b: str) -> Vote | None:
    found = re.search(r"\{.*\}", said, re.DOTALL)
    try:
        reply = json.loads(found.group(0)) if found else None
    except ValueError:
        return None
    if not isinstance(reply, dict) or reply.get("prefer") not in ("A", "B"):
        return None
    why = " ".join(str(reply.get("why") or "no reason given").split())[:WHY_LIMIT]
    return Vote(model=model, preferred=a if reply["prefer"] == "A" else b, why=why)


def check_judge(source: Path, tasks: list[Spec], policy: Policy) -> None:
    """A fleet's judge, before the run starts: a model no variant uses (one-line InputError
    naming the variant), priced in the policy, with the API key set."""
    judge = tasks[0].fleet.judge if tasks and tasks[0].fleet else None
    if judge is None:
        return
    for task in tasks:
        if policy_for(task, policy).agent.model == judge.model:
            raise InputError(
                f"{source}: fleet.judge.model {judge.model!r}: variant {task.id} uses it; the "
                "judge must be a model no variant uses"
            )
    if judge.model not in policy.prices:
        raise InputError(
            f"{source}: fleet.judge.model {judge.model!r} has no price; add "
            f"prices.{judge.model}: {{input, output, cache_write, cache_read}} to the policy"
        )
    if not os.environ.get(API_KEY_VARIABLE):
        raise InputError(
            f"{source}: fleet.judge needs {API_KEY_VARIABLE} set (ANTHROPIC_BASE_URL selects "
            "another Anthropic-compatible endpoint), or remove fleet.judge"
        )


def judges(specs: list[Spec], policy: Policy, fleet: Fleet) -> Callable[[str], TieBreaker | None]:
    """Per fleet spec id, its judge (None: the spec sets none, or the API key is gone)."""
    chosen = {s.fleet_spec_id: s.fleet.judge for s in specs if s.fleet and s.fleet.judge}

    def judge_for(spec_id: str) -> TieBreaker | None:
        judge = chosen.get(spec_id)
        key = os.environ.get(API_KEY_VARIABLE)
        if judge is None or not key or judge.model not in policy.prices:
            return None
        client = anthropic.Anthropic(
            api_key=key, base_url=os.environ.get(BASE_URL_VARIABLE) or None, max_retries=0
        )
        return AnthropicJudge(judge.model, policy.prices[judge.model], fleet, client)

    return judge_for
