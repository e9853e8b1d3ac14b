"""The seccomp filter every sandboxed command runs under, loaded through bwrap's `--seccomp FD`.

The BPF program is built once per harness process by libseccomp's Python bindings. They come
from Debian's `python3-seccomp`, which is built for the system's /usr/bin/python3, not for
harness's own interpreter, so that interpreter exports the filter into a harness-owned file
(a private 0700 directory, removed at exit). bubblewrap installs it after its own mounts, just
before running the command, so the rules bind the command and everything it starts.

What the filter refuses (EPERM, so tools print a clear error rather than dying):
- `socket(AF_UNIX, ...)`: seccomp cannot read a `connect()` address, so creating a unix socket
  is what is refused; without it nothing in the sandbox can reach a host daemon's socket (an
  agent, a docker or database socket under $HOME). `socketpair` stays: it never leaves the
  sandbox and asyncio's event loop needs it.
- debugging and reading other processes: `ptrace`, `process_vm_readv`, `process_vm_writev`;
- the mount table: `mount`, `umount2`, `pivot_root`, `fsopen`, `fsmount`, `move_mount`,
  `open_tree`;
- the kernel keyring: `keyctl`, `add_key`, `request_key`;
- kernel programs and tracing: `bpf`, `perf_event_open`, `userfaultfd`.
Syscalls of a foreign architecture (32-bit `int 0x80` on x86_64) kill the process: libseccomp's
default for an architecture the filter was not built for.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
DENIED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
)

# Runs under the system python; the names come in on argv, the BPF goes to argv[1].
_EXPORT = """
import errno, socket, sys
import seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
deny = seccomp.ERRNO(errno.EPERM)
f.add_rule(deny, "socket", seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX))
for name in sys.argv[2:]:
    f.add_rule(deny, name)
with open(sys.argv[1], "wb") as out:
    f.export_bpf(out)
"""


@dataclass(frozen=True)
class SeccompFilter:
    path: Path | None
    """The exported BPF program, or None when no filter could be built here."""
    reason: str
    """Why there is no filter (what a run prints, once), or what the filter is."""


@functools.cache
def build_filter() -> SeccompFilter:
    """The filter's BPF file, built on first use and shared by every command of this process."""
    if shutil.which(SYSTEM_PYTHON) is None:
        return SeccompFilter(None, f"no seccomp filter: {SYSTEM_PYTHON} is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="harness-seccomp-"))  # mkdtemp: mode 0700
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    target = workdir / "filter.bpf"
    argv = [SYSTEM_PYTHON, "-I", "-c", _EXPORT, str(target), *DENIED_SYSCALLS]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SeccompFilter(None, f"no seccomp filter: {exc}")
    if result.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        hint = " (install python3-seccomp)" if "No module named" in lines[-1] else ""
        return SeccompFilter(None, f"no seccomp filter: {lines[-1]}{hint}")
    return SeccompFilter(target, "seccomp: unix sockets, ptrace, mount, keyctl, bpf refused")
