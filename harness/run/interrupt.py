"""Graceful interrupts for a long command (`harness run`, `harness resume`).

The first SIGINT or SIGTERM asks the run to stop (RunContext.live.stop): no lane claims another
task and no node starts; the nodes running now (an agent, a gate) get the policy's
`interrupt_grace_s` to finish, and a node that finishes in time is checkpointed as usual. When
the grace period is over, the run's sandboxed processes are killed (and killed again while the
lanes wind down) and what they were doing is discarded, to run again on resume. Each unfinished
task is then given back to the store as `interrupted` and the summary is written; the command
exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

A second signal ends the process at once, without clean-up: what it leaves is what kill -9
leaves, which `harness resume` and `harness gc` already handle.

Sandboxed commands run in sessions of their own (the spawner's), so a terminal's Ctrl-C, which
signals the whole foreground process group, reaches harness and not the agent or the gate.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from harness import failpoints
from harness.run.context import StopRequest
from harness.sandbox.lifecycle import kill_sandbox_processes

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REAP_EVERY_S = 0.2
"""After the grace period, how often the run's sandboxed processes are killed again (a gate
re-run or an agent's next tool call may start one while the lanes wind down)."""


def _say(line: str) -> None:
    # os.write, not the console: a signal handler may run while the console's lock is held.
    with contextlib.suppress(OSError):
        os.write(2, f"{line}\n".encode())


@contextlib.contextmanager
def graceful_interrupts(
    stop: StopRequest, grace_s: float, run_dir: Path, resume_hint: str
) -> Iterator[None]:
    """SIGINT and SIGTERM handled as above while the block runs (on the main thread); the
    previous handlers are restored after it."""
    done = threading.Event()
    reaper: list[threading.Thread] = []

    def reap() -> None:
        if done.wait(grace_s):
            return
        stop.force()
        _say(f"interrupt: grace period ({grace_s:g}s) over; stopping the running agents and gates")
        while not done.is_set():
            kill_sandbox_processes(run_dir)
            done.wait(REAP_EVERY_S)

    def handle(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.requested:
            _say(f"interrupt: second {name}: stopping at once; {resume_hint}")
            os._exit(128 + signum)
        stop.request(signum)
        failpoints.signalled()
        _say(
            f"interrupt: {name}: no new task or step starts; running agents and gates have "
            f"{grace_s:g}s to finish (signal again to stop at once); {resume_hint}"
        )
        thread = threading.Thread(target=reap, name="harness-interrupt-grace", daemon=True)
        reaper.append(thread)
        thread.start()

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may take signals; its caller handles them
        return
    previous = {signum: signal.signal(signum, handle) for signum in SIGNALS}
    try:
        yield
    finally:
        done.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for thread in reaper:
            thread.join()
