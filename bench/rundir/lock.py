"""One writer per run directory: an exclusive flock held for the writer's whole life.

The kernel drops an flock when its holder dies, however it dies (SIGKILL,
power loss aside), so a run left "running" by a killed orchestrator has a
free lock and may be resumed; a live one keeps it, and a second writer is
refused at once. The lock file holds the holder's pid, for the error message
only: the lock, not the pid, decides. The holder unlinks the file before it
lets go, so a finished run keeps no trace of it; a writer that locked a file
already unlinked sees that its inode is no longer the path's and tries again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """Another process writes this run directory (exit 1)."""


class RunLock:
    """fcntl.flock(LOCK_EX | LOCK_NB) on RUN_DIR/.lock; release() or process exit frees it."""

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise LockedError naming the holder; OSError if unwritable."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, self.path):
                    break
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise LockedError(f"{self.path.parent} is being written by {who} (lock "
                                  f"{self.path}): wait for it to end, or stop it first") from None
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)                # locked a file its holder had just unlinked
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)    # still ours: nobody else can hold it now
            except OSError:
                pass
            os.close(self.fd)           # closing the only descriptor frees the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: Path | str) -> int | None:
    """The pid holding run_dir's lock, or None when it is free (nothing is created)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _read_pid(fd) or -1
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
