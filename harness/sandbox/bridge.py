"""Egress as policy: a sandboxed command reaches exactly the TCP endpoints harness bridges in.

The command keeps its own network namespace (only its loopback; no route anywhere else). For
each allowed endpoint, harness listens on a unix socket `<dir>/<port>` in a private 0700
directory it made (never one the agent can write), bound read-only into the sandbox, and a
harness thread relays each connection to the real endpoint on the host's 127.0.0.1. Inside,
harness's launcher (`bridge_launcher.py`) listens on 127.0.0.1:<same port> and relays to that
socket, so URLs work unchanged; then it loads the seccomp filter and execs the command.

An HTTP client that honours the proxy variables (urllib, requests, httpx, curl) is pointed at
one more bridged port: an allowlisting proxy (tinyproxy, for a networked agent: see
`egress_proxy.py`), or else harness's refusing proxy, which answers every request with 403 and
records its target as a `Denial`. A connection that ignores the proxy variables and dials an
address itself fails at once ("network unreachable" or "connection refused") and is not seen
by harness: nothing crosses a namespace that has no route.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

LAUNCHER_SOURCE = (Path(__file__).parent / "bridge_launcher.py").read_text(encoding="utf-8")
REFUSING_PROXY_PORT = 3128
"""The refusing proxy's port inside the sandbox (moved up if an allowed endpoint has it)."""
LOOPBACK_NAMES = "127.0.0.1,localhost"
CHUNK = 1 << 16
_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/\d\.\d\r?$")

Handler = Callable[[socket.socket], None]


@dataclass(frozen=True)
class Denial:
    """A connection harness refused and saw: an HTTP request through a proxy."""

    host: str
    port: int
    method: str
    via: str
    """What refused it: "harness" (the refusing proxy) or "tinyproxy"."""

    def __str__(self) -> str:
        return f"{self.method} {self.host}:{self.port}"


@dataclass
class Egress:
    """What one sandboxed command may reach besides its own loopback: `ports` on the host's
    127.0.0.1, each at the same 127.0.0.1 port inside. `proxy`, one of them, is an HTTP proxy
    the command's proxy variables name; without one, harness's refusing proxy is bridged in
    and named, and what it refuses lands in `denials`."""

    ports: tuple[int, ...] = ()
    proxy: int | None = None
    denials: list[Denial] = field(default_factory=list)

    @classmethod
    def to_urls(cls, urls: Iterable[str]) -> Egress:
        """Egress to the host ports these http://127.0.0.1:PORT URLs name, nothing else."""
        ports = {urlsplit(url).port for url in urls if urlsplit(url).hostname == "127.0.0.1"}
        return cls(ports=tuple(sorted(port for port in ports if port is not None)))


def proxy_env(port: int) -> dict[str, str]:
    """The proxy variables, upper and lower case (clients read one or the other)."""
    url = f"http://127.0.0.1:{port}"
    env: dict[str, str] = {}
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = url
    env["no_proxy"] = env["NO_PROXY"] = LOOPBACK_NAMES
    return env


class HostBridge:
    """The host side of one command's bridge: a private directory of unix sockets, one per
    port, each served by a harness thread. Use as a context manager around the command.

    `inbound` ports go the other way, for a service listening in its sandbox: harness listens
    on the host's 127.0.0.1:PORT and hands each accepted connection (its fd, SCM_RIGHTS) down a
    socketpair whose other end the sandbox inherits (`pass_fds`); the relay inside connects it
    to the service's 127.0.0.1:PORT. No path is involved, so nothing the sandbox writes can
    redirect harness's side."""

    def __init__(self, egress: Egress, inbound: Iterable[int] = ()) -> None:
        self.egress = egress
        self.directory = Path(tempfile.mkdtemp(prefix="harness-bridge-"))  # mode 0700
        handlers: dict[int, Handler] = {port: relay_to(port) for port in egress.ports}
        proxy = egress.proxy
        if proxy is None:
            proxy = REFUSING_PROXY_PORT
            while proxy in handlers:
                proxy += 1
            handlers[proxy] = RefusingProxy(egress.denials).handle
        self.proxy_port = proxy
        self.ports = sorted(handlers)
        """Every port the sandbox listens on: the allowed ones and the proxy."""
        self._listeners: list[socket.socket] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        for port, handler in handlers.items():
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.directory / str(port)))
            listener.listen(128)
            self._listeners.append(listener)
            thread = threading.Thread(target=self._accept, args=(listener, handler), daemon=True)
            thread.start()
        self.inbound: dict[int, int] = {}
        """Inbound port -> the fd of the socketpair end the sandbox inherits."""
        self._ends: list[socket.socket] = []
        for port in inbound:
            listener = socket.create_server(("127.0.0.1", port))
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listeners.append(listener)
            self._ends += [ours, theirs]
            self.inbound[port] = theirs.fileno()
            handler = functools.partial(_hand_down, ours)
            threading.Thread(target=self._accept, args=(listener, handler), daemon=True).start()

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The fds the sandboxed process must inherit (Popen's `pass_fds`)."""
        return tuple(self.inbound.values())

    def env(self) -> dict[str, str]:
        return proxy_env(self.proxy_port)

    def launcher(self, python: str, command: str, bpf_fd: int | None) -> list[str]:
        """The argv, inside the sandbox, that starts the relay, binds the filter (read from
        `bpf_fd`) and runs `command`."""
        ports = ",".join(str(port) for port in self.ports)
        inbound = ",".join(f"{fd}:{port}" for port, fd in self.inbound.items()) or "-"
        fd = "-" if bpf_fd is None else str(bpf_fd)
        # The interpreter itself, not a venv link or a path through `..` that the view lacks:
        # -I -S needs only the standard library, under the bound sys.base_prefix.
        python = os.path.realpath(python)
        source = [python, "-I", "-S", "-c", LAUNCHER_SOURCE]
        return [*source, str(self.directory), ports, inbound, fd, command]

    def _accept(self, listener: socket.socket, handler: Handler) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._open.add(client)
            threading.Thread(target=self._serve, args=(client, handler), daemon=True).start()

    def _serve(self, client: socket.socket, handler: Handler) -> None:
        try:
            handler(client)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(client)
            client.close()

    def close(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for client in self._open:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
        for end in self._ends:
            end.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> HostBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hand_down(channel: socket.socket, client: socket.socket) -> None:
    """Pass an accepted connection into the sandbox; harness's copy is closed by the caller."""
    socket.send_fds(channel, [b"c"], [client.fileno()])


def relay_to(port: int) -> Handler:
    """A handler relaying a connection to the host's 127.0.0.1:`port`."""

    def relay(client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            return  # the sandbox sees the connection closed, as a refused one
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the sandbox side
        with upstream:
            splice(client, upstream)

    return relay


def splice(one: socket.socket, other: socket.socket) -> None:
    """Copy both ways until both sides are done, passing each EOF on as a half-close."""
    back = threading.Thread(target=_pump, args=(other, one), daemon=True)
    back.start()
    _pump(one, other)
    back.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class RefusingProxy:
    """An HTTP proxy that forwards nothing: it reads the request line, records its target
    and answers 403 with a sentence saying why. It never reads a request body."""

    def __init__(self, denials: list[Denial]) -> None:
        self.denials = denials
        self._lock = threading.Lock()

    def handle(self, client: socket.socket) -> None:
        client.settimeout(10)
        line = _read_line(client)
        match = _REQUEST_LINE.match(line)
        if match is None:
            return
        method, target = match.group(1).decode(), match.group(2).decode("latin-1")
        host, port = request_target(method, target)
        with self._lock:
            self.denials.append(Denial(host, port, method, "harness"))
        body = (
            f"harness: egress to {host}:{port} is refused: this sandbox reaches only the "
            "services harness routes to it; the attempt was recorded\n"
        ).encode()
        client.sendall(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


def _read_line(client: socket.socket, limit: int = 8192) -> bytes:
    line = b""
    while not line.endswith(b"\n") and len(line) < limit:
        byte = client.recv(1)
        if not byte:
            break
        line += byte
    return line.rstrip(b"\n")


def request_target(method: str, target: str) -> tuple[str, int]:
    """The host and port of a proxy request's target: `host:port` for CONNECT, else a URL."""
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        return host.strip("[]"), int(port) if port.isdigit() else 443
    parts = urlsplit(target)
    default = 443 if parts.scheme == "https" else 80
    try:
        number = parts.port or default
    except ValueError:
        number = default
    return parts.hostname or target, number
