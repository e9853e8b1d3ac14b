"""The in-sandbox entry point of a bridged command: harness's relay, then the seccomp filter, then
the command. Standard library only, and never imported by harness: its source is handed to
harness's own interpreter (bound read-only) as `python -I -S -c <source> DIR PORTS FD COMMAND`.

1. Listens on 127.0.0.1:PORT in the sandbox's own network namespace for each port in PORTS,
   before anything of the command runs, so the ports are harness's.
2. Forks the relay (twice, so bubblewrap's init is its parent and it dies with the sandbox):
   each connection to 127.0.0.1:PORT is relayed to the unix socket DIR/PORT, where harness's
   host-side bridge (harness/sandbox/bridge.py) relays it on to the one endpoint it allows.
   The relay makes itself non-dumpable, so the command cannot write into its memory through
   /proc/PID/mem (ptrace itself is refused by the filter).
3. Loads the seccomp filter from fd FD itself (bubblewrap's `--seccomp` would load it before
   this script ran, and the filter refuses the AF_UNIX sockets the relay needs), then execs
   `/bin/sh -c COMMAND`: the command and all it starts run under the filter as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
import threading

PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
CHUNK = 1 << 16


class SockFprog(ctypes.Structure):
    """struct sock_fprog: the length in instructions (8 bytes each) and the program."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def main(argv: list[str]) -> None:
    bridge_dir, ports, bpf_fd, command = argv
    listeners = []
    for port in (int(p) for p in ports.split(",") if p):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listeners.append((port, listener))
    program = b""
    if bpf_fd != "-":
        with os.fdopen(int(bpf_fd), "rb") as bpf:
            program = bpf.read()
    if os.fork() == 0:
        if os.fork() == 0:
            relay(bridge_dir, listeners)
        os._exit(0)
    os.wait()
    for _, listener in listeners:
        listener.close()
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


def relay(bridge_dir: str, listeners: list[tuple[int, socket.socket]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # The command's output pipe must not be held open by the relay.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    threads = [
        threading.Thread(target=accept, args=(listener, f"{bridge_dir}/{port}"))
        for port, listener in listeners
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os._exit(0)


def accept(listener: socket.socket, target: str) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=connect, args=(client, target), daemon=True).start()


def connect(client: socket.socket, target: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(target)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on (half-close), so request-then-response works."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


if __name__ == "__main__":
    main(sys.argv[1:])
