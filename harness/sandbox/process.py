"""Run one process with a hard timeout, its output redacted into a capped log on disk and a
capped copy in memory.

Output is read from a pipe in chunks and never held whole, so a command printing gigabytes
cannot exhaust the harness nor fill its disk: the log keeps the head and the tail with a note
of what was cut, and the in-memory copy keeps a smaller head and tail, where tools put what
matters. Secrets are redacted from the stream before either sees it (`harness.redact`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from harness import failpoints
from harness.redact import StreamRedactor, current
from harness.sandbox import Completed

HEAD_BYTES = 16_000
TAIL_BYTES = 48_000
LOG_MAX_BYTES = 8 * 1024 * 1024
"""The default cap of a command's log on disk (head and tail halves), before the note."""
CHUNK = 1 << 16
DRAIN_AFTER_EXIT = 1 << 20
"""At most this much more is read once the command exited, in case a process it left behind
still holds the pipe open and keeps writing."""


class Started(Protocol):
    """A started command (a Popen, or a spawner's child)."""

    pid: int
    """Also its process group's id: it runs in a session of its own."""

    def wait(self) -> int:
        """Its exit code once it ends; negative: the signal that ended it."""
        ...


Spawn = Callable[[Sequence[str], Path, Mapping[str, str], int], Started]
"""Start argv in cwd with exactly env, stdin /dev/null, stdout and stderr to the fd, in a
session of its own (harness.sandbox.spawner)."""


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    log_path: Path | None = None,
    log_max_bytes: int = LOG_MAX_BYTES,
    spawn: Spawn | None = None,
) -> Completed:
    """`argv` started by `spawn`, or by harness itself."""
    started = time.monotonic()
    capture = _Capture(log_path, log_max_bytes)  # before the command starts: it may fail
    read_fd, write_fd = os.pipe()
    try:
        # A new session gives the command its own process group, so a timeout kills the
        # whole tree (bubblewrap's pid namespace dies with it).
        proc: Started = (spawn or _popen)(argv, cwd, env, write_fd)
    except OSError as exc:
        os.close(read_fd)
        capture.close()
        return Completed(
            exit_code=127,
            output=f"cannot start {argv[0]}: {exc.strerror}",
            duration_s=time.monotonic() - started,
        )
    finally:
        os.close(write_fd)
    wake_read, wake_write = os.pipe()
    reader = threading.Thread(target=_pump, args=(read_fd, wake_read, capture), daemon=True)
    reader.start()
    # A blocking wait plus a kill timer: Popen.wait(timeout=) polls with sleeps of up to
    # 50 ms, which makes every short command look that much slower.
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _kill_group(proc)

    timer = threading.Timer(timeout_s, expire)
    timer.start()
    exit_code = -signal.SIGKILL
    try:
        failpoints.during()  # fault-injection tests: the harness dies while this runs
        exit_code = proc.wait()
    finally:
        timer.cancel()
        os.write(wake_write, b"x")  # the reader stops at EOF, or after draining, whichever first
        reader.join()
        for fd in (read_fd, wake_read, wake_write):
            os.close(fd)
    timed_out = expired.is_set()
    duration = time.monotonic() - started
    output, cut = capture.close()
    return Completed(
        exit_code=exit_code if not timed_out else -signal.SIGKILL,
        output=output,
        duration_s=duration,
        timed_out=timed_out,
        output_cut_bytes=cut,
        log_path=log_path,
    )


def _popen(argv: Sequence[str], cwd: Path, env: Mapping[str, str], output: int) -> Started:
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_group(proc: Started) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pump(fd: int, wake: int, capture: _Capture) -> None:
    """Read the command's output until EOF; once woken (the command exited), only what is
    already there: a background process it left may hold the pipe open for ever."""
    woken = False
    drained = 0
    while True:
        ready, _, _ = select.select([fd] if woken else [fd, wake], [], [], 0 if woken else None)
        if wake in ready:
            woken = True
        if fd not in ready:
            if woken and not ready:
                return
            continue
        data = os.read(fd, CHUNK)
        if not data:
            return
        capture.add(data)
        drained += len(data) if woken else 0
        if drained > DRAIN_AFTER_EXIT:
            return


class _Capture:
    """The redacted stream, kept as a capped log (head written through, tail in a ring) and
    as the smaller head and tail `Completed.output` shows."""

    def __init__(self, log_path: Path | None, max_bytes: int) -> None:
        self.redact = StreamRedactor(current())
        self.log = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log = log_path.open("wb")
        max_bytes = max(max_bytes, 2 * (HEAD_BYTES + TAIL_BYTES))
        self.log_head = max_bytes // 2
        self.log_tail = _Tail(max_bytes - self.log_head)
        self.written = 0
        self.total = 0
        self.head = bytearray()
        self.tail = _Tail(TAIL_BYTES)

    def add(self, data: bytes) -> None:
        self._take(self.redact.feed(data))

    def _take(self, data: bytes) -> None:
        self.total += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.tail.add(data)
        through = data[: max(0, self.log_head - self.written)]
        if self.log is not None and through:
            self.log.write(through)
        self.written += len(through)
        self.log_tail.add(data[len(through) :])

    def close(self) -> tuple[str, int]:
        """The output as text (bad bytes replaced) and how many bytes of it were cut."""
        self._take(self.redact.close())
        if self.log is not None:
            kept = self.log_tail.value()
            log_cut = self.total - self.written - len(kept)
            if log_cut:
                self.log.write(
                    f"\n[… {log_cut} bytes of output cut here; the log keeps the first "
                    f"{self.written} and the last {len(kept)} bytes …]\n".encode()
                )
            self.log.write(kept)
            self.log.close()
        if self.total <= HEAD_BYTES + TAIL_BYTES:
            last = self.tail.value()
            rest = last[len(last) - (self.total - len(self.head)) :]
            return (bytes(self.head) + rest).decode("utf-8", errors="replace"), 0
        cut = self.total - HEAD_BYTES - TAIL_BYTES
        marker = f"\n[… {cut} bytes of output cut here; see the log …]\n"
        text = bytes(self.head).decode("utf-8", errors="replace") + marker
        return text + self.tail.value().decode("utf-8", errors="replace"), cut


class _Tail:
    """The last `size` bytes of a stream; trimmed in batches, so each byte is copied O(1) times."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self._buf += data[-self.size :]
        if len(self._buf) > 2 * self.size:
            del self._buf[: -self.size]

    def value(self) -> bytes:
        return bytes(self._buf[-self.size :])
