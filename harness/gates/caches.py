"""Warm gate caches: a gate's tool cache (mypy's and ruff's, which every sandbox keeps in its
scratch dir, or any a policy names in `gates[].cache_dirs`) is built once per run on the base
commit, by the gate's run there (harness.gates.preexisting), and each gate run of a task starts
from a private copy of it.

mypy validates a cached module by its size and hash when the mtime differs, so a cache built in
another checkout of the same files is valid; what the task changed is re-checked, and a tool
whose version changed simply rebuilds. Nothing here decides a verdict: a missing or unusable
cache only makes the gate slower.

Safety:
- the snapshot is copied out of the base run's sandbox on the host (a tree harness made from
  the user's base commit), walking no symlink and copying only directories and regular files;
- it lives under run_dir/caches/<base run>/, read-only, and task sandboxes see it read-only;
- a task's copy is made INSIDE its sandbox (`cp` as a sandboxed command), because the
  destination is the agent's to write (its scratch dir, its tree): a `mypy-cache -> /etc` it
  planted is followed, if at all, inside the sandbox's view. Each task gets its own copy, so a
  task's writes reach neither the snapshot nor a sibling task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from harness.config.policy import GateConfig
from harness.config.spec import Spec
from harness.errors import InfrastructureError
from harness.gates.runner import GateEnvironment, GatePrepare
from harness.sandbox import Sandbox
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.lifecycle import kill_sandbox_processes
from harness.sandbox.limits import Confinement

if TYPE_CHECKING:
    from harness.gates.preexisting import PreexistingFailures

_logger = logging.getLogger(__name__)

TOOL_CACHE_ENV = {"mypy": "MYPY_CACHE_DIR", "ruff": "RUFF_CACHE_DIR"}
"""The variable naming a tool's cache dir: every sandbox sets it to a dir in its scratch dir
(bubblewrap.sandbox_env), so by default a tool named in a gate's command caches there. pytest
runs with `-p no:cacheprovider` in every sandbox: it has no cache."""

SEED_TIMEOUT_S = 300.0
"""The in-sandbox copy of a task's caches is killed after this long (a copy, not a build)."""


@dataclass(frozen=True)
class CacheDir:
    """One directory a gate's tool caches in: a path in the tree, relative to the spec's repo
    directory (policy's `cache_dirs`), or the sandbox variable naming one in the scratch dir."""

    tree: str | None = None
    env: str | None = None

    @property
    def name(self) -> str:
        """Its place in a snapshot."""
        return f"tree/{self.tree}" if self.tree is not None else f"env/{self.env}"

    def on_host(self, path: Path, scratch: Path) -> Path:
        """Where it is for a sandbox whose tree is at `path` and scratch dir at `scratch`."""
        if self.tree is not None:
            return path / self.tree
        return Path(bwrap.sandbox_env(scratch)[str(self.env)])

    def in_sandbox(self) -> str:
        """The shell word naming it in a sandboxed command (whose working dir is the tree)."""
        return shlex.quote(self.tree) if self.tree is not None else f'"${self.env}"'


def cache_dirs(gate: GateConfig) -> list[CacheDir]:
    """Where the gate's tool caches: the policy's `cache_dirs`, else the defaults of the tools
    its command names (their cache dirs in the sandbox's scratch dir)."""
    if gate.kind == "integration":
        return []  # its base run has no services: nothing to build a cache from
    if gate.cache_dirs is not None:
        return [CacheDir(tree=relpath) for relpath in gate.cache_dirs]
    # Words of the command, by their last path part: `mypy`, `.venv/bin/mypy`, `python -m mypy`.
    words = {PurePath(word).name for word in re.split(r"[\s;&|()`'\"]+", gate.command) if word}
    return [CacheDir(env=env) for tool, env in TOOL_CACHE_ENV.items() if tool in words]


def capture(
    path: Path, scratch: Path, dirs: Sequence[CacheDir], snapshot: Path, *, read_only: bool = True
) -> bool:
    """Copy each of `dirs` of a sandbox that ran a gate (tree at `path`, scratch dir at
    `scratch`) into `snapshot`, replacing what was there (a previous process's). Only real
    directories are entered (a path through a symlink is skipped) and only directories and
    regular files are copied. Whether anything was."""
    shutil.rmtree(snapshot, ignore_errors=True)
    captured = False
    try:
        snapshot.mkdir(parents=True)
        for where in dirs:
            source = where.on_host(path, scratch)
            top = path if where.tree is not None else scratch
            captured |= copy_plain(top, source, snapshot, snapshot / where.name)
    except OSError as exc:  # a full disk, say: the gates run cold, nothing else changes
        _logger.warning("gate caches not kept from %s: %s", path, exc)
        shutil.rmtree(snapshot, ignore_errors=True)
        return False
    if read_only:
        for dirpath, _, filenames in os.walk(snapshot):
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
    return captured


def copy_plain(source_top: Path, source: Path, target_top: Path, target: Path) -> bool:
    """Copy the directory `source` to `target` (which must not exist), if every part of both
    below their tops is a real directory (no link is followed on either side); directories and
    regular files only. Whether it was copied."""
    if not _real_directory(source_top, source) or os.path.lexists(target):
        return False
    if not _real_directory(target_top, target.parent, make=True):
        return False
    shutil.copytree(source, target, symlinks=True, ignore=_not_plain)
    return True


def _real_directory(top: Path, target: Path, *, make: bool = False) -> bool:
    """Whether `target` is `top` or below it and every part of it from `top` on is a directory,
    none of them a link; with `make`, missing parts below `top` are made."""
    try:
        parts = target.relative_to(top).parts
    except ValueError:
        return False
    here = top
    for part in ["", *parts]:
        here = here / part if part else here
        try:
            if make and part and not os.path.lexists(here):
                os.mkdir(here)  # refuses to follow a link swapped in: it would exist
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                return False
        except OSError:
            return False
    return True


def _not_plain(dirpath: str, names: list[str]) -> list[str]:
    """copytree's ignore: links, FIFOs, sockets and devices are left out (a FIFO would block
    the copy; a link is never followed)."""
    left_out = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
        except OSError:
            left_out.append(name)
            continue
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            left_out.append(name)
    return left_out


def seed_command(pairs: Sequence[tuple[Path, CacheDir]]) -> str:
    """The sandboxed shell command that copies each snapshot dir to its place.

    A cache in the scratch dir is replaced: what the agent's own commands left there (its
    scratch dir is its to write) is not what the gates start from. A cache in the tree is only
    ever put in an empty place: anything there (the agent's committed files, a link included)
    is left as it is, so the tree stays the committed one."""
    lines = []
    for source, where in pairs:
        src, dst = shlex.quote(str(source)), where.in_sandbox()
        if where.tree is None:
            lines.append(f"rm -rf -- {dst}")
        lines.append(
            f"if [ -e {dst} ] || [ -L {dst} ]; then echo kept {dst}; "
            f'else mkdir -p -- "$(dirname -- {dst})" && '
            f"cp -R --preserve=timestamps --no-preserve=mode -- {src} {dst} || status=1; fi"
        )
    return "\n".join(["status=0", *lines, 'exit "$status"'])


class GateCaches:
    """The run's warm gate caches: base runs started early (`warm`), and each gate run of a
    task seeded from their snapshots (`seeding`, `seed`). Safe to use from many lanes at once."""

    def __init__(self, preexisting: PreexistingFailures, workers: int = 2) -> None:
        self.preexisting = preexisting
        self.root = preexisting.caches_root
        """run_dir/caches: one snapshot dir per base run; removed at the run's end (`close`)."""
        # Base runs are whole gate runs: two at a time at most, beside the run's lanes.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="base-caches")
        self._warming: set[str] = set()
        self._lock = threading.Lock()

    def view(self, confinement: Confinement) -> Confinement:
        """The run's task sandboxes' confinement with the snapshots in their read-only view:
        the seeding copy runs in the task's sandbox and reads them from there."""
        self.root.mkdir(parents=True, exist_ok=True)
        return replace(confinement, read_paths=(*confinement.read_paths, self.root))

    def warm(self, specs: Iterable[Spec], gates: Sequence[GateConfig]) -> None:
        """Start, in the background, the base runs of the gates that have caches, so a task's
        first gate phase finds its caches built (the runs are shared and kept by
        PreexistingFailures, which also compares each gate with them)."""
        for spec in specs:
            for gate in gates:
                if not cache_dirs(gate):
                    continue
                key = self.preexisting.key(spec, gate)
                with self._lock:
                    if key in self._warming:
                        continue
                    self._warming.add(key)
                self._pool.submit(self._warm_one, spec, gate)

    def _warm_one(self, spec: Spec, gate: GateConfig) -> None:
        try:
            self.preexisting.cache_snapshot(spec, gate)
        except Exception:  # the gate phase runs it again, and reports what fails
            _logger.warning("base run of %s for %s failed", gate.name, spec.id, exc_info=True)

    def seeding(self, spec: Spec, sandbox: Sandbox, prepare: GatePrepare) -> GatePrepare:
        """`prepare`, preceded by seeding the gate's caches (`seed`): each gate starts from
        the base's caches, waiting only for its own base run, and the time is the gate's set-up
        time (`setup_s` in its record, part of its duration). Set it after the tree was made a
        clean checkout: that removes the caches a tree holds."""

        def prepared(gate: GateConfig) -> GateEnvironment:
            self.seed(sandbox, spec, [gate])
            return prepare(gate)

        return prepared

    def seed(self, sandbox: Sandbox, spec: Spec, gates: Sequence[GateConfig]) -> float:
        """Copy the base's caches of `gates` into the sandbox's tree, each task its own copy,
        waiting for a base run still under way. Call it after the tree was made a clean
        checkout (which removes ignored caches). The seconds it took (gate time)."""
        started = time.monotonic()
        if sandbox.isolation != "bubblewrap":
            return 0.0  # unconfined, the copy would follow the agent's links on the host
        pairs: list[tuple[Path, CacheDir]] = []
        for gate in gates:
            dirs = cache_dirs(gate)
            if not dirs:
                continue
            try:
                snapshot = self.preexisting.cache_snapshot(spec, gate)
            except (InfrastructureError, OSError) as exc:  # reported by the gate's comparison
                _logger.warning("no warm cache for %s: %s", gate.name, exc)
                continue
            if snapshot is not None:
                pairs += [(snapshot / d.name, d) for d in dirs if (snapshot / d.name).is_dir()]
        if pairs:
            done = sandbox.run(seed_command(pairs), timeout_s=SEED_TIMEOUT_S)
            if done.exit_code != 0 or done.timed_out:
                _logger.warning("seeding caches in %s failed: %s", spec.id, done.output[-500:])
        return time.monotonic() - started

    def close(self) -> None:
        """At the run's end: base runs not started are dropped, those still under way stopped
        (no task is left to need them; an interrupted run ends at once), and the snapshots
        removed (the run keeps its records, not its caches)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        kill_sandbox_processes((self.preexisting.run_dir / "base").resolve())
        self._pool.shutdown(wait=True)
        shutil.rmtree(self.root, ignore_errors=True)


TOOL_TREE_DIRS = {"MYPY_CACHE_DIR": ".mypy_cache", "RUFF_CACHE_DIR": ".ruff_cache"}
"""Where a tool caches when run directly in a tree (no variable set): where `harness check`
finds the user's own caches."""


def warm_check(
    sandbox_path: Path, scratch: Path, tree: Path, kept: Path, gates: Sequence[GateConfig]
) -> list[str]:
    """`harness check`'s caches, before its gates run: each gate's cache dirs filled from what
    harness kept from the last check of this tree (`kept`, see `keep_check`), else from the
    user's tree's own (`.mypy_cache`, `.ruff_cache`, policy's `cache_dirs`), read only. The
    copies are made on the host into the snapshot harness just made, before any command ran in
    it. The cache dirs filled, as the gates' `CacheDir.name`s."""
    filled = []
    for where in {d for gate in gates for d in cache_dirs(gate)}:
        target = where.on_host(sandbox_path, scratch)
        target_top = sandbox_path if where.tree is not None else scratch
        own = where.tree if where.tree is not None else TOOL_TREE_DIRS.get(str(where.env))
        for top, source in [(kept, kept / where.name), (tree, tree / str(own))]:
            if own is not None and copy_plain(top, source, target_top, target):
                _make_writable(target)
                filled.append(where.name)
                break
    return sorted(filled)


def keep_check(sandbox_path: Path, scratch: Path, kept: Path, gates: Sequence[GateConfig]) -> None:
    """After `harness check`'s gates: their caches kept in harness's own dir for this tree
    (under the runs dir), for the next check. The user's tree is never written."""
    dirs = sorted({d for gate in gates for d in cache_dirs(gate)}, key=lambda d: d.name)
    kept.parent.mkdir(parents=True, exist_ok=True)
    # Copied aside, then swapped in: a check that dies half-way, or two checks of one tree at
    # once, leave a complete copy.
    partial = Path(tempfile.mkdtemp(prefix=f"{kept.name}.", dir=kept.parent))
    if capture(sandbox_path, scratch, dirs, partial, read_only=False):
        shutil.rmtree(kept, ignore_errors=True)
        with contextlib.suppress(OSError):  # another check's copy got there first
            partial.rename(kept)
    shutil.rmtree(partial, ignore_errors=True)


def _make_writable(top: Path) -> None:
    """The tools write their caches: every copied file and directory is the owner's to write."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            here = os.path.join(dirpath, name)
            os.chmod(here, stat.S_IMODE(os.lstat(here).st_mode) | stat.S_IWUSR)
