"""The processes of an ``ipc://`` layer: who is alive, told by a lock only the kernel holds.

Each process holds an exclusive ``flock`` on its own ``<token>.lock`` file for as long as it
lives, and listens on ``<token>.sock``. The kernel releases the lock when the process ends,
however it ends (``kill -9`` included), so any other process can tell a dead one by taking
its lock: no heartbeat to miss, no lock left held by the dead. A lock file appears under its
final name only once it is locked (it is created under a temporary name, locked, then
renamed), so a process being born is never mistaken for a dead one.

``registry.lock`` is held, briefly, while a process joins: the first process to join a
directory where nobody lives wipes what dead processes left (a restart starts clean).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from kanal.layers.ipc._paths import make_private

__all__ = [
    "Registration",
    "dead_tokens",
    "is_alive",
    "is_token",
    "joining",
    "live_tokens",
    "lock_path",
    "remove_files",
    "socket_path",
]

_TOKEN_RE = re.compile(r"^[0-9a-f]{12}\Z")


def is_token(text: str) -> bool:
    """True if ``text`` has the shape of a process token (12 hex digits)."""
    return _TOKEN_RE.match(text) is not None


def socket_path(directory: Path, token: str) -> Path:
    """Where process ``token`` listens."""
    return directory / f"{token}.sock"


def lock_path(directory: Path, token: str) -> Path:
    """The file process ``token`` holds locked while it lives."""
    return directory / f"{token}.lock"


class Registration:
    """This process's place in the directory: its token and the lock it holds while alive."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.token = secrets.token_hex(6)
        self.pid = os.getpid()
        temporary = directory / f".{self.token}.new"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{self.pid}\n".encode())
            os.rename(temporary, lock_path(directory, self.token))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._fd: int | None = fd

    @property
    def socket(self) -> Path:
        """Where this process listens."""
        return socket_path(self.directory, self.token)

    def release(self) -> None:
        """Leave: remove this process's files and let go of its lock (idempotent)."""
        if self._fd is None:
            return
        if os.getpid() == self.pid:
            remove_files(self.directory, self.token)
        # In a forked child the descriptor is a copy: closing it leaves the parent's lock.
        os.close(self._fd)
        self._fd = None


def is_alive(directory: Path, token: str) -> bool:
    """True while process ``token`` holds its lock (False once its lock file is gone)."""
    try:
        fd = os.open(lock_path(directory, token), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the shared lock we may have taken
    return False


def dead_tokens(directory: Path) -> list[str]:
    """The tokens of processes whose lock file is there but whose lock nobody holds."""
    dead = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            token = name[:-5]
            if name.endswith(".lock") and is_token(token) and not is_alive(directory, token):
                dead.append(token)
    return dead


def live_tokens(directory: Path) -> list[str]:
    """The tokens of processes that hold their lock now."""
    live = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(".lock") and is_token(name[:-5]) and is_alive(directory, name[:-5]):
                live.append(name[:-5])
    return live


def remove_files(directory: Path, token: str) -> None:
    """Remove the socket and lock file of process ``token`` (dead, or leaving)."""
    for path in (socket_path(directory, token), lock_path(directory, token)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def joining(directory: Path) -> Iterator[None]:
    """Hold ``registry.lock`` while a process joins (released by the kernel if it dies)."""
    path = directory / "registry.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    make_private(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
