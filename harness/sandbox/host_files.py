"""Files harness's host process writes into, or reads from, a directory a sandbox can write (a
task's scratch dir): never through a name the agent planted.

The agent can put a symlink, a FIFO or a file of its own at any name in such a directory
before harness gets there. So the directory is opened without following a link, and a file
is created only if its name is new (O_CREAT|O_EXCL does not follow a link, and fails on any
existing name: harness then takes a fresh name rather than unlinking the agent's), or read
only if it is a regular file reached without following a link. Nothing here unlinks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from harness.errors import InfrastructureError

_NO_FOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO the agent left there fails (ENXIO) instead of blocking harness.
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_ATTEMPTS = 8


def create_new(directory: Path, stem: str, suffix: str, content: str) -> Path:
    """Write `content` to a file harness creates in `directory`, named `<stem>-<random><suffix>`
    (a name the agent cannot have planted ahead), and return its path. InfrastructureError when
    the directory is itself a symlink or missing, or no fresh name could be created."""
    data = content.encode("utf-8")
    directory_fd = _open_directory(directory)
    try:
        for _ in range(_ATTEMPTS):
            name = f"{stem}-{secrets.token_hex(4)}{suffix}"
            try:
                fd = os.open(name, _CREATE, 0o644, dir_fd=directory_fd)
            except FileExistsError:
                continue  # the agent guessed it, or a link sits there: never write through it
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            return directory / name
    finally:
        os.close(directory_fd)
    raise InfrastructureError(f"could not create a fresh file {stem}-*{suffix} in {directory}")


def read_regular(path: Path, limit: int) -> bytes | None:
    """The first `limit` bytes of `path` if it is a regular file reached without following a
    link (in its last component or its directory); None otherwise, or when it is missing."""
    try:
        directory_fd = _open_directory(path.parent)
    except InfrastructureError:
        return None
    try:
        fd = os.open(path.name, _READ, dir_fd=directory_fd)
    except OSError:  # ELOOP for a symlink, ENOENT, ENXIO for a FIFO with no writer, ...
        return None
    finally:
        os.close(directory_fd)
    with contextlib.closing(_File(fd)) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return handle.read(limit)


def write_regular(path: Path, data: bytes) -> bool:
    """Write `data` as the whole of `path`, a regular file (made if missing) reached without
    following a link in its last component or its directory; False, writing nothing, when it
    is anything else (a symlink, a FIFO, a device)."""
    try:
        directory_fd = _open_directory(path.parent)
    except InfrastructureError:
        return False
    try:
        fd = os.open(path.name, _WRITE, 0o644, dir_fd=directory_fd)
    except OSError:
        return False
    finally:
        os.close(directory_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return True
    finally:
        os.close(fd)


class _File:
    """A read-only file descriptor, read up to a limit."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        left = limit
        while left > 0 and (chunk := os.read(self.fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        os.close(self.fd)


def _open_directory(directory: Path) -> int:
    try:
        return os.open(directory, _NO_FOLLOW_DIR)
    except OSError as exc:
        raise InfrastructureError(
            f"{directory} is not a directory harness can use without following a link: "
            f"{exc.strerror}"
        ) from None
