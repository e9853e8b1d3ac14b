"""One long-lived process per sandbox that starts its commands, so the sandbox's cgroups are
joined once, not by every command.

Writing a pid into a cgroup v1 `cgroup.procs` takes the kernel's cgroup threadgroup lock for
writing, which waits for an RCU grace period: ~7 ms from harness's multi-threaded process, more
than all the rest of a sandboxed command's overhead. A child inherits its parent's cgroups at
fork, which takes only the lock's cheap read side. So the spawner (spawner_main.py, a small
single-threaded program) joins the sandbox's memory and pids cgroups when it starts and forks
each command; its limits therefore hold for the whole sandbox, all its commands together.

harness keeps what run_process does: it makes the output pipe, reads and redacts it, and kills
the command's process group at its timeout. The spawner only forks, reports the pid, and
reports the exit code. It runs on the host, as harness, and takes requests only on a socket
that only harness holds (no command inherits a spawner fd). It exits, killing what still runs,
when harness closes that socket or dies: its own death closes it, whichever thread started it
(a parent-death signal would fire when that thread ends, not harness).
"""

from __future__ import annotations

import array
import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.errors import InfrastructureError
from harness.sandbox import spawner_main
from harness.sandbox.limits import SandboxLimits, give_back_cgroups, take_cgroups

PROGRAM = Path(spawner_main.__file__)


class SpawnedCommand:
    """A command the spawner forked: its pid, and its exit code once it ends."""

    def __init__(self, pid: int, reply: socket.socket) -> None:
        self.pid = pid
        self._reply = reply

    def wait(self) -> int:
        """The exit code (negative: the signal that ended it). A spawner that vanished took
        its commands with it (bubblewrap dies with its parent): reported as killed."""
        with self._reply:
            data = _recv_exact(self._reply, spawner_main.CODE.size)
        if data is None:
            return -signal.SIGKILL
        (code,) = spawner_main.CODE.unpack(data)
        return int(code)


class Spawner:
    """The spawner of one sandbox, started at its first command, in a pooled pair of cgroups
    at `limits` (limits.take_cgroups); stopped by `close`, when the sandbox is dropped, or at
    harness's exit."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._running: _Running | None = None

    def spawn(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], output: int
    ) -> SpawnedCommand:
        """Start `argv` in `cwd` with exactly `env`, stdin /dev/null, stdout and stderr to the
        `output` fd, in a session of its own."""
        request = json.dumps({"argv": list(argv), "cwd": str(cwd), "env": dict(env)}).encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for _ in range(2):  # a spawner that died (killed from outside) is started again
                running = self._ensure_running()
                try:
                    running.send(request, output, theirs.fileno())
                    break
                except OSError:
                    with self._lock:
                        if self._running is running:
                            self._running = None
                    running.close()
            else:
                raise InfrastructureError("the sandbox's spawner cannot be reached")
        finally:
            theirs.close()
        answer = _recv_exact(mine, spawner_main.CODE.size)
        if answer is None:
            mine.close()
            raise InfrastructureError("the sandbox's spawner exited before starting a command")
        (pid,) = spawner_main.CODE.unpack(answer)
        if pid < 0:  # it could not start: the errno
            mine.close()
            raise OSError(-pid, os.strerror(-pid))
        return SpawnedCommand(pid, mine)

    def close(self) -> None:
        with self._lock:
            running, self._running = self._running, None
        if running is not None:
            running.close()

    def _ensure_running(self) -> _Running:
        with self._lock:
            if self._running is None or not self._running.alive():
                if self._running is not None:
                    self._running.close()
                self._running = _Running(self.limits)
                weakref.finalize(self, self._running.close)
            return self._running


class _Running:
    """A started spawner process, holding its cgroups until it has exited."""

    def __init__(self, limits: SandboxLimits) -> None:
        self._limits = limits
        self._cgroups = take_cgroups(limits)
        procs = [str(group / "cgroup.procs") for group in self._cgroups]
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(PROGRAM), str(theirs.fileno()), *procs],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                env={},
                # Not in harness's process group: a terminal's Ctrl-C is harness's to handle
                # (a graceful stop, harness.run.interrupt), not the sandbox's commands' to die of.
                start_new_session=True,
            )
        except OSError:
            self._control.close()
            give_back_cgroups(limits, self._cgroups)
            raise
        finally:
            theirs.close()
        self._closed = False
        self._close_lock = threading.Lock()
        _STARTED.add(self)

    def alive(self) -> bool:
        return self._process.poll() is None

    def send(self, request: bytes, output: int, reply: int) -> None:
        fds = array.array("i", [output, reply])
        self._control.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])

    def close(self) -> None:
        """Stop the spawner (killing what still runs) and give its cgroups back, empty."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        give_back_cgroups(self._limits, self._cgroups)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


_STARTED: weakref.WeakSet[_Running] = weakref.WeakSet()


@atexit.register  # after limits' own (imported first), so it runs before the cgroups go
def _stop_all() -> None:
    for running in list(_STARTED):
        running.close()
