"""One status comment per ticket, updated in place: admitted, queued, running (attempt n, step),
verified (the PR), escalated (reason and branch), refused (reason) or error.

`StatusComments` is where it is written: `LocalStatusComments` records it under
`runs/triggers/comments/` (one file per ticket, and every version of it in a `.jsonl` beside)
when no forge is configured. A forge backend finds its own comment by `marker(ticket)` in the
body and edits it, so a restart never posts a second one. `StatusBoard` writes them from one
thread, in the order they were asked for, so a webhook's ack never waits on a forge.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.run.ledger import utc_now, write_atomic
from harness.triggers import task_id

log = logging.getLogger("harness.serve")


@dataclass(frozen=True)
class Status:
    """A ticket's state, as its comment says it."""

    state: str
    """admitted, queued, running, verified, escalated, refused, error, interrupted."""
    detail: str = ""
    run_id: str | None = None
    link: str | None = None
    """The PR (verified) or the escalation record, when there is one."""


def marker(ticket_key: str) -> str:
    """The hidden line that makes a comment this ticket's status comment."""
    return f"<!-- harness:status {ticket_key} -->"


def render(ticket_key: str, status: Status) -> str:
    lines = [marker(ticket_key), f"**harness**: {status.state}"]
    if status.detail:
        lines[-1] += f" — {status.detail}"
    if status.run_id:
        lines.append(f"run `{status.run_id}`")
    if status.link:
        lines.append(f"record: {status.link}")
    return "\n\n".join(lines) + "\n"


class StatusComments(Protocol):
    def upsert(self, ticket_key: str, address: dict[str, Any], body: str) -> None:
        """Create the ticket's status comment, or edit the one whose body holds its marker."""


class LocalStatusComments:
    """The comment as a file, `<root>/<task-id>.md`, and its versions in `<task-id>.jsonl`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, ticket_key: str) -> Path:
        return self.root / f"{task_id(ticket_key)}.md"

    def upsert(self, ticket_key: str, address: dict[str, Any], body: str) -> None:
        write_atomic(self.path(ticket_key), body)
        line = {"at": utc_now(), "ticket": ticket_key, "address": address, "body": body}
        with self.path(ticket_key).with_suffix(".jsonl").open("a", encoding="utf-8") as history:
            history.write(json.dumps(line) + "\n")

    def history(self, ticket_key: str) -> list[str]:
        """Every version of the comment, oldest first."""
        path = self.path(ticket_key).with_suffix(".jsonl")
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["body"] for line in lines]


class StatusBoard:
    """Status updates written by one thread, in order; a failing backend is logged, never
    raised into a webhook or a task."""

    def __init__(self, comments: StatusComments) -> None:
        self.comments = comments
        self._queue: queue.Queue[tuple[str, dict[str, Any], Status] | None] = queue.Queue()
        self._last: dict[str, str] = {}
        self._thread = threading.Thread(target=self._write, name="status-board", daemon=True)
        self._thread.start()

    def post(self, ticket_key: str, address: dict[str, Any], status: Status) -> None:
        self._queue.put((ticket_key, address, status))

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            ticket_key, address, status = item
            body = render(ticket_key, status)
            try:
                if self._last.get(ticket_key) != body:  # an unchanged comment is not rewritten
                    self.comments.upsert(ticket_key, address, body)
                    self._last[ticket_key] = body
            except Exception as exc:  # a forge down must not stop the board
                log.warning("status comment for %s not written: %s", ticket_key, exc)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait (up to `timeout_s`) until every update asked for so far is written."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


class TaskProgress:
    """A run's ledger listener (harness.run.ledger.RunLedger.listener): each step the task
    enters becomes `running (attempt n, step)` on the ticket's comment."""

    def __init__(self, board: StatusBoard, ticket_key: str, address: dict[str, Any], run_id: str):
        self.board, self.ticket_key, self.address, self.run_id = board, ticket_key, address, run_id
        self._last: tuple[int, str] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") != "enter" or event.get("node") in ("teardown", "publish"):
            return
        step = (int(event.get("attempt") or 0), str(event.get("node")))
        if step == self._last:
            return
        self._last = step
        attempt = f"attempt {step[0]}, " if step[0] else ""
        self.board.post(
            self.ticket_key,
            self.address,
            Status("running", f"{attempt}{step[1]}", run_id=self.run_id),
        )


def final_status(result: dict[str, Any], run_id: str) -> Status:
    """The comment for a finished task, from its TaskResult."""
    outcome = str(result.get("outcome") or "error")
    if outcome == "verified":
        return Status("verified", "the PR is ready for review", run_id, result.get("pr"))
    if outcome == "escalated":
        branch = result.get("branch")
        detail = f"{result.get('reason') or 'escalated'}" + (
            f"; the work is on branch `{branch}`" if branch else ""
        )
        return Status("escalated", detail, run_id, result.get("escalation"))
    return Status(outcome, str(result.get("reason") or ""), run_id)
