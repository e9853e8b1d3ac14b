"""Crash points for fault-injection tests: the process kills itself (SIGKILL, no clean-up) at
a named point, so tests can prove a run resumes from any node boundary.

    HARNESS_FAILPOINTS=provision.after@fix-pagination,gates.during

`<node>.before` and `<node>.after` fire around a graph node's body (`after` is once the node's
work is done and before LangGraph saves its checkpoint); `<node>.during` fires inside it, when
a sandboxed process has started or the agent has written a file. `@<spec-id>` limits a point
to one task. `:SIGINT` or `:SIGTERM` after a point sends that signal instead (once; to the
whole process group when the process leads one, as a terminal's Ctrl-C does), and waits until
the run's handler has seen it (harness.run.interrupt), so the point is where the interrupt
lands.
Unset (always, outside tests), every call is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "HARNESS_FAILPOINTS"

_where = threading.local()
_signalled = threading.Event()
_fired: set[str] = set()
_lock = threading.Lock()
SIGNAL_WAIT_S = 10.0


def enter(node: str, spec_id: str) -> None:
    """Note which node of which task this thread is running, for `during` points."""
    _where.node, _where.spec_id = node, spec_id


def hit(point: str, spec_id: str | None = None) -> None:
    """Die here if `point` (for this task) is armed."""
    armed = os.environ.get(ENV)
    if not armed:
        return
    spec_id = spec_id or getattr(_where, "spec_id", None)
    for item in armed.split(","):
        where, _, action = item.strip().partition(":")
        name, _, only = where.partition("@")
        if name == point and (not only or only == spec_id):
            if not action:
                os.kill(os.getpid(), signal.SIGKILL)
            with _lock:
                if item in _fired:  # a signal point fires once: a second signal means "now"
                    continue
                _fired.add(item)
            _signalled.clear()
            _send(signal.Signals[action])
            _signalled.wait(SIGNAL_WAIT_S)


def _send(signum: signal.Signals) -> None:
    """To the whole process group when this process leads one (as a terminal's Ctrl-C does:
    every process in the foreground group gets it), else to this process only."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signum)
    else:
        os.kill(os.getpid(), signum)


def signalled() -> None:
    """Called by the run's signal handler once it has taken a signal in."""
    _signalled.set()


def during() -> None:
    """A point inside the current node's work: `<node>.during`."""
    node = getattr(_where, "node", None)
    if node is not None:
        hit(f"{node}.during")
