"""The child side of the kernel probes: each probe_cN runs alone in a fresh interpreter.

bench.tasks.probes runs them (bench.tasks.child.run_in_child) and reads
their outcomes; a probe this machine cannot run raises NotTested.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import resource
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import termios
import time
from pathlib import Path

from servers.sysutil import FD_SETSIZE, raise_nofile_limit

C1_FD = 2000                 # a single socket moved here: far above FD_SETSIZE
C4_PAIRS = 600               # 1200 pollfd entries, values past 1024
C5_CHUNK = b"x" * 100
C6_PAIRS = 5000              # 10,000 registered descriptors


class NotTested(Exception):
    """This machine cannot run the probe; the message is the reason."""


# ------------------------------------------------------------------ C1

def probe_c1() -> dict:
    """Child: select on descriptor 2000 with only a few descriptors open."""
    limits = raise_nofile_limit()
    if limits["soft"] <= C1_FD:
        raise NotTested(f"RLIMIT_NOFILE soft {limits['soft']} (hard {limits['hard']}) "
                        f"cannot hold descriptor {C1_FD}")
    a, b = socket.socketpair()
    b.send(b"x")                           # a is readable from now on
    low = a.fileno()
    low_ready = select.select([low], [], [], 0)[0]
    os.dup2(low, C1_FD)                    # same socket, descriptor value 2000
    open_fds = _open_fds()
    try:
        ready = select.select([C1_FD], [], [], 0)[0]
        high = {"exception": None, "ready": ready}
    except Exception as e:
        high = {"exception": type(e).__name__, "message": str(e)}
    return {"fd_setsize": FD_SETSIZE, "rlimit_nofile": limits,
            "open_descriptors": len(open_fds), "open_fd_values": open_fds,
            "low_fd": low, "low_fd_ready": low_ready == [low],
            "high_fd": C1_FD, "high_fd_select": high,
            "kernel_select_high_fd": _raw_select(C1_FD)}


def _raw_select(fd: int) -> dict:
    # select(2) through libc with a bitmap sized for fd: the kernel takes any
    # nfds up to its descriptor table (fs/select.c core_sys_select, FDS_BYTES)
    libc = ctypes.CDLL(None, use_errno=True)
    word_bits = ctypes.sizeof(ctypes.c_ulong) * 8
    bits = (ctypes.c_ulong * (fd // word_bits + 1))()
    bits[fd // word_bits] = 1 << (fd % word_bits)

    class Timeval(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]

    tv = Timeval(0, 0)
    n = libc.select(fd + 1, ctypes.byref(bits), None, None, ctypes.byref(tv))
    err = ctypes.get_errno() if n < 0 else 0
    return {"nfds": fd + 1, "bitmap_bytes": ctypes.sizeof(bits), "returned": n,
            "errno": errno.errorcode.get(err) if err else None,
            "fd_reported_ready": bool(bits[fd // word_bits] >> (fd % word_bits) & 1)}


# ------------------------------------------------------------------ C9

C9_SOURCE = r"""#include <stdio.h>
#include <sys/select.h>
int main(void) {
    printf("%zu %d %d %zu\n", sizeof(fd_set), FD_SETSIZE, __FD_SETSIZE, sizeof(__fd_mask));
    return 0;
}
"""
C9_SEARCH_TOP = 1 << 16      # highest descriptor value either search tries


def probe_c9() -> dict:
    """Child: word size, where CPython's select refuses a descriptor, the C library's fd_set."""
    limits = raise_nofile_limit()
    ptr_bits = struct.calcsize("P") * 8
    a, b = socket.socketpair()
    top = min((limits["soft"] or C9_SEARCH_TOP) - 1, C9_SEARCH_TOP)
    start = max(_open_fds()) + 1           # dup2 onto a free number only: never over an open one
    refused = _lowest(lambda fd: _select_refuses(a.fileno(), fd), start, top)
    msg = None
    if refused is not None:
        try:
            _select_refuses(a.fileno(), refused, raise_it=True)
        except ValueError as e:
            msg = str(e)
    a.close()
    b.close()
    return {"machine": platform.machine(), "architecture": platform.architecture()[0],
            "pointer_bits": ptr_bits, "long_bits": ctypes.sizeof(ctypes.c_long) * 8,
            "int_bits": ctypes.sizeof(ctypes.c_int) * 8, "claimed_fd_setsize": 32 * ptr_bits,
            "rlimit_nofile": limits,
            "cpython_select": {"lowest_refused": refused, "searched": [start, top], "message": msg},
            "fd_set_compiled": _compiled_fd_set(), "fd_set_fdelt_chk": _fdelt_chk_bound()}


def _lowest(refuses, lo: int, hi: int) -> int | None:
    """The lowest value in [lo, hi] that `refuses`, by bisection (refusal is monotonic)."""
    if not refuses(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if refuses(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _select_refuses(src: int, fd: int, raise_it: bool = False) -> bool:
    os.dup2(src, fd)                       # the same socket at descriptor value fd
    try:
        select.select([fd], [], [], 0)
        return False
    except ValueError:
        if raise_it:
            raise
        return True
    finally:
        os.close(fd)


def _compiled_fd_set() -> dict:
    # sizeof(fd_set) and FD_SETSIZE as the C library's headers define them
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return {"unavailable": "no C compiler (cc) on PATH"}
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "fdset.c", Path(tmp) / "fdset"
        src.write_text(C9_SOURCE)
        try:
            subprocess.run([cc, str(src), "-o", str(exe)], check=True, capture_output=True, timeout=60)
            out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as e:
            return {"unavailable": f"{cc} failed: {type(e).__name__}"}
    size, setsize, internal, mask = (int(x) for x in out.stdout.split())
    return {"compiler": cc, "sizeof_fd_set": size, "FD_SETSIZE": setsize, "__FD_SETSIZE": internal,
            "sizeof_fd_mask": mask}


def _fdelt_chk_bound() -> dict:
    # glibc's own bound check behind FD_SET with _FORTIFY_SOURCE: __fdelt_chk(d)
    # returns d / __NFDBITS, and aborts for d >= FD_SETSIZE (debug/fdelt_chk.c)
    libc = ctypes.CDLL(None)
    fn = getattr(libc, "__fdelt_chk", None)
    if fn is None:
        return {"unavailable": "the C library has no __fdelt_chk (not glibc)"}
    fn.argtypes, fn.restype = [ctypes.c_long], ctypes.c_long
    refused = _lowest(lambda d: _aborts(fn, d), 0, C9_SEARCH_TOP)
    if refused is None:
        return {"unavailable": f"__fdelt_chk accepted every descriptor up to {C9_SEARCH_TOP}"}
    words = fn(refused - 1) + 1            # bit refused-1 is in word refused/NFDBITS - 1
    return {"lowest_refused": refused, "words": words, "bits_per_word": refused // words,
            "fd_set_bytes": refused // 8}


def _aborts(fn, d: int) -> bool:
    pid = os.fork()
    if pid == 0:                           # the child may abort: no core, no message
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.environ["LIBC_FATAL_STDERR_"] = "1"
            fn(d)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


# ------------------------------------------------------------------ C4

def probe_c4() -> dict:
    """Child: poll past 1024 descriptors, then with more entries than RLIMIT_NOFILE."""
    limits = raise_nofile_limit()
    if limits["soft"] < 2 * C4_PAIRS + 64:
        raise NotTested(f"RLIMIT_NOFILE soft {limits['soft']} (hard {limits['hard']}) "
                        f"< {2 * C4_PAIRS + 64} needed")
    pairs = [socket.socketpair() for _ in range(C4_PAIRS)]
    poller = select.poll()
    fds = []
    for a, b in pairs:
        for s in (a, b):
            poller.register(s, select.POLLIN)
            fds.append(s.fileno())
    peer = {a.fileno(): b for a, b in pairs} | {b.fileno(): a for a, b in pairs}
    top = max(fds)
    peer[top].send(b"x")                   # only the highest descriptor is readable
    ready = poller.poll(0)
    nfds = len(fds)

    def poll_with_soft(soft: int) -> dict:
        # the open descriptors stay open; only poll's nfds check sees the new limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, limits["hard"]))
        try:
            got = poller.poll(0)
            return {"soft": soft, "result": "ok", "ready": len(got)}
        except OSError as e:
            return {"soft": soft, "result": "error", "errno": errno.errorcode.get(e.errno),
                    "errno_code": e.errno, "message": e.strerror}
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits["soft"], limits["hard"]))

    at_limit, over_limit = poll_with_soft(nfds), poll_with_soft(nfds - 1)
    return {"rlimit_nofile": limits, "nfds": nfds, "highest_fd": top,
            "over_1024": {"ready": ready, "highest_fd_reported": ready == [(top, select.POLLIN)]},
            "nfds_equal_to_soft_limit": at_limit, "nfds_above_soft_limit": over_limit,
            "after_restoring_limit": poll_with_soft(limits["soft"])}


# ------------------------------------------------------------------ C5

_C5_MODES = {"level": select.EPOLLIN, "edge": select.EPOLLIN | select.EPOLLET,
             "oneshot": select.EPOLLIN | select.EPOLLONESHOT}


def probe_c5() -> dict:
    """Child: two writes to a TCP socket, no read; count epoll events per mode."""
    listener = socket.create_server(("127.0.0.1", 0))
    out = {"address": "%s:%d" % listener.getsockname(), "chunk_bytes": len(C5_CHUNK),
           "calls_per_write": 2, "modes": {}}
    for mode, mask in _C5_MODES.items():
        client = socket.create_connection(listener.getsockname(), timeout=5)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # one segment per write
        conn, _ = listener.accept()
        ep = select.epoll()
        ep.register(conn, mask)
        per_write, queued = [], []
        for i in (1, 2):
            client.sendall(C5_CHUNK)
            queued.append(_wait_queued(conn, i * len(C5_CHUNK)))
            # first call may wait briefly for the wake-up callback; the second never waits
            per_write.append([len(ep.poll(0.5)), len(ep.poll(0))])
        entry = {"mask": mask, "events_per_call": per_write, "queued_bytes": queued,
                 "events_total": sum(map(sum, per_write)),
                 "writes_with_an_event": sum(1 for calls in per_write if calls[0])}
        if mode == "oneshot":
            ep.modify(conn, mask)          # re-arm: the queued data is reported again
            entry["events_after_rearm"] = len(ep.poll(0.5))
        out["modes"][mode] = entry
        for s in (ep, conn, client):
            s.close()
    listener.close()
    return out


def _wait_queued(sock: socket.socket, n: int, timeout_s: float = 5.0) -> int:
    # bytes in the receive queue (FIONREAD): proof the write arrived and nothing was read
    deadline = time.monotonic() + timeout_s
    while True:
        have = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        if have >= n or time.monotonic() > deadline:
            return have
        time.sleep(0.001)


# ------------------------------------------------------------------ C6

def probe_c6() -> dict:
    """Child: /proc/self/maps around creating an epoll set and registering 10,000 fds."""
    limits = raise_nofile_limit()
    if limits["soft"] < 2 * C6_PAIRS + 64:
        raise NotTested(f"RLIMIT_NOFILE soft {limits['soft']} (hard {limits['hard']}) "
                        f"< {2 * C6_PAIRS + 64} needed for {2 * C6_PAIRS} descriptors")
    pairs = [socket.socketpair() for _ in range(C6_PAIRS)]
    fds = [s.fileno() for pair in pairs for s in pair]
    before = _read_maps()
    control = _read_maps()                 # nothing done: what reading maps itself changes
    ep = select.epoll()
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    after = _read_maps()
    epfd = ep.fileno()
    fdinfo = Path(f"/proc/self/fdinfo/{epfd}").read_text()
    try:
        mmap.mmap(epfd, mmap.PAGESIZE, prot=mmap.PROT_READ)
        mapped = {"result": "ok"}
    except OSError as e:
        mapped = {"result": "error", "errno": errno.errorcode.get(e.errno), "message": e.strerror}
    new = [m for k, m in after.items() if k not in before]
    return {"rlimit_nofile": limits, "registered": len(fds),
            "maps_before": _maps_totals(before), "maps_control": _maps_totals(control),
            "maps_after": _maps_totals(after),
            "new_mappings": new[:20], "new_mapping_count": len(new),
            "removed_mapping_count": sum(1 for k in before if k not in after),
            "eventpoll_mappings_before": [m for m in before.values() if "eventpoll" in m["path"]],
            "eventpoll_mappings_after": [m for m in after.values() if "eventpoll" in m["path"]],
            "epoll_fd": epfd, "epoll_fd_link": os.readlink(f"/proc/self/fd/{epfd}"),
            "fdinfo_watches": sum(1 for line in fdinfo.splitlines() if line.startswith("tfd:")),
            "mmap_epoll_fd": mapped}


def _read_maps() -> dict:
    maps = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(None, 5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        path = fields[5].strip() if len(fields) > 5 else ""
        maps[(fields[0], fields[1], path)] = {"range": fields[0], "perms": fields[1],
                                              "path": path, "bytes": end - start}
    return maps


def _maps_totals(maps: dict) -> dict:
    return {"count": len(maps), "bytes": sum(m["bytes"] for m in maps.values())}


def _open_fds() -> list[int]:
    names = os.listdir("/proc/self/fd")    # its own directory descriptor is listed, then closed
    return sorted(int(n) for n in names if _is_open(int(n)))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
