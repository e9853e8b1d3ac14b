"""Command lines and environments for bubblewrap, the local sandbox's confinement.

Inside: an allowlisted read-only view (the system's toolchain directories, part of /etc,
harness's Python), a size-capped private /tmp, no network but the sandbox's own loopback, a new
pid namespace that dies with harness, no capabilities, a seccomp filter, resource limits and a
scrubbed environment. Writable: the task's worktree and its scratch directory only.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.sandbox import PYTEST_ADDOPTS, seccomp
from harness.sandbox.bridge import HostBridge
from harness.sandbox.limits import SandboxLimits, cgroups_usable

DEFAULT_LIMITS = SandboxLimits()

# Variables passed through from the host. Everything else is dropped: an allowlist, because a
# denylist of secret-looking names (*_TOKEN, *_KEY, AWS_*, ANTHROPIC_*) always misses one.
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")

# The view is an allowlist: these, plus what each sandbox names (worktree, scratch, git dir,
# harness's Python, policy's read paths). Home directories, /root, /var, /opt, /srv, /mnt,
# other worktrees, runs/ and the store are simply not there.
SYSTEM_DIRS = tuple(
    Path(name) for name in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
)
# What programs read from /etc: users and groups (no shadow, gshadow), the dynamic linker,
# Debian's alternatives, CA certificates (not ssl/private), time zone, name-service config.
ETC_ALLOWLIST = (
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "localtime",
    "timezone",
    "mime.types",
    "os-release",
    "protocols",
    "services",
)
# Only for a command given the network; /etc/resolv.conf often links into /run.
ETC_NETWORK = ("resolv.conf", "hosts", "host.conf", "gai.conf")
RESOLVER_PATHS = (Path("/run/systemd/resolve"), Path("/run/resolvconf"))
SECCOMP_FD = 3
# Runs on the host, as harness, before bubblewrap: its arguments are harness's own (the filter
# file, limits); the command is only ever an argument of bwrap. It sets rlimits that bubblewrap
# and all it starts inherit (memory as RLIMIT_DATA, CPU seconds, processes), and opens the
# seccomp filter on fd 3 for `--seccomp 3`. (The sandbox's cgroups are its spawner's.)
PRELUDE = """bpf=$1 data_kb=$2 cpu_s=$3 nproc=$4
shift 4
ulimit -d "$data_kb" && ulimit -t "$cpu_s" && ulimit -p "$nproc" || exit 125
[ -z "$bpf" ] || exec "$@" 3< "$bpf"
exec "$@"
"""


@dataclass(frozen=True)
class Mount:
    """A host directory bound at another path inside the sandbox: what is made there keeps
    working when its absolute paths (a venv's shebangs) name the inside path."""

    source: Path
    target: Path
    writable: bool = False


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


@functools.cache
def hardening_gaps() -> tuple[str, ...]:
    """What of the hardening this machine cannot give, each a line to print once and loudly,
    like missing bubblewrap: commands still run, with less confinement than policy asks."""
    gaps: list[str] = []
    built = seccomp.build_filter()
    if built.path is None:
        gaps.append(f"{built.reason}: sandboxed commands can open unix sockets, ptrace, mount")
    no_cgroups = cgroups_usable()
    if no_cgroups is not None:
        gaps.append(
            f"{no_cgroups}: memory and process limits are rlimits only"
            + (
                " (a fork bomb is not stopped while harness runs as root)"
                if os.geteuid() == 0
                else ""
            )
        )
    return tuple(gaps)


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
    limits: SandboxLimits = DEFAULT_LIMITS,
    bridge: HostBridge | None = None,
    mounts: Iterable[Mount] = (),
) -> list[str]:
    """The argv running `command` through sh in `cwd`, confined by bubblewrap.

    The view is built from an allowlist (`view_args`); `writable` are bound read-write,
    `readable` read-only (harness's Python, the repository's git dir, policy's read paths),
    and `read_only` are paths inside `writable` ones that must not change. `network` keeps the
    host's network namespace and its resolver config. `mounts` bind host directories at other
    paths inside (a set-up environment at its fixed path). The argv starts with a short host-side
    prelude (`PRELUDE`) that sets the rlimits and opens the seccomp filter for bubblewrap.

    With a `bridge` the command keeps its private network namespace and reaches the bridge's
    endpoints only: harness's launcher runs first, starts the in-sandbox relay, then loads the
    seccomp filter itself (the relay needs the unix sockets the filter refuses) and execs the
    command (see harness.sandbox.bridge).
    """
    bpf = seccomp.build_filter().path
    argv = [binary, *view_args(network, limits)]
    bridged = [bridge.directory] if bridge is not None else []
    binds = [
        *(("--ro-bind-try", path) for path in [*readable, *bridged]),
        *(("--bind", path) for path in writable),
        *(("--ro-bind", path) for path in read_only),
    ]
    # Parents first, so a path inside another keeps its own mode: a venv or git dir inside a
    # writable worktree stays read-only, a worktree inside a policy read path stays writable.
    for flag, path in sorted(binds, key=lambda bind: len(bind[1].parts)):
        argv += [flag, str(path), str(path)]
    for mount in mounts:  # at their own fixed paths (/harness/...), inside no other bind
        argv += ["--bind" if mount.writable else "--ro-bind", str(mount.source), str(mount.target)]
    argv += ["--remount-ro", "/"]  # bubblewrap's own root tmpfs: nothing is written there
    argv += ["--unshare-all"]  # user, ipc, pid, net (only a private loopback), uts, cgroup
    if network:
        argv += ["--share-net"]
    argv += ["--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    if bpf is not None and bridge is None:
        argv += ["--seccomp", str(SECCOMP_FD)]
    argv += ["--chdir", str(cwd)]
    if bridge is None:
        argv += ["/bin/sh", "-c", command]
    else:
        # Not `--seccomp`: the launcher loads the filter from the same fd once its relay runs.
        argv += bridge.launcher(sys.executable, command, SECCOMP_FD if bpf is not None else None)
    rlimits = [str(limits.memory_bytes // 1024), str(limits.cpu_seconds), str(limits.pids)]
    return ["/bin/sh", "-c", PRELUDE, "harness-sandbox", str(bpf or ""), *rlimits, *argv]


def view_args(network: bool, limits: SandboxLimits) -> list[str]:
    """bwrap arguments for everything every sandbox sees: the system's toolchain directories,
    the allowlisted part of /etc, fresh /dev and /proc, a size-capped private /tmp."""
    args: list[str] = []
    for top in SYSTEM_DIRS:
        if top.is_symlink():  # /bin -> usr/bin on merged-/usr systems
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    args += ["--ro-bind", str(etc_view(network)), "/etc"]
    if network:
        for path in RESOLVER_PATHS:
            args += ["--ro-bind-try", str(path), str(path)]
    args += ["--dev", "/dev", "--proc", "/proc"]
    args += ["--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    return args


@functools.cache
def etc_view(network: bool) -> Path:
    """A harness-owned copy of the allowlisted part of /etc, made once per process and bound
    as the sandbox's /etc in one mount: binding each entry separately costs ~0.2 ms apiece on
    every command. Symlinks (CA certificates, alternatives, localtime) are copied as links."""
    view = Path(tempfile.mkdtemp(prefix="harness-etc-"))
    atexit.register(shutil.rmtree, view, ignore_errors=True)
    for name in [*ETC_ALLOWLIST, *(ETC_NETWORK if network else ())]:
        source, target = Path("/etc", name), view / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if source.is_dir() and not source.is_symlink():
                shutil.copytree(source, target, symlinks=True)
            elif source.is_symlink() or source.is_file():
                shutil.copy2(source, target, follow_symlinks=False)
        except OSError:
            continue  # unreadable here: the sandbox goes without it, as it would without bwrap
    view.chmod(0o755)  # mkdtemp's 0700 would hide it from a sandbox running as another user
    return view


def needed_host_paths() -> list[Path]:
    """Host paths every sandboxed command needs to read: harness's Python installs."""
    return [Path(sys.prefix), Path(sys.base_prefix)]
