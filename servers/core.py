"""The connection core shared by every echo server: all but readiness.

A mechanism module owns one thing, its wait loop and the bookkeeping of what
the kernel is watching. Everything else lives here, once, so the four servers
differ only in how they learn that a descriptor is ready:

    loop                                    core (this module)
    ----                                    ------------------
    wait for readiness  ---- fd, r, w --->  Server.on_ready: accept / recv /
    apply interest changes <- changes ----  echo / back-pressure / close
    unregister, then      -- fd ------->    Server.close(fd) -> more changes

Interest changes are (fd, want) pairs. `want` is a bit mask of READ and WRITE
(0 keeps the fd registered but asks for nothing), or CLOSED: drop the fd from
the interest set, then call `server.close(fd)`; the loop must forget the fd
before it is closed, because the kernel hands the same number to the next
accept.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket
import time

READ, WRITE = 1, 2   # interest bits; each loop maps them to its own flags
CLOSED = -1          # drop fd from your interest set, then call server.close(fd)

BUFSIZE = 65536              # one recv size for every mechanism
HIGH_WATER = 256 * 1024      # unsent bytes above which a connection stops being read
BACKLOG = 4096               # capped by net.core.somaxconn
NO_CHANGE: tuple = ()        # shared empty result: the common case allocates nothing

_RESET = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT)
_NO_FDS = (errno.EMFILE, errno.ENFILE)
FORMAT = 1


class Conn:
    """One accepted connection: its socket and the bytes the kernel did not take."""

    __slots__ = ("sock", "out", "reading", "eof")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.out = bytearray()   # unsent echo, in order
        self.reading = True      # False above HIGH_WATER until drained
        self.eof = False         # peer half-closed: flush, then close


class Stats:
    """Counters written as JSON at shutdown (see DESIGN.md, Formats).

    Histograms use log2 buckets keyed by their exclusive upper bound: a wait of
    700 ns lands in "1024", a call that returned 3 events in "4", 0 events in "1".
    Every accept() that succeeded is in `accepted`; each such connection ends in
    exactly one of `rejected_fd_setsize` or a `closed` reason, so
    accepted == rejected_fd_setsize + sum(closed.values()). Every byte received
    is echoed, dropped (its connection reset or failed before the echo went
    out) or still buffered: bytes_in == bytes_out + bytes_dropped + bytes_buffered.

    The loops record each wait call inline, not through a method (the call
    cost more than the recording; python -m servers.instrument_bench): they
    add to wait_ns_total, wait_hist[bit_length(ns)] and events_hist[events].
    The events table is exact, so wait_calls, events_total and the log2
    events histogram are derived from it when the statistics are written.
    """

    def __init__(self, mechanism: str):
        self.mechanism = mechanism
        self.wait_ns_total = 0
        self.wait_hist = [0] * 64                               # index = bit_length(ns)
        self.events_hist = [0] * (_max_events_per_call() + 1)   # index = events returned
        self.accepted = 0
        self.rejected_fd_setsize = 0
        self.accept_paused = 0
        self.closed = {"peer": 0, "reset": 0, "error": 0, "shutdown": 0}
        self.bytes_in = 0
        self.bytes_out = 0
        self.bytes_dropped = 0         # received, never echoed: the connection reset or failed
        self.bytes_buffered = 0        # received, not yet echoed, at the time of the dict
        self.peak_registered = 0
        self.extra: dict[str, int] = {}   # a loop's own counters (epoll-toggle: ctl_calls)

    def to_dict(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "format": FORMAT,
            "mechanism": self.mechanism,
            "wait_calls": sum(self.events_hist),
            "wait_ns_total": self.wait_ns_total,
            "wait_ns_hist": _log2_buckets(self.wait_hist),
            "events_total": sum(n * calls for n, calls in enumerate(self.events_hist) if calls),
            "events_per_call_hist": _log2_buckets(_by_bit_length(self.events_hist)),
            "accepted": self.accepted,
            "rejected_fd_setsize": self.rejected_fd_setsize,
            "accept_paused": self.accept_paused,
            "closed": dict(self.closed),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bytes_dropped": self.bytes_dropped,
            "bytes_buffered": self.bytes_buffered,
            "peak_registered": self.peak_registered,
            "cpu_user_s": ru.ru_utime,
            "cpu_sys_s": ru.ru_stime,
            "peak_rss_bytes": _peak_rss_bytes(ru),
            # every thread's, the exited ones' included (kernel/sys.c getrusage);
            # /proc/<pid>/status counts the main thread alone
            "ctx_voluntary": ru.ru_nvcsw,
            "ctx_involuntary": ru.ru_nivcsw,
            **self.extra,
        }


try:   # kept open: read even while the process is out of descriptors (EMFILE)
    _STATUS_FD = os.open("/proc/self/status", os.O_RDONLY)
except OSError:
    _STATUS_FD = -1


def _peak_rss_bytes(ru) -> int:
    """VmHWM of this process image. Not ru_maxrss: after exec it still carries
    the high-water mark of the parent that forked us (Linux exec_mmap)."""
    try:
        for line in os.pread(_STATUS_FD, 1 << 16, 0).decode().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return ru.ru_maxrss * 1024


def _log2_buckets(counts: list[int]) -> dict[str, int]:
    return {str(1 << i): n for i, n in enumerate(counts) if n}


def _by_bit_length(counts: list[int]) -> list[int]:
    """Counts indexed by value, summed into counts indexed by the value's bit_length."""
    buckets = [0] * 64
    for value, n in enumerate(counts):
        if n:
            buckets[value.bit_length()] += n
    return buckets


def _max_events_per_call() -> int:
    """The most ready entries one wait call can report: each descriptor once per direction."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return 2 * min(soft, 1 << 20)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), shared by every server and reference."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class Server:
    """A non-blocking listener, its connections and the statistics.

    `fd_limit` refuses accepted descriptors at or above it (select: FD_SETSIZE).
    `edge=True` serves an edge-triggered loop: every read goes until the queue
    is empty, and an accept paused on EMFILE is retried at once on resume,
    because no new edge will announce connections already in the backlog.
    Signals (SIGTERM, SIGINT) arrive as bytes on `wakeup_fd` and clear `running`.
    """

    def __init__(self, mechanism: str, host: str = "127.0.0.1", port: int = 0, *,
                 fd_limit: int | None = None, edge: bool = False,
                 snapshots: str | None = None):
        self.stats = Stats(mechanism)
        self.fd_limit = fd_limit
        self.edge = edge
        self.running = True
        self.conns: dict[int, Conn] = {}     # fd -> Conn
        self._accept_paused = False

        self.listener = listen(host, port)
        self.listener.setblocking(False)
        self.listen_fd = self.listener.fileno()
        self.address = self.listener.getsockname()[:2]

        # signal.set_wakeup_fd: the C handler writes the signal number here, so
        # no wait call needs a timeout to notice SIGTERM (PEP 475 retries EINTR).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.wakeup_fd = self._wake_r.fileno()
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # Opened now, not per signal: a server out of descriptors (EMFILE) must
        # still answer the load generator's SIGUSR1, which it always handles
        # (without --snapshots it ignores it instead of dying of the default action).
        self._snap_file = open(snapshots, "a", buffering=1) if snapshots else None
        signal.signal(signal.SIGUSR1, self._on_snapshot)

    def _on_signal(self, signum, frame) -> None:
        self.running = False

    def _on_snapshot(self, signum, frame) -> None:
        """SIGUSR1: append the counters so far, stamped with CLOCK_MONOTONIC.

        The load generator signals at the start and end of its measured
        window, so a window's wait calls and CPU are the difference of two lines.
        """
        if self._snap_file is not None:
            self.stats.bytes_buffered = sum(len(c.out) for c in self.conns.values())
            append_snapshot(self._snap_file, self.stats.to_dict())

    # -- the contract every loop calls -------------------------------------

    def on_ready(self, fd: int, readable: bool, writable: bool):
        """Do the I/O the kernel reported on fd; return interest changes in order.

        (new_fd, READ) per accepted connection; (fd, READ | WRITE) while bytes are
        unsent; (fd, WRITE) above the high-water mark; (listen_fd, 0) while accept
        is paused on EMFILE; (fd, CLOSED) when done. EAGAIN is not an error:
        spurious readiness is allowed.
        """
        conn = self.conns.get(fd)
        if conn is None:
            return self._on_own_fd(fd)
        if conn.out or not conn.reading:
            return self._on_backlogged(fd, conn, readable, writable)
        # Steady state, the hot path: nothing unsent, reading; the kernel watches READ.
        if readable and not self._read(conn):
            return ((fd, CLOSED),)
        if conn.out or not conn.reading:            # the echo fell short, or EOF
            return self._want(fd, conn)
        return NO_CHANGE

    def _on_backlogged(self, fd: int, conn: Conn, readable, writable):
        """A connection with unsent bytes, paused reading or a half-close."""
        if writable and conn.out:
            if not self._flush(conn):
                return ((fd, CLOSED),)
            if not conn.out:
                if conn.eof:
                    self.stats.closed["peer"] += 1  # half-close: flushed, now close
                    return ((fd, CLOSED),)
                conn.reading = True                 # drained: resume reading
        if readable and conn.reading and not self._read(conn):
            return ((fd, CLOSED),)
        return self._want(fd, conn)

    def _want(self, fd: int, conn: Conn):
        """The mask this connection needs; the loop skips it if the kernel has it."""
        if self.edge:
            return NO_CHANGE                        # registered once for both directions
        return ((fd, (READ if conn.reading else 0) | (WRITE if conn.out else 0)),)

    def _on_own_fd(self, fd: int):
        if fd == self.listen_fd:
            return self._accept()
        if fd == self.wakeup_fd:
            self._drain_wakeup()
        return NO_CHANGE

    def close(self, fd: int):
        """Close a connection the loop has already forgotten; return follow-up changes.

        Called once per (fd, CLOSED). A descriptor is now free, so if accept was
        paused on EMFILE it resumes: a level-triggered loop re-arms the listener,
        an edge-triggered one accepts at once.
        """
        conn = self.conns.pop(fd)
        conn.sock.close()
        self.stats.bytes_dropped += len(conn.out)   # unsent when a reset or error closed it
        if not self._accept_paused:
            return NO_CHANGE
        self._accept_paused = False
        if self.edge:
            return self._accept()
        return ((self.listen_fd, READ),)

    def shutdown(self) -> dict:
        """Close everything still open (counted as `shutdown`) and return the stats."""
        self.stats.bytes_buffered = sum(len(c.out) for c in self.conns.values())
        for conn in self.conns.values():
            conn.sock.close()
            self.stats.closed["shutdown"] += 1
        self.conns.clear()
        signal.set_wakeup_fd(-1)
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()
        stats = self.stats.to_dict()
        if self._snap_file is not None:
            self._snap_file.close()
        return stats

    # -- the I/O itself ------------------------------------------------------

    def _accept(self):
        changes = []
        stats = self.stats
        while True:                                 # accept until EAGAIN
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return changes
            except OSError as e:
                if e.errno in _NO_FDS:
                    # never spin on EMFILE: stop watching the listener until a close
                    stats.accept_paused += 1
                    self._accept_paused = True
                    if not self.edge:
                        changes.append((self.listen_fd, 0))
                    return changes
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue                        # the peer gave up in the backlog
                raise
            stats.accepted += 1
            fd = sock.fileno()
            if self.fd_limit is not None and fd >= self.fd_limit:
                sock.close()                        # select cannot watch fd >= FD_SETSIZE
                stats.rejected_fd_setsize += 1
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[fd] = Conn(sock)
            if len(self.conns) + 2 > stats.peak_registered:
                stats.peak_registered = len(self.conns) + 2   # + listener + wakeup
            changes.append((fd, READ))

    def _read(self, conn: Conn) -> bool:
        """recv and echo; False when the connection must close."""
        sock = conn.sock
        stats = self.stats
        while True:
            try:
                data = sock.recv(BUFSIZE)
            except BlockingIOError:
                return True
            except OSError as e:
                return self._failed(e)
            if not data:                            # peer closed its side (FIN)
                conn.eof = True
                conn.reading = False
                if conn.out:
                    return True                     # half-close: flush first
                stats.closed["peer"] += 1
                return False
            stats.bytes_in += len(data)
            if conn.out:
                conn.out += data                    # keep order behind what is unsent
            else:
                try:
                    n = sock.send(data)             # echo at once
                except BlockingIOError:
                    n = 0
                except OSError as e:
                    stats.bytes_dropped += len(data)
                    return self._failed(e)
                stats.bytes_out += n
                if n < len(data):
                    conn.out += memoryview(data)[n:]   # buffer only what the kernel refused
            if conn.out and len(conn.out) > HIGH_WATER:
                conn.reading = False                # back-pressure: stop reading until drained
                return True
            # Level-triggered: one recv per readiness. Edge-triggered: until EAGAIN;
            # a short read is not enough, a FIN queued behind it raises no new edge.
            if not self.edge:
                return True

    def _flush(self, conn: Conn) -> bool:
        """Send what is pending; False when the connection must close."""
        try:
            n = conn.sock.send(conn.out)
        except BlockingIOError:
            return True
        except OSError as e:
            return self._failed(e)
        self.stats.bytes_out += n
        del conn.out[:n]
        return True

    def _failed(self, e: OSError) -> bool:
        if e.errno in _RESET:
            self.stats.closed["reset"] += 1         # ECONNRESET / EPIPE close quietly
        else:
            self.stats.closed["error"] += 1
        return False

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass


def append_snapshot(f, stats: dict) -> None:
    """One SIGUSR1 snapshot line: the counters so far, stamped with CLOCK_MONOTONIC."""
    f.write(json.dumps({**stats, "monotonic_s": time.monotonic()}, sort_keys=True) + "\n")
