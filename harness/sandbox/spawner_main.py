"""The spawner's program (see harness.sandbox.spawner): standard library only, run as
`python -I -S spawner_main.py <control fd> <cgroup.procs>...` on the host, as harness.

It joins the sandbox's cgroups once, then forks every command harness sends it: each child
inherits the cgroups at fork, which takes only the read side of the kernel's cgroup lock,
whereas writing a pid into a v1 cgroup.procs waits for the write side (~7 ms a command).

One request is one SEQPACKET message on the control socket: a JSON object (argv, cwd, env)
with two fds, the write end of the command's output pipe and the request's reply socket. The
reply socket gets the child's pid (8 bytes) at once and its exit code (8 bytes, negative for
a signal, as subprocess reports it) when it ends. When harness closes the control socket, or
dies, every command still running is killed and the spawner exits.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys

CODE = struct.Struct("!q")
MAX_REQUEST = 1 << 20


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    control.set_inheritable(False)  # no command may hold it: it starts commands on the host
    for procs in sys.argv[2:]:
        with open(procs, "w") as joined:
            joined.write(str(os.getpid()))
    # In the sandbox's memory cgroup, a memory bomb is what the OOM killer must pick, not this.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("-1000")
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, reply)
    while True:
        ready, _, _ = select.select([control.fileno(), *running], [], [])
        for fd in ready:
            if fd == control.fileno():
                if not _start(control, running):
                    for pid, _reply in running.values():
                        _kill(pid)
                    return
            else:
                pid, reply = running.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                _send(reply, os.waitstatus_to_exitcode(status))
                reply.close()


def _start(control: socket.socket, running: dict[int, tuple[int, socket.socket]]) -> bool:
    """Start one requested command; False once harness has gone."""
    fds = array.array("i")
    message, ancillary, _, _ = control.recvmsg(
        MAX_REQUEST, socket.CMSG_SPACE(2 * fds.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not message:
        return False
    output, reply_fd = fds
    reply = socket.socket(fileno=reply_fd)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        _exec(request["argv"], request["cwd"], request["env"], output)
    os.close(output)
    running[os.pidfd_open(pid)] = (pid, reply)
    _send(reply, pid)
    return True


def _exec(argv: list[str], cwd: str, env: dict[str, str], output: int) -> None:
    """In the child: its own session (a timeout kills its whole process group), output to the
    pipe, nothing else open, then the command."""
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(cwd)
        for number in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them
            signal.signal(number, signal.SIG_DFL)
        os.execve(argv[0], argv, env)
    except OSError as exc:
        os.write(2, f"cannot start {argv[0]}: {exc.strerror}\n".encode())
    os._exit(127)


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _send(reply: socket.socket, value: int) -> None:
    with contextlib.suppress(OSError):  # harness stopped waiting
        reply.sendall(CODE.pack(value))


if __name__ == "__main__":
    main()
