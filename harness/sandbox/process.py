"""Run one process with a hard timeout, its whole output on disk and a capped copy in memory.

Output goes to a file, never a pipe held in memory, so a gate printing gigabytes cannot exhaust
the harness; the in-memory copy keeps the head and the tail, where tools put what matters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness import failpoints
from harness.sandbox import Completed

HEAD_BYTES = 16_000
TAIL_BYTES = 48_000


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    log_path: Path | None = None,
) -> Completed:
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(prefix="harness-out-", delete=False) as sink:
        sink_path = Path(sink.name)
        try:
            # A new session gives the command its own process group, so a timeout kills the
            # whole tree (bubblewrap's pid namespace dies with it).
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            sink_path.unlink()
            return Completed(
                exit_code=127,
                output=f"cannot start {argv[0]}: {exc.strerror}",
                duration_s=time.monotonic() - started,
            )
        # A blocking wait plus a kill timer: Popen.wait(timeout=) polls with sleeps of up to
        # 50 ms, which makes every short command look that much slower.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_group(proc)

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        failpoints.during()  # fault-injection tests: the harness dies while this runs
        proc.wait()
        timer.cancel()
        timed_out = expired.is_set()
    duration = time.monotonic() - started
    output, cut = _read_capped(sink_path)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(sink_path, log_path)
    else:
        sink_path.unlink()
    return Completed(
        exit_code=proc.returncode if not timed_out else -signal.SIGKILL,
        output=output,
        duration_s=duration,
        timed_out=timed_out,
        output_cut_bytes=cut,
        log_path=log_path,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _read_capped(path: Path) -> tuple[str, int]:
    """The head and tail of a file as text (bad bytes replaced), and how many bytes were cut."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size <= HEAD_BYTES + TAIL_BYTES:
            return handle.read().decode("utf-8", errors="replace"), 0
        head = handle.read(HEAD_BYTES)
        handle.seek(size - TAIL_BYTES)
        tail = handle.read()
    cut = size - HEAD_BYTES - TAIL_BYTES
    marker = f"\n[… {cut} bytes of output cut here; the full output is in the log …]\n"
    text = head.decode("utf-8", errors="replace") + marker + tail.decode("utf-8", errors="replace")
    return text, cut
