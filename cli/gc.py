"""`harness gc`: what crashed workers left, and what outlived its retention, torn down (see
harness.run.gc); one line per action."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import RunsDirOption, StoreOption, store_url
from cli.render import console, escape, fail, plural


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
    runs_dir: RunsDirOption = Path("runs"),
    store: StoreOption = None,
) -> None:
    """Tear down expired and orphaned environments (a crashed worker's), delete branches whose
    retention ended, and remove worktrees and sandbox processes no live record owns."""
    from harness.errors import InputError
    from harness.run.gc import collect
    from harness.store import open_store, worker_id

    try:
        state = open_store(store_url(store, None, runs_dir))
    except InputError as exc:
        raise fail(str(exc)) from None
    try:
        actions = collect(state, runs_dir, owner=worker_id(), dry_run=dry_run)
    finally:
        state.close()
    for action in actions:
        mark = "" if action.done or dry_run else " (not done)"
        console().print(
            f"{action.kind:<11} {escape(action.target)}  ({escape(action.why)}){mark}",
            highlight=False,
            soft_wrap=True,
        )
    count = sum(a.done for a in actions) if not dry_run else len(actions)
    if dry_run:
        console().print(f"gc: would take {plural(count, 'action')}; nothing was removed")
    else:
        console().print(f"gc: took {plural(count, 'action')}")
