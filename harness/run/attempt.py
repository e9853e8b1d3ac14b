"""One agent attempt of a task, as the run keeps it: made (or, after a crash, reused), its
record saved redacted, its work committed at once with an idempotency key.

Nothing the agent did, or was paid for, is lost: every attempt's work is committed before the
gates judge it. The commit message carries `Harness-Key: <run>/<spec>/commit/<n>`, so a crash
between the commit and its record in the store is recognised on resume, and an attempt done
and committed before a crash is not paid for twice.
"""

from __future__ import annotations

from harness.agents import AttemptContext, AttemptRecord, Usage
from harness.config.spec import Spec
from harness.feedback import Feedback
from harness.git import Refusal
from harness.problems import Problem, problem_type
from harness.run.context import RunContext
from harness.run.effects import Value
from harness.run.ledger import write_atomic
from harness.run.parking import deferral_of

KEY_TRAILER = "Harness-Key: "

# Attempts that end this way escalate at once, whatever attempts are left.
STOP_REASONS = {
    "error": "agent error",
    "max_steps": "step budget exhausted",
    "budget": "budget exhausted",
    "infrastructure": "infrastructure failure (not charged to the agent)",
    "owner_action_required": "owner action required",
    "refused": "refused by policy",
}


def make_attempt(
    ctx: RunContext,
    spec: Spec,
    number: int,
    feedback: Feedback | None,
    *,
    spent: Usage,
    deadline: float,
) -> AttemptRecord:
    """Attempt `number` at the spec by the task's agent in its sandbox, committed; its record
    (redacted) is kept in the task's directory as attempt-<number>.json."""
    task_dir = ctx.config.task_dir(spec.id)
    context = AttemptContext(
        number=number,
        budget=ctx.config.budget(spec),
        spent=spent,
        deadline=deadline,
        log_dir=task_dir / "agent" / f"attempt-{number}",
        trajectory=task_dir / "trajectory.jsonl",
        stopping=lambda: ctx.live.stop.forced,
    )
    agent, sandbox = ctx.live.agent(spec), ctx.live.sandboxes.get(spec)
    effects = ctx.services.effects
    key = ctx.config.effect_key(spec.id, "commit", number)
    saved = task_dir / f"attempt-{number}.json"
    worktree = sandbox.worktree

    def committed_before_crash() -> Value | None:
        if f"{KEY_TRAILER}{key}" in worktree.head_message():
            return {"sha": worktree.head()}
        return None

    if effects.done(key, found=committed_before_crash) and saved.exists():
        # Its record was redacted on disk; what follows needs no secrets.
        ctx.services.ledger.event(spec.id, "agent", "reused", attempt=number)
        return AttemptRecord.model_validate_json(saved.read_text(encoding="utf-8"))
    prepared = ctx.services.setup.ready(spec, sandbox)  # the agent's commands see it too
    if (unready := prepared.problem()) is not None:  # no agent works without its dependencies
        why = unready.title
        return AttemptRecord(
            number=number,
            agent=agent.name,
            stop_reason="infrastructure",
            error=why,
            problem=unready,
        )
    record = agent.attempt(spec, sandbox, feedback, context)
    if (deferred := deferral_of(record)) is not None:
        # Cut by the model API, not by anything the agent did: no record, no commit, so the
        # attempt's number is not used up; its work stays in the sandbox for the next try.
        raise deferred
    if record.stop_reason == "error" and record.usage.calls == 0 and not worktree.has_changes():
        # It failed before doing anything at all (no model call, not one file): a crash at
        # its start, which another attempt would repeat. A person must look at the set-up.
        why = f"it failed before doing anything: {record.error}"
        record = record.model_copy(update={"stop_reason": "owner_action_required", "error": why})
    # Tool results quote files, which may hold secrets: write_atomic redacts the record on
    # disk, the only copy harness keeps (graph state, and so the store, holds none of it).
    write_atomic(saved, record.model_dump_json(indent=2))
    message = f"harness: attempt {number} by the {agent.name} agent\n\n{KEY_TRAILER}{key}"
    effects.once(key, "commit", lambda: {"sha": worktree.commit_all(message)})
    if worktree.refused:
        return _refused(record, worktree.refused, ctx.config.policy.limits.file_bytes)
    return record


def _refused(record: AttemptRecord, refusal: Refusal, file_bytes: int) -> AttemptRecord:
    """The attempt, stopped: policy's size caps refused (part of) what it made, which stays
    in the tree, uncommitted."""
    if refusal.everything:
        title = "The change is over the worktree size limit and was not committed"
        detail = (
            f"{refusal.reason}. Nothing of this attempt was committed; list build output in "
            ".gitignore, or raise limits.worktree_bytes in policy if it is meant to be."
        )
    else:
        title = "Files over the size limit were not committed"
        detail = (
            f"{', '.join(refusal.paths)}: over limits.file_bytes ({file_bytes:,} bytes). "
            "Nothing this size is committed to the repository; raise the limit in policy if "
            "it is meant to be."
        )
    problem = Problem(
        type=problem_type(refusal.kind),
        title=title,
        detail=detail,
        category="policy",
        retryable=False,
        owner_action_required=True,
    )
    return record.model_copy(
        update={"stop_reason": "refused", "error": refusal.reason, "problem": problem}
    )


def could_not_run(record: AttemptRecord) -> str | None:
    """Why the agent could not run at all (no key, a command not found, a request the API
    refuses, a crash at its start), or None. The task ends in error, not escalated: no
    attempt at it was made, and a person must fix the set-up."""
    if record.stop_reason != "owner_action_required":
        return None
    return (
        f"owner_action_required: the {record.agent} agent could not run on attempt "
        f"{record.number}: {record.error}"
    )


def stop_escalation(record: AttemptRecord, max_steps: int) -> str | None:
    """Why the task escalates at once after this attempt, or None when the gates judge it."""
    why = STOP_REASONS.get(record.stop_reason)
    if why is None:
        return None
    detail = record.error or f"{max_steps} tool calls"
    return f"{why} on attempt {record.number}: {detail}"
