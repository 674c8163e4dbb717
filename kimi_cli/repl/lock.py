"""Advisory locks that keep one `kimi chat` per saved conversation.

A chat holds `sessions/.NAME.lock` (an exclusive `flock`) for as long as it has the conversation
open; the kernel drops the lock when the process ends, however it ends (`kill -9` included), so a
stale lock cannot exist. The file keeps the holder's pid, for the message that refuses a second
chat. Where `fcntl` is missing (Windows) there is no locking.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class Busy(Exception):
    """Another process holds the lock; `pid` is its process id when the lock file says it."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(pid)
        self.pid = pid


class FileLock:
    """An exclusive lock on one file, taken at once or not at all; `release` is idempotent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        for _ in range(10):
            fd = _open(path)
            if fcntl is None:
                self._fd = fd
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise Busy(pid) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the new one
        else:
            raise Busy(None)
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self, remove: bool = False) -> None:
        """Let go of the lock (closing the file drops it); `remove` deletes the file first."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(fd)


def _open(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags, 0o600)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return None
