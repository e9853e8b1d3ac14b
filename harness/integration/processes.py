"""One service process: started under bubblewrap on a free port, polled until healthy, killed.

Services get the sandbox's confinement: the host read-only, their source tree read-only, a
private writable scratch directory (HOME, TMPDIR), the scrubbed environment, and their own
network namespace: their port is bridged in from the host's 127.0.0.1 (harness accepts there
and hands each connection down), and they reach out only to the routing layer URLs in their
environment; anything else through a proxy is refused and recorded (harness/sandbox/bridge.py).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.sandbox import bubblewrap as bwrap
from harness.sandbox.bridge import Denial, Egress, HostBridge

LOG_TAIL_LINES = 40
HEALTH_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 5.0


BASELINE = "baseline"
"""The instance name of a service in the shared baseline (a task's are named by its key)."""


class ServiceNotReady(Exception):
    """A service exited, or did not answer its health check in time; carries its log's tail."""

    def __init__(
        self,
        service: str,
        instance: str,
        why: str,
        log: Path,
        tail: str,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(f"service {service!r} ({instance}) {why}")
        self.service = service
        self.instance = instance
        self.why = why
        self.log = log
        self.tail = tail
        self.exit_code = exit_code
        """Set when the process exited (rather than never answering its health check)."""


class Launcher:
    """Starts service processes from one long-lived thread.

    bubblewrap's --die-with-parent uses Linux's parent-death signal, which follows the parent
    *thread*: a service started from a task's worker thread would be killed whenever that
    thread ended. Started from here, services live until harness stops them or exits.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-services")

    def popen(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as sink:
            return self._pool.submit(
                subprocess.Popen,
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills the whole tree
                pass_fds=tuple(pass_fds),
            ).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def reserve_port() -> int:
    """A free port on 127.0.0.1 for a service to listen on. The kernel may hand a just-closed
    port out again; this process never hands out one still in use by its own services."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise OSError("no free port on 127.0.0.1")


def release_port(port: int) -> None:
    with _ports_lock:
        _ports_handed_out.discard(port)


@dataclass
class ServiceProcess:
    name: str
    instance: str
    """`baseline`, or the routing key of the sandbox it belongs to."""
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)
    ready_s: float | None = None
    """Seconds from start to the first 2xx health answer, once it came."""
    bridge: HostBridge | None = None
    """Its network: the port in, the routing layer out (None when unconfined)."""

    @classmethod
    def start(
        cls,
        launcher: Launcher,
        name: str,
        command: str,
        *,
        instance: str,
        port: int,
        cwd: Path,
        scratch: Path,
        log: Path,
        env: Mapping[str, str],
        readable: Sequence[Path] = (),
        denials: list[Denial] | None = None,
    ) -> ServiceProcess:
        """Run `command` in `cwd` (read-only) with `env` added to the sandbox's environment,
        reaching the routing layer URLs in `env` only; what it tries through a proxy besides
        goes to `denials`."""
        scratch.mkdir(parents=True, exist_ok=True)
        full_env = bwrap.sandbox_env(scratch) | {"PYTHONUNBUFFERED": "1"} | dict(env)
        probe = bwrap.probe()
        if not probe.available:
            argv = ["/bin/sh", "-c", command]
            process = launcher.popen(argv, cwd=cwd, env=full_env, log=log)
            return cls(name, instance, port, process, log)
        egress = Egress.to_urls(env.values())
        if denials is not None:
            egress.denials = denials
        bridge = HostBridge(egress, inbound=[port])
        try:
            argv = bwrap.wrap(
                probe.reason,
                command,
                cwd=cwd,
                writable=[scratch],
                readable=[*bwrap.needed_host_paths(), cwd, *readable],
                bridge=bridge,
            )
            full_env |= bridge.env()
            process = launcher.popen(argv, cwd=cwd, env=full_env, log=log, pass_fds=bridge.pass_fds)
        except BaseException:
            bridge.close()
            raise
        return cls(name, instance, port, process, log, bridge=bridge)

    def wait_ready(self, health: str, timeout_s: float) -> float:
        """Poll `health` until it answers 2xx; seconds since start. ServiceNotReady if the
        process exits first or `timeout_s` passes."""
        deadline = self.started + timeout_s
        delay = 0.01
        while True:
            code = self.process.poll()
            if code is not None:
                why = f"exited with code {code} before answering {health}"
                raise self._not_ready(why, exit_code=code)
            if _answers(self.port, health):
                self.ready_s = time.monotonic() - self.started
                return self.ready_s
            if time.monotonic() > deadline:
                why = f"did not answer {health} with 2xx within {timeout_s:g} s"
                raise self._not_ready(f"{why} (port {self.port})")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the service and everything it started, and wait until they are gone;
        idempotent. Killing bubblewrap's process group ends its pid namespace, but only
        asynchronously, and an unconfined service may have left its group: so every
        descendant, found by parentage before the kill, is killed and waited for too."""
        tree = descendants(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _living(tree) and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.bridge is not None:
            self.bridge.close()
        release_port(self.port)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self.log.open("rb") as handle:
                handle.seek(max(0, self.log.stat().st_size - 64_000))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _not_ready(self, why: str, exit_code: int | None = None) -> ServiceNotReady:
        self.stop()  # a hung service must not outlive the failure it caused
        return ServiceNotReady(self.name, self.instance, why, self.log, self.tail(), exit_code)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process on the host (zombies left out)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, by parentage."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _living(pids: set[int]) -> bool:
    return bool(pids & set(_parents()))


def _answers(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HEALTH_TIMEOUT_S)
    try:
        connection.request("GET", path)
        return 200 <= connection.getresponse().status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
