"""Resource limits of sandboxed commands, the extra read paths of the sandbox's view, and the
size checks a commit must pass.

Limits are enforced twice where the machine allows: a cgroup per command (cgroups v1 memory and
pids, as root) and rlimits set just before bubblewrap starts. rlimits alone cannot stop a fork
bomb when harness runs as root: the kernel skips RLIMIT_NPROC for the initial namespace's root
user, and bubblewrap's user namespace maps the sandbox's root to that same user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, field_validator

from harness.config.strict import StrictModel
from harness.git import CommitCheck, Refusal

MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")


class SandboxLimits(StrictModel):
    """Policy's `limits:` section: what one sandboxed command may use."""

    memory_bytes: int = Field(default=4096 * MIB, ge=64 * MIB)
    """Memory of one command and all it starts: the memory cgroup's limit, and each process's
    RLIMIT_DATA (heap and private mappings), so a memory bomb fails its allocation or is
    killed, and harness keeps running."""
    pids: int = Field(default=1024, ge=16)
    """Processes and threads of one command at once (pids cgroup): a fork bomb's fork fails."""
    cpu_seconds: int = Field(default=1800, ge=1)
    """CPU time of each process (RLIMIT_CPU; SIGXCPU past it). The gate's `timeout_s` bounds
    wall-clock time; this bounds a process that spins while its gate waits on something else."""
    tmp_bytes: int = Field(default=512 * MIB, ge=MIB)
    """Size of the sandbox's private /tmp (a RAM-backed tmpfs): writing past it fails ENOSPC."""
    file_bytes: int = Field(default=50 * MIB, ge=1)
    """Largest file a commit may add or change; a larger one is refused as a policy problem."""
    worktree_bytes: int = Field(default=1024 * MIB, ge=1)
    """Largest total a commit may hold: the worktree's files that are tracked or untracked and
    not ignored (what `git add --all` takes; ignored build output does not count). A change
    over it is not committed, and refused as a policy problem."""


class SandboxView(StrictModel):
    """Policy's `sandbox:` section: what a sandbox may see beyond its allowlisted view."""

    read_paths: list[str] = []
    """Absolute host paths bound read-only into every sandbox (a toolchain under /opt, a
    shared dataset). Each is recorded in the run summary, since it widens what agents read."""

    @field_validator("read_paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        relative = [path for path in paths if not os.path.isabs(path)]
        if relative:
            raise ValueError(f"read_paths must be absolute: {', '.join(relative)}")
        return paths


BIGGEST_NAMED = 5
"""How many of its biggest files a refused change names."""


def commit_check(limits: SandboxLimits) -> CommitCheck:
    """Policy's size caps on a task's commits (harness.git's `Worktree.check`), over what the
    commit would take: tracked and untracked files that are not ignored (build output, caches
    and virtualenvs a .gitignore names are never counted).

    A file over `file_bytes` is left out of every commit and the rest committed; a change whose
    files still total over `worktree_bytes` is not committed at all. Either way it stays in
    the tree, and the attempt that made it is refused as a policy problem. Sizes come from
    lstat: a symlink counts as the link itself, never followed, and no file is opened,
    because everything in the tree is the agent's."""

    def check(root: Path, files: list[str]) -> Refusal | None:
        sizes = _sizes(root, files)
        too_big = sorted(path for path, size in sizes.items() if size > limits.file_bytes)
        total = sum(size for path, size in sizes.items() if size <= limits.file_bytes)
        if total > limits.worktree_bytes:
            biggest = sorted(sizes, key=lambda path: (-sizes[path], path))[:BIGGEST_NAMED]
            named = ", ".join(f"{path} ({sizes[path]:,})" for path in biggest)
            return Refusal(
                kind="worktree-too-large",
                reason=f"the worktree's files to commit total {total:,} bytes, over "
                f"limits.worktree_bytes ({limits.worktree_bytes:,} bytes); biggest: {named}",
                everything=True,
            )
        if too_big:
            return Refusal(
                kind="file-too-large",
                reason=f"files over the size limit: {', '.join(too_big)}",
                paths=tuple(too_big),
            )
        return None

    return check


def _sizes(root: Path, files: list[str]) -> dict[str, int]:
    """lstat sizes of the regular files and symlinks among `files` (from `root`); gone ones
    (a tracked file deleted) and directories (a nested repository) count nothing."""
    sizes: dict[str, int] = {}
    for path in files:
        try:
            info = os.lstat(root / path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
            sizes[path] = info.st_size
    return sizes


def cgroups_usable() -> str | None:
    """None when per-command v1 memory and pids cgroups can be made here, else why not."""
    for controller in ("memory", "pids"):
        parent = CGROUP_ROOT / controller
        if not (parent / "cgroup.procs").exists():
            return f"no cgroup v1 {controller} controller at {parent}"
        if not os.access(parent, os.W_OK):
            return f"cannot create cgroups under {parent} (not root?)"
    return None


@contextlib.contextmanager
def command_cgroups(limits: SandboxLimits) -> Iterator[list[Path]]:
    """A memory and a pids cgroup of their own for one command, at `limits`; yields their
    `cgroup.procs` files (the command's first process writes itself there). Yields nothing
    when cgroups are not usable here; the rlimits still apply.

    Making and removing a memory cgroup costs ~20 ms, four times a sandboxed `true`, so the
    empty cgroups of finished commands are kept in a pool and reused (one command at a time
    each), and removed when harness exits."""
    if cgroups_usable() is not None:
        yield []
        return
    key = (limits.memory_bytes, limits.pids)
    with _POOL_LOCK:
        free = _POOL.setdefault(key, [])
        groups = free.pop() if free else None
    if groups is None:
        groups = _make_cgroups(limits)
    try:
        yield [group / "cgroup.procs" for group in groups]
    finally:
        with _POOL_LOCK:
            _POOL[key].append(groups)


_POOL: dict[tuple[int, int], list[list[Path]]] = {}
_POOL_LOCK = threading.Lock()


def _make_cgroups(limits: SandboxLimits) -> list[Path]:
    name = f"harness-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    made: list[Path] = []
    try:
        for controller, knob, value in (
            ("memory", "memory.limit_in_bytes", limits.memory_bytes),
            ("pids", "pids.max", limits.pids),
        ):
            group = CGROUP_ROOT / controller / name
            group.mkdir()
            made.append(group)
            (group / knob).write_text(str(value))
    except OSError:
        for group in made:
            _remove(group)
        raise
    for group in made:
        atexit.register(_remove, group)
    return made


def _remove(group: Path) -> None:
    # A finished command's pid namespace is gone when bwrap exits, but its processes may take
    # a moment to be reaped; a cgroup with members cannot be removed.
    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


@dataclass(frozen=True)
class Confinement:
    """What policy adds to every sandbox of a run: its commands' limits and the extra read
    paths of its view (policy's `limits:` and `sandbox.read_paths`)."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    read_paths: tuple[Path, ...] = ()

    @classmethod
    def of(cls, limits: SandboxLimits, view: SandboxView) -> Confinement:
        return cls(limits, tuple(Path(path) for path in view.read_paths))


DEFAULT_CONFINEMENT = Confinement()
"""Policy's defaults: for sandboxes made outside a run (tests, benchmarks)."""
