"""A networked agent's egress: Debian's tinyproxy on the host's 127.0.0.1, allowing only the
host names policy lists (`agent.egress`), bridged into the agent's sandbox (bridge.py).

harness writes tinyproxy's whole configuration into a private 0700 directory of its own:
`FilterDefaultDeny Yes` with one anchored extended regex per allowed host
(`^api\\.anthropic\\.com$`, case-sensitive; names are lower-case), `ConnectPort 443`
(HTTPS through CONNECT to port 443 only; plain HTTP to any port of an allowed host) and a log
file harness reads after the command: each request refused for its host, or for a CONNECT
port, becomes a `Denial`. Host names are resolved by tinyproxy, on the host: the sandbox
has no resolver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness.errors import InfrastructureError
from harness.sandbox.bridge import Denial, Egress, request_target

TINYPROXY = "tinyproxy"
READY_TIMEOUT_S = 10.0
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*")
_REQUEST = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+) HTTP/")
_FILTERED = re.compile(r'Proxying refused on filtered domain "([^"]*)"')
_BAD_PORT = re.compile(r"Refused CONNECT method on port (\d+)")


def egress_host(value: str) -> str:
    """A policy `agent.egress` entry: a lower-case host name or an IP address; no wildcards,
    schemes, ports or paths (a ValueError saying so otherwise)."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(value))
    if not _HOST_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a host name: list bare lower-case names, e.g. api.anthropic.com "
            "(no scheme, port, path or wildcard)"
        )
    return value


class AllowlistProxy:
    """tinyproxy for one command, allowing `hosts` only. A context manager: started on entry,
    stopped on exit; `denials()` reads what it refused."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.hosts = list(hosts)
        self.directory = Path(tempfile.mkdtemp(prefix="harness-egress-"))  # mode 0700
        self.log = self.directory / "tinyproxy.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def egress(self) -> Egress:
        """What the sandbox is given: the proxy's port, bridged in and named by *_PROXY."""
        return Egress(ports=(self.port,), proxy=self.port)

    def start(self) -> None:
        binary = shutil.which(TINYPROXY)
        if binary is None:
            raise InfrastructureError(
                "agent.egress needs tinyproxy, which is not installed "
                "(scripts/install-system-deps installs it: apt-get install tinyproxy)"
            )
        allow = self.directory / "allow"
        allow.write_text("".join(f"^{re.escape(host)}$\n" for host in self.hosts), "utf-8")
        self.port = _free_port()
        config = self.directory / "tinyproxy.conf"
        config.write_text(_config(self.port, allow, self.log), encoding="utf-8")
        self._process = subprocess.Popen(
            [binary, "-d", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text("utf-8", "replace")[-1000:] if self.log.exists() else ""
                self.stop()
                raise InfrastructureError(f"tinyproxy did not start on port {self.port}: {tail}")
            time.sleep(0.01)

    def denials(self) -> list[Denial]:
        """The requests tinyproxy refused, from its log: each refusal is matched with the
        latest request line before it that names the same host (or CONNECT port)."""
        if not self.log.exists():
            return []
        requests: list[tuple[str, str, int]] = []
        found: list[Denial] = []
        for line in self.log.read_text("utf-8", "replace").splitlines():
            if match := _REQUEST.search(line):
                requests.append((match[1], *request_target(match[1], match[2])))
            elif match := _FILTERED.search(line):
                found.append(_refused(requests, host=match[1]))
            elif match := _BAD_PORT.search(line):
                found.append(_refused(requests, port=int(match[1])))
        return found

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> AllowlistProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _config(port: int, allow: Path, log: Path) -> str:
    return "\n".join(
        [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 600",
            f'LogFile "{log}"',
            "LogLevel Info",  # request lines (Connect) and refusals (Notice, Info)
            "MaxClients 100",
            "FilterDefaultDeny Yes",
            "FilterType ere",
            "FilterCaseSensitive Yes",
            f'Filter "{allow}"',
            "ConnectPort 443",
            "DisableViaHeader Yes",
            "",
        ]
    )


def _refused(
    requests: list[tuple[str, str, int]], *, host: str | None = None, port: int | None = None
) -> Denial:
    for method, target_host, target_port in reversed(requests):
        if host in (None, target_host) and port in (None, target_port):
            return Denial(target_host, target_port, method, "tinyproxy")
    return Denial(host or "?", port or 0, "?", "tinyproxy")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
