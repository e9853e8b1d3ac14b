"""Command lines and environments for bubblewrap, the local sandbox's confinement.

Inside: the host read-only, a private /tmp, no network but the sandbox's own loopback, a new
pid namespace that dies with harness, and a scrubbed environment. Writable: the task's worktree
and its scratch directory only.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.sandbox import PYTEST_ADDOPTS

# Variables passed through from the host. Everything else is dropped: an allowlist, because a
# denylist of secret-looking names (*_TOKEN, *_KEY, AWS_*, ANTHROPIC_*) always misses one.
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")

# Directories that bubblewrap replaces with empty tmpfs mounts; paths harness needs under them
# (a venv, a repository under /tmp) are bound back in afterwards.
HIDDEN_DIRS = (Path("/tmp"), Path("/run"), Path("/var/tmp"))
# /etc/resolv.conf often links into /run; a command given the network needs it to resolve.
RESOLVER_PATHS = (Path("/run/systemd/resolve"), Path("/run/resolvconf"))


@dataclass(frozen=True)
class Isolation:
    available: bool
    reason: str
    """Why isolation is off, or the bubblewrap binary in use."""


@functools.cache
def probe() -> Isolation:
    """Whether bubblewrap works here: found on PATH and able to start a namespaced command."""
    binary = shutil.which("bwrap")
    if binary is None:
        return Isolation(False, "bubblewrap (bwrap) is not installed")
    trial = [binary, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"]
    try:
        result = subprocess.run(trial, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(False, f"bubblewrap failed to start: {exc}")
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        return Isolation(False, f"bubblewrap cannot create namespaces here: {detail}")
    return Isolation(True, binary)


def sandbox_env(scratch: Path) -> dict[str, str]:
    """The whole environment a sandboxed command sees."""
    env = {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}
    # The harness's own venv first, so gate tools installed beside harness are found.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin")])
    env.setdefault("LANG", "C.UTF-8")
    env |= {
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "TERM": "dumb",
        "NO_COLOR": "1",
        # Keep tool caches out of the worktree, so they are neither committed nor gated.
        "PYTHONDONTWRITEBYTECODE": "1",
        "RUFF_CACHE_DIR": str(scratch / "ruff-cache"),
        "MYPY_CACHE_DIR": str(scratch / "mypy-cache"),
        "PYTEST_ADDOPTS": PYTEST_ADDOPTS,
    }
    return env


def wrap(
    binary: str,
    command: str,
    *,
    cwd: Path,
    writable: Iterable[Path],
    readable: Iterable[Path],
    read_only: Iterable[Path] = (),
    network: bool = False,
) -> list[str]:
    """The bwrap argv running `command` through sh in `cwd`.

    `writable` are bound read-write; `readable` are paths the command needs that may sit under
    a hidden directory (the venv, the repository's .git), bound back read-only; `read_only`
    are paths inside `writable` ones that must not change. `network` keeps the host's network
    namespace (and the resolver config under /run).
    """
    if network:
        readable = [*readable, *RESOLVER_PATHS]
    argv = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for hidden in HIDDEN_DIRS:
        if hidden.is_dir():
            argv += ["--tmpfs", str(hidden)]
    for path in readable:
        if any(path.is_relative_to(hidden) for hidden in HIDDEN_DIRS) and path.exists():
            argv += ["--ro-bind", str(path), str(path)]
    for path in writable:
        argv += ["--bind", str(path), str(path)]
    for path in read_only:
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--unshare-all"]  # user, ipc, pid, net (only a private loopback), uts, cgroup
    if network:
        argv += ["--share-net"]
    argv += [
        "--die-with-parent",
        "--new-session",
        "--chdir",
        str(cwd),
        "/bin/sh",
        "-c",
        command,
    ]
    return argv


def needed_host_paths() -> list[Path]:
    """Host paths every sandboxed command needs to read: harness's Python installs."""
    return [Path(sys.prefix), Path(sys.base_prefix)]
