"""Worker lanes: threads that run admitted tasks, one at a time each, beside the web server.

A lane takes a run id from the queue and hands it to the runner the CLI wires (the batch
graph on the store, as `harness run` does). The queue is filled by the intake as it admits
tickets, and at start with every ticket's run the store holds unfinished (a serve killed
mid-task continues it: its lease's owner is gone, so the task is taken over at once). A run id
queued twice is run once; the store's task lease keeps two processes from running one task.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger("harness.serve")

Runner = Callable[[str], None]
"""Runs (or continues) one run's task to its end."""


class WorkerLanes:
    def __init__(self, lanes: int, runner: Runner) -> None:
        self.runner = runner
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._lane, name=f"lane-{n}", daemon=True) for n in range(lanes)
        ]
        self.busy = 0
        """Lanes running a task now."""
        self._stopping = threading.Event()

    def start(self, unfinished: Iterable[str] = ()) -> None:
        for run_id in unfinished:
            self.submit(run_id)
        for thread in self._threads:
            thread.start()

    def submit(self, run_id: str) -> None:
        with self._lock:
            if run_id in self._pending:
                return
            self._pending.add(run_id)
        self._queue.put(run_id)

    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        with self._lock:
            return not self._pending

    def _lane(self) -> None:
        while (run_id := self._queue.get()) is not None:
            if self._stopping.is_set():  # what is still queued waits in the store for a restart
                continue
            with self._lock:
                self.busy += 1
            try:
                self.runner(run_id)
            except Exception:  # one task's crash must not take its lane down
                log.exception("run %s: the task runner failed", run_id)
            finally:
                with self._lock:
                    self.busy -= 1
                    self._pending.discard(run_id)

    def stop(self, timeout_s: float) -> None:
        """No more tasks start; wait up to `timeout_s` for the running ones (which the runner
        is told to wind down separately)."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=timeout_s)
