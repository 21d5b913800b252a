"""OS plumbing shared by servers, loadgen and bench: one implementation of each.

The lowest module of the project (it imports nothing of ours), so any part
may use it: the descriptor-value bound of select, the UTC timestamp, the
atomic JSON writer and the check of its path before any work, raising the soft descriptor limit, and the child set-up
that dies with its parent.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import resource
import signal
import stat

FD_SETSIZE = 1024      # glibc __FD_SETSIZE: an fd_set holds descriptor *values* below this
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def utc_now(timespec: str = "seconds") -> str:
    """The current time as ISO-8601 UTC ("seconds" or "milliseconds")."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec=timespec)


def write_json(path: str | os.PathLike | None, obj) -> None:
    """Write obj as sorted, indented JSON: to stdout (path None), else atomically.

    A regular file is replaced through a temp file and a rename, so a reader
    never sees half a document; the temp file never outlives an error. A
    path that exists and is not a regular file (/dev/null, a FIFO) is
    written through: replacing it would turn /dev/null into a file (as root).
    """
    text = json.dumps(obj, sort_keys=True, indent=2, default=str) + "\n"
    if path is None:
        print(text, end="", flush=True)
        return
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "w") as f:
            f.write(text)
        return
    tmp = _temp_name(path)
    try:
        with open(tmp, "x") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names it and the fix.

    exit_code: 2 when the path names the wrong kind of thing (a directory
    where a file goes: bad usage), 1 when the system refuses the write.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _temp_name(path: str) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.tmp{os.getpid()}")


def check_output_path(path: str | os.PathLike, option: str, append: bool = False) -> None:
    """Raise OutputPathError unless write_json (or, append=True, appending) can write path.

    Call it before any work, so a result is never computed only to be lost.
    A regular file or a new one is probed the way it will be written: the
    temporary file write_json renames into place is created and removed (so
    the directory must take new files), or the file is opened for appending.
    An existing non-regular file (/dev/null, a FIFO) is written through and
    only needs write permission; a FIFO is not opened (that would block).
    """
    path = os.fspath(path)
    head = os.path.dirname(path) or "."
    above = head
    while not os.path.lexists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if os.path.exists(above) and not os.path.isdir(above):
        raise OutputPathError(f"{option} {path}: {above} is not a directory; choose a "
                              f"writable {option}")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputPathError(f"{option} {path}: {e.strerror}; choose another path") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{option} {path} is a directory: give a file name, "
                              f"e.g. {os.path.join(path, 'out.json')}", 2)
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISSOCK(st.st_mode):
            raise OutputPathError(f"{option} {path} is a socket: give a file path", 2)
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"{option} {path} is not writable: choose another path")
        return
    if not os.path.isdir(head):
        raise OutputPathError(f"{option} {path}: directory {head} does not exist; create it "
                              "first or choose another path")
    try:
        if append:
            with open(path, "a"):
                pass
            if st is None:
                os.unlink(path)
            return
        fd = os.open(_temp_name(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(_temp_name(path))
    except OSError as e:
        where = "cannot append to it" if append and st is not None else \
            f"cannot create files in {head}"
        raise OutputPathError(f"{option} {path}: {where} ({e.strerror}); choose a path in a "
                              "writable directory") from None


def package_versions(names) -> dict:
    """{distribution name: installed version or None} (importlib.metadata)."""
    from importlib import metadata
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def raise_nofile_limit(soft: int | None = None) -> dict:
    """Set the soft RLIMIT_NOFILE to `soft` (default: the hard limit); children inherit it.

    Returns {"soft", "hard"} after the change (None for unlimited). Raises
    ValueError when `soft` is above the hard limit.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if soft is None else soft
    if hard != resource.RLIM_INFINITY and want > hard:
        raise ValueError(f"{want} is above the hard descriptor limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    now_soft, now_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": _limit(now_soft), "hard": _limit(now_hard)}


def _limit(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else value


def die_with_parent(parent_pid: int) -> None:
    """In a child: SIGKILL me when the parent dies, even by SIGKILL.

    atexit and signal handlers cannot run then; without this a child waits
    forever for a signal that never comes. Call it first thing in the child
    (or as a Popen preexec_fn); exits at once if the parent is already gone.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass                            # no prctl: the caller's pipes still end us
    if os.getppid() != parent_pid:      # the parent died before prctl took effect
        os._exit(1)
