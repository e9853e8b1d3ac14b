"""A directory whose commands run under bubblewrap: the part every local sandbox shares."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.sandbox import Completed, PathOutsideSandbox, resolve_inside
from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.bridge import Egress, HostBridge, proxy_env
from harness.sandbox.host_files import read_regular, write_regular
from harness.sandbox.limits import SandboxLimits, cgroups_usable
from harness.sandbox.process import run_process
from harness.sandbox.spawner import Spawner

MAX_READ_BYTES = 64 * 1024 * 1024
"""What a tool reads of one file at most (tools cap what they show far below this)."""


class ConfinedDirectory:
    """Commands run in `path` with only `root` and `scratch` writable; files are read and
    written only inside `path`. Without bubblewrap commands still run, unconfined, and
    `isolation` says "none" so the records show it."""

    def __init__(
        self,
        root: Path,
        path: Path,
        scratch: Path,
        *,
        readable: Sequence[Path] = (),
        read_only: Sequence[Path] = (),
        limits: SandboxLimits = bwrap.DEFAULT_LIMITS,
        read_paths: Sequence[Path] = (),
    ) -> None:
        self.root = root
        """The writable tree; `path` (the cwd of commands) is inside it."""
        self.path = path
        self.scratch = scratch
        self._readable = [*bwrap.needed_host_paths(), *readable, *read_paths]
        self.limits = limits
        """Each command's memory, pids, CPU time and /tmp size (policy's `limits:`)."""
        self._read_only = list(read_only)
        probe = bwrap.probe()
        self._bwrap = probe.reason if probe.available else None
        self.isolation = "bubblewrap" if probe.available else "none"
        # Starts the commands inside the sandbox's cgroups, joined once (see spawner.py).
        self._spawner = Spawner(limits) if cgroups_usable() is None else None
        self._mounts: dict[Path, bwrap.Mount] = {}
        self._mount_env: dict[str, str] = {}
        self._path_first: dict[Path, str] = {}
        self.network = False
        """Whether commands share the host's network (only an environment set-up may)."""

    def mount(
        self, source: Path, target: Path, *, writable: bool = False, env: str, on_path: bool = False
    ) -> Path:
        """Bind `source` at `target` for every later command (replacing what was bound there),
        with the variable `env` naming where commands see it, which is returned: `target`
        under bubblewrap; unconfined there is no other path, so `source` itself. `on_path`:
        its bin/ comes first on PATH (a venv made there is the commands' Python)."""
        self._mounts[target] = bwrap.Mount(source, target, writable)
        seen_at = target if self._bwrap is not None else source
        self._mount_env[env] = str(seen_at)
        self._path_first.pop(target, None)
        if on_path:
            self._path_first[target] = str(seen_at / "bin")
        return seen_at

    def run(
        self,
        command: str,
        timeout_s: float,
        log_path: Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        egress: Egress | None = None,
    ) -> Completed:
        full_env = bwrap.sandbox_env(self.scratch) | self._mount_env | dict(env or {})
        if self._path_first:
            full_env["PATH"] = os.pathsep.join([*self._path_first.values(), full_env["PATH"]])
        if egress is not None and self._bwrap is not None:
            with HostBridge(egress) as bridge:
                return self._run(command, timeout_s, log_path, full_env | bridge.env(), bridge)
        if self._bwrap is None:  # unconfined: the host's network, said loudly on every run
            if egress is not None and egress.proxy is not None:
                full_env |= proxy_env(egress.proxy)
            argv = ["/bin/sh", "-c", command]
            return run_process(
                argv, cwd=self.path, env=full_env, timeout_s=timeout_s, log_path=log_path
            )
        return self._run(command, timeout_s, log_path, full_env, None)

    def _run(
        self,
        command: str,
        timeout_s: float,
        log_path: Path | None,
        full_env: Mapping[str, str],
        bridge: HostBridge | None,
    ) -> Completed:
        assert self._bwrap is not None
        argv = bwrap.wrap(
            self._bwrap,
            command,
            cwd=self.path,
            writable=[self.root, self.scratch],
            readable=self._readable,
            read_only=self._read_only,
            limits=self.limits,
            bridge=bridge,
            network=self.network and bridge is None,
            mounts=list(self._mounts.values()),
        )
        return run_process(
            argv,
            cwd=self.path,
            env=full_env,
            timeout_s=timeout_s,
            log_path=log_path,
            spawn=self._spawner.spawn if self._spawner else None,
        )

    # The tree is the agent's: harness reads and writes only regular files in it, without
    # following a link swapped in after `resolve_inside` looked, and a FIFO never blocks it.
    def read(self, relpath: str) -> str:
        target = resolve_inside(self.path, relpath)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", relpath)
        data = read_regular(target, MAX_READ_BYTES)
        if data is None and not os.path.lexists(target):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", relpath)
        if data is None:
            raise PathOutsideSandbox(f"{relpath!r} is not a regular file in the tree; refused")
        return data.decode("utf-8", errors="replace")

    def write(self, relpath: str, content: str) -> None:
        target = resolve_inside(self.path, relpath, writing=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not write_regular(target, content.encode("utf-8")):
            raise PathOutsideSandbox(f"{relpath!r} is not a regular file in the tree; refused")
