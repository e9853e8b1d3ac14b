"""The in-sandbox entry point of a bridged command: harness's relay, then the seccomp filter, then
the command. Standard library only, and never imported by harness: its source is handed to
harness's own interpreter (bound read-only) as
`python -I -S -c <source> DIR PORTS INBOUND FD COMMAND`.

1. Listens on 127.0.0.1:PORT in the sandbox's own network namespace for each port in PORTS,
   before anything of the command runs, so the ports are harness's.
2. Forks the relay (twice, so bubblewrap's init is its parent and it dies with the sandbox):
   each connection to 127.0.0.1:PORT is relayed to the unix socket DIR/PORT, where harness's
   host-side bridge (harness/sandbox/bridge.py) relays it on to the one endpoint it allows.
   The relay makes itself non-dumpable, so the command cannot write into its memory through
   /proc/PID/mem (ptrace itself is refused by the filter).
   INBOUND ("fd:port,…" or "-"), for a service listening in the sandbox, are socketpair ends
   inherited from harness: each connection harness accepts on the host's 127.0.0.1:port
   arrives on one as an fd, and the relay connects it to 127.0.0.1:port here.
3. Loads the seccomp filter from fd FD itself (bubblewrap's `--seccomp` would load it before
   this script ran, and the filter refuses the AF_UNIX sockets the relay needs), then execs
   `/bin/sh -c COMMAND`: the command and all it starts run under the filter as before.
"""

from __future__ import annotations

import _socket
import _thread
import ctypes
import os
import sys

# C modules only (_socket, _thread, not socket, threading): each bridged command pays for this
# script's imports before it starts, and these are ~15 ms cheaper.
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
CHUNK = 1 << 16


class SockFprog(ctypes.Structure):
    """struct sock_fprog: the length in instructions (8 bytes each) and the program."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def main(argv: list[str]) -> None:
    bridge_dir, ports, inbound, bpf_fd, command = argv
    listeners = []
    for port in (int(p) for p in ports.split(",") if p):
        listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listeners.append((listener, f"{bridge_dir}/{port}"))
    channels = []  # inbound: (the socketpair end harness hands connections down, the port)
    for pair in inbound.split(",") if inbound != "-" else []:
        channel, inbound_port = pair.split(":")
        channels.append((int(channel), int(inbound_port)))
    program = b""
    if bpf_fd != "-":
        with os.fdopen(int(bpf_fd), "rb") as bpf:
            program = bpf.read()
    if os.fork() == 0:
        if os.fork() == 0:
            relay(listeners, channels)
        os._exit(0)
    os.wait()
    for listener, _ in listeners:
        listener.close()
    for channel_fd, _ in channels:
        os.close(channel_fd)  # the command gets no way to take the service's connections
    if program:
        load_filter(program)
    os.execv("/bin/sh", ["/bin/sh", "-c", command])


def load_filter(program: bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("prctl(PR_SET_NO_NEW_PRIVS)", ctypes.get_errno())
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        fail("prctl(PR_SET_SECCOMP)", ctypes.get_errno())


def fail(what: str, errno: int) -> None:
    sys.stderr.write(f"harness sandbox: {what} failed: {os.strerror(errno)}\n")
    os._exit(125)


def relay(listeners: list[tuple[_socket.socket, str]], channels: list[tuple[int, int]]) -> None:
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # The command's output pipe must not be held open by the relay.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for listener, target in listeners:
        _thread.start_new_thread(accept, (listener, target))
    for fd, port in channels:
        _thread.start_new_thread(receive, (_socket.socket(fileno=fd), port))
    forever = _thread.allocate_lock()
    forever.acquire()
    forever.acquire()  # the relay lives as long as the sandbox


def accept(listener: _socket.socket, target: str) -> None:
    while True:
        fd, _ = listener._accept()  # type: ignore[attr-defined]  # socket.accept's C half
        client = _socket.socket(fileno=fd)
        # Relayed writes go out as they come: Nagle's wait for an ACK would add up to 40 ms.
        client.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        _thread.start_new_thread(connect, (client, target))


def receive(channel: _socket.socket, port: int) -> None:
    """Inbound: each connection harness accepted on the host arrives here as an fd, and is
    relayed to the service on 127.0.0.1:`port` in this namespace."""
    space = _socket.CMSG_SPACE(4)
    while True:
        data, ancillary, _, _ = channel.recvmsg(1, space)
        if not data:
            return  # harness closed its end
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                client = _socket.socket(fileno=int.from_bytes(payload[:4], sys.byteorder))
                _thread.start_new_thread(connect, (client, ("127.0.0.1", port)))


def connect(client: _socket.socket, target: str | tuple[str, int]) -> None:
    family = _socket.AF_UNIX if isinstance(target, str) else _socket.AF_INET
    upstream = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        upstream.connect(target)
    except OSError:
        client.close()
        upstream.close()
        return
    done = _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(pump, (upstream, client, done))
    pump(client, upstream, None)
    done.acquire()  # released when the other direction ends
    client.close()
    upstream.close()


def pump(source: _socket.socket, sink: _socket.socket, done: _thread.LockType | None) -> None:
    """Copy until EOF, then pass the EOF on (half-close), so request-then-response works."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    try:  # noqa: SIM105 (contextlib is one import more before every bridged command)
        sink.shutdown(_socket.SHUT_WR)
    except OSError:
        pass
    if done is not None:
        done.release()


if __name__ == "__main__":
    main(sys.argv[1:])
