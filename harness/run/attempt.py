"""One agent attempt of a task, as the run keeps it: made (or, after a crash, reused), its
record saved redacted, its work committed at once with an idempotency key.

Nothing the agent did, or was paid for, is lost: every attempt's work is committed before the
gates judge it. The commit message carries `Harness-Key: <run>/<spec>/commit/<n>`, so a crash
between the commit and its record in the store is recognised on resume, and an attempt done
and committed before a crash is not paid for twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.agents import Agent, AttemptContext, AttemptRecord
from harness.config.spec import Spec
from harness.feedback import Feedback
from harness.redact import Redactor
from harness.run.effects import Effects, Value
from harness.run.ledger import RunLedger, write_atomic
from harness.sandbox import TaskSandbox

KEY_TRAILER = "Harness-Key: "

# Attempts that end this way escalate at once, whatever attempts are left.
STOP_REASONS = {
    "error": "agent error",
    "max_steps": "step budget exhausted",
    "budget": "budget exhausted",
    "infrastructure": "infrastructure failure (not charged to the agent)",
    "owner_action_required": "owner action required",
}


def make_attempt(
    agent: Agent,
    spec: Spec,
    sandbox: TaskSandbox,
    feedback: Feedback | None,
    context: AttemptContext,
    *,
    effects: Effects,
    key: str,
    saved: Path,
    ledger: RunLedger,
) -> AttemptRecord:
    """Attempt `context.number` at the spec, committed under idempotency key `key`; its
    record (redacted) is kept at `saved`."""
    worktree = sandbox.worktree

    def committed_before_crash() -> Value | None:
        if f"{KEY_TRAILER}{key}" in worktree.head_message():
            return {"sha": worktree.head()}
        return None

    if effects.done(key, found=committed_before_crash) and saved.exists():
        # Its record was redacted on disk; what follows needs no secrets.
        ledger.event(spec.id, "agent", "reused", attempt=context.number)
        return AttemptRecord.model_validate_json(saved.read_text(encoding="utf-8"))
    record = agent.attempt(spec, sandbox, feedback, context)
    # Tool results quote files, which may hold secrets: the record on disk is redacted, and
    # it is the only copy harness keeps (graph state, and so the store, holds none of it).
    redacted = Redactor.from_environment().value(record.model_dump(mode="json"))
    write_atomic(saved, json.dumps(redacted, indent=2))
    message = f"harness: attempt {context.number} by the {agent.name} agent\n\n{KEY_TRAILER}{key}"
    effects.once(key, "commit", lambda: {"sha": worktree.commit_all(message)})
    return record


def stop_escalation(record: AttemptRecord, max_steps: int) -> str | None:
    """Why the task escalates at once after this attempt, or None when the gates judge it."""
    why = STOP_REASONS.get(record.stop_reason)
    if why is None:
        return None
    detail = record.error or f"{max_steps} tool calls"
    return f"{why} on attempt {record.number}: {detail}"
