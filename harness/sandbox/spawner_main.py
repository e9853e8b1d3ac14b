"""The spawner's program (see harness.sandbox.spawner): standard library only, run as
`python -I -S spawner_main.py <control fd> <cgroup.procs>...` on the host, as harness.

It joins the sandbox's cgroups once, then forks every command harness sends it: each child
inherits the cgroups at fork, which takes only the read side of the kernel's cgroup lock,
whereas writing a pid into a v1 cgroup.procs waits for the write side (~7 ms a command).

One request is one SEQPACKET message on the control socket: a JSON object (argv, cwd, env)
with two fds, the write end of the command's output pipe and the request's reply socket. The
reply socket gets the child's pid (8 bytes; minus the errno when it could not start) at once
and its exit code (8 bytes, negative for a signal, as subprocess reports it) when it ends.
When harness closes the control socket, or dies, every command still running is killed and the
spawner exits.
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
    try:
        pid = _spawn(request["argv"], request["cwd"], request["env"], output)
    except OSError as exc:
        os.close(output)
        _send(reply, -(exc.errno or 1))  # harness raises it as the OSError it was
        reply.close()
        return True
    os.close(output)
    running[os.pidfd_open(pid)] = (pid, reply)
    _send(reply, pid)
    return True


def _spawn(argv: list[str], cwd: str, env: dict[str, str], output: int) -> int:
    """The command in a session of its own (a timeout kills its whole process group), stdin
    /dev/null, stdout and stderr to the pipe, and nothing else open: every other fd here is
    close-on-exec. posix_spawn (vfork and exec), not fork: nothing of this process is copied."""
    os.chdir(cwd)  # inherited by the child; this process is single-threaded
    return os.posix_spawn(
        argv[0],
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, output, 1),
            (os.POSIX_SPAWN_DUP2, output, 2),
        ],
        setsid=True,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # ignored by Python, as subprocess resets
    )


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _send(reply: socket.socket, value: int) -> None:
    with contextlib.suppress(OSError):  # harness stopped waiting
        reply.sendall(CODE.pack(value))


if __name__ == "__main__":
    main()
