"""Exactly-once side effects: an attempt's commit, the PR, the escalation.

A graph node may run twice (a resumed task runs again the node a crash interrupted), so every
side effect it has carries an idempotency key in the store: begun, done, and done with the
value the rest of the task needs (a commit's sha, a PR's address). Running it again returns
that value instead of doing it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.store import Store

Value = dict[str, Any]


class Effects:
    def __init__(self, store: Store) -> None:
        self.store = store

    def done(self, key: str, *, found: Callable[[], Value | None] | None = None) -> bool:
        """Whether the effect `key` happened: recorded as done, or (when it was begun but
        not recorded, a crash in between) `found` finds it in the world and it is recorded."""
        effect = self.store.get_effect(key)
        if effect is not None and effect.status == "done":
            return True
        if effect is not None and found is not None and (value := found()) is not None:
            self.store.finish_effect(key, value)
            return True
        return False

    def once(self, key: str, kind: str, do: Callable[[], Value]) -> Value:
        """`do()`'s value, recorded under `key`; when `key` is done already, the recorded
        value, and `do` is not called."""
        effect = self.store.begin_effect(key, kind)
        if effect.status == "done":
            return effect.value
        value = do()
        self.store.finish_effect(key, value)
        return value
