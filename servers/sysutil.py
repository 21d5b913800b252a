"""OS plumbing shared by servers, loadgen and bench: one implementation of each.

The lowest module of the project (it imports nothing of ours), so any part
may use it: the descriptor-value bound of select, the UTC timestamp, the
atomic JSON writer, raising the soft descriptor limit, and the child set-up
that dies with its parent.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import resource
import signal

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
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
