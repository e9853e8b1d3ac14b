"""Resource limits of sandboxed commands, the extra read paths of the sandbox's view, and the
size checks a commit must pass.

Limits are enforced twice where the machine allows: cgroups per sandbox (v1 memory and pids, as
root, joined once by the sandbox's spawner, which all its commands inherit) and rlimits set just
before bubblewrap starts, per process. rlimits alone cannot stop a fork bomb when harness runs
as root: the kernel skips RLIMIT_NPROC for the initial namespace's root user, and bubblewrap's
user namespace maps the sandbox's root to that same user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, field_validator

from harness.config.strict import StrictModel
from harness.git import CommitCheck, Refusal

MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")


class SandboxLimits(StrictModel):
    """Policy's `limits:` section: what one sandbox and its commands may use."""

    memory_bytes: int = Field(default=4096 * MIB, ge=64 * MIB)
    """Memory of one sandbox, all its commands together (its memory cgroup), and of each
    process (RLIMIT_DATA: heap and private mappings), so a memory bomb fails its allocation
    or is killed, and harness keeps running."""
    pids: int = Field(default=1024, ge=16)
    """Processes and threads of one sandbox at once (its pids cgroup): a fork bomb's fork
    fails."""
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


class SandboxPoolConfig(StrictModel):
    """Policy's `sandbox.pool:`: worktrees checked out at a base in the background, so a new
    task's sandbox is a claim (a few constant-time git calls) instead of a checkout whose cost
    grows with the repository (harness.sandbox.pool)."""

    size: int = Field(default=2, ge=0, le=64)
    """Ready worktrees kept per (repository, base commit); 0 turns the pool off. A run keeps
    at most as many as it still has tasks to start on that base; `harness serve`, which
    cannot know, keeps `size`."""
    ttl_s: float = Field(default=3600.0, gt=0)
    """A ready worktree older than this is dropped and made again."""


class SandboxView(StrictModel):
    """Policy's `sandbox:` section: what a sandbox may see beyond its allowlisted view."""

    read_paths: list[str] = []
    """Absolute host paths bound read-only into every sandbox (a toolchain under /opt, a
    shared dataset). Each is recorded in the run summary, since it widens what agents read."""
    pool: SandboxPoolConfig = SandboxPoolConfig()
    """Ready sandboxes per (repository, base commit) (see SandboxPoolConfig)."""

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
    """None when v1 memory and pids cgroups can be made here, else why not."""
    for controller in ("memory", "pids"):
        parent = CGROUP_ROOT / controller
        if not (parent / "cgroup.procs").exists():
            return f"no cgroup v1 {controller} controller at {parent}"
        if not os.access(parent, os.W_OK):
            return f"cannot create cgroups under {parent} (not root?)"
    return None


def take_cgroups(limits: SandboxLimits) -> list[Path]:
    """A memory and a pids cgroup at `limits`, for one sandbox's spawner (harness.sandbox.
    spawner) to join: every command of the sandbox inherits them. Empty when cgroups are not
    usable here; the rlimits still apply.

    Making and removing a memory cgroup costs ~20 ms, so the cgroups of closed sandboxes are
    kept in a pool and reused (one sandbox at a time each), and removed when harness exits."""
    if cgroups_usable() is not None:
        return []
    key = (limits.memory_bytes, limits.pids)
    with _POOL_LOCK:
        free = _POOL.setdefault(key, [])
        if free:
            return free.pop()
    return _make_cgroups(limits)


def give_back_cgroups(limits: SandboxLimits, groups: list[Path]) -> None:
    """Return `take_cgroups`'s groups to the pool, once nothing runs in them."""
    if groups:
        with _POOL_LOCK:
            _POOL[(limits.memory_bytes, limits.pids)].append(groups)


_POOL: dict[tuple[int, int], list[list[Path]]] = {}
_POOL_LOCK = threading.Lock()
_MADE: list[Path] = []


def _make_cgroups(limits: SandboxLimits) -> list[Path]:
    if not _MADE:
        _remove_stale()
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
    with _POOL_LOCK:
        _MADE.extend(made)
    return made


@atexit.register  # at import, so it runs after the spawners (registered later) have stopped
def _remove_all() -> None:
    for group in _MADE:
        _remove(group)


def _remove_stale() -> None:
    """Remove the empty cgroups of harness processes that are gone: one killed (SIGKILL, the
    OOM killer) never ran its exit handlers."""
    for controller in ("memory", "pids"):
        for group in (CGROUP_ROOT / controller).glob("harness-*-*"):
            pid = group.name.split("-")[1]
            if pid.isdigit() and not Path("/proc", pid).exists():
                with contextlib.suppress(OSError):  # not empty, or removed by another
                    group.rmdir()


def _remove(group: Path) -> None:
    # A stopped sandbox's pid namespace is gone when bwrap exits, but its processes may take
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
