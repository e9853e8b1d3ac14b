"""Keeping a task's lease alive while this worker runs it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from harness.store import Store


class LeaseKeeper:
    """Heartbeats the lease on one task (and its environments) every third of the lease, on a
    background thread, for as long as the `with` block runs. If the store says another worker
    holds the task now, `on_lost` is called once and heartbeats stop."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        spec_id: str,
        owner: str,
        lease_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self._store, self._task, self._owner = store, (run_id, spec_id), owner
        self._lease_s = lease_s
        self._interval = lease_s / 3
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{spec_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._store.heartbeat(*self._task, self._owner, self._lease_s):
                self._on_lost()
                return

    def __enter__(self) -> LeaseKeeper:
        # At once, not a third of a lease from now: a resumed task's environments still name
        # the crashed worker as owner, and gc would take them for orphans until this runs.
        if not self._store.heartbeat(*self._task, self._owner, self._lease_s):
            self._on_lost()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
