"""Phase 1 of a load-generator worker: open its connections.

Non-blocking connects, at most CONNECT_WINDOW in progress; a transient error
(or a SYN left unanswered for CONNECT_STALE_S) retries after a backoff that
doubles per attempt, up to CONNECT_ATTEMPTS; the phase ends after
CONNECT_DEADLINE_S overall or CONNECT_STALL_S without a connection completing.
Every connection that did not open is counted under one CONNECT_KINDS error.
"""

from __future__ import annotations

import errno
import heapq
import resource
import socket
from collections import deque
from time import monotonic_ns

from select import EPOLLIN, EPOLLOUT

from .spec import MAX_SOURCES, SOURCE_CONNS

CONNECT_WINDOW = 256           # connects in progress per worker
CONNECT_DEADLINE_S = 5.0       # the whole connect phase
CONNECT_STALE_S = 0.25         # a SYN dropped on a full accept queue waits 1 s: retry sooner
CONNECT_ATTEMPTS = 6           # per connection
CONNECT_STALL_S = 1.5          # no connection completed for this long: the server is not accepting
MAXEVENTS = 1024

_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)   # linux/in.h
_CONNECT_RETRY = {errno.EADDRNOTAVAIL, errno.EAGAIN, errno.ENOBUFS, errno.ETIMEDOUT,
                  errno.EINTR, errno.ENETUNREACH}

# error kinds (see run.py for units)
CONNECT_KINDS = ("refused", "addr_not_available", "connect_timeout", "no_fds", "connect_other")


def connect_error_kind(err: int) -> str:
    """The CONNECT_KINDS name for a connect errno."""
    if err == errno.ECONNREFUSED:
        return "refused"
    if err == errno.EADDRNOTAVAIL:
        return "addr_not_available"
    if err in (errno.ETIMEDOUT,):
        return "connect_timeout"
    if err in (errno.EMFILE, errno.ENFILE):
        return "no_fds"
    return "connect_other"


def backoff_ns(attempts: int) -> int:
    """Wait before the next attempt of a connection tried `attempts` times: 10 ms, doubling."""
    return 5_000_000 << min(attempts, 5)


class Conn:
    """One connection of a worker, from its first connect to its loss or the end."""

    __slots__ = ("index", "sock", "fd", "active", "rseq", "wseq", "due", "owed",
                 "rbuf", "out", "bad", "last", "attempts", "started_ns")

    def __init__(self, index: int, active: bool):
        self.index = index
        self.active = active
        self.sock = None
        self.fd = -1
        self.rseq = self.wseq = index << 40   # header of the next message to expect / write
        self.due: deque[int] = deque()        # send (closed) or intended (open) time, in flight
        self.owed: deque[int] = deque()       # open loop: intended times not written
        self.rbuf = None                      # partial echo (bytearray) or None
        self.out = None                       # unsent bytes (bytearray) or None
        self.bad = 0                          # corrupt echoes
        self.last = None                      # the last message written (K=1: the next echo)
        self.attempts = 0
        self.started_ns = 0


class RetryQueue:
    """Connections waiting to connect again, each not before its own time.

    Backoffs differ per entry (they double per attempt), so the order of
    pushes is not the order of due times: a heap keeps the earliest first.
    """

    def __init__(self):
        self._heap: list[tuple[int, int, Conn]] = []   # (not before ns, push order, conn)
        self._pushed = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, not_before_ns: int, conn: Conn) -> None:
        self._pushed += 1                     # ties keep push order; a Conn never compares
        heapq.heappush(self._heap, (not_before_ns, self._pushed, conn))

    def next_ns(self) -> int:
        """The earliest time an entry is due; the queue must not be empty."""
        return self._heap[0][0]

    def pop_due(self, now_ns: int, limit: int) -> list[Conn]:
        """At most `limit` connections due by now_ns, the earliest first."""
        due = []
        while self._heap and self._heap[0][0] <= now_ns and len(due) < limit:
            due.append(heapq.heappop(self._heap)[2])
        return due


def loopback_sources(family: int, host: str, connections: int) -> list[str]:
    """Source addresses for a 127.x IPv4 target, or [] to let the kernel choose."""
    if family != socket.AF_INET or not host.startswith("127."):
        return []
    count = min(MAX_SOURCES, -(-connections // SOURCE_CONNS))
    return [f"127.0.0.{1 + i}" for i in range(count)] if count > 1 else []


def open_connections(worker) -> None:
    """Open the worker's connections, a bounded number in progress; retry transient errors.

    Fills worker.conns (established), worker.active, worker.by_fd, the connect
    errors, retries, open_count and connect_s.
    """
    ep, by_fd, errors = worker.ep, worker.by_fd, worker.errors
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_fd.extend([None] * (min(hard, 1 << 20) + 1))
    # spread the active ones evenly over the connect order
    total, active = worker.conn_count, worker.active_count
    todo = deque(Conn(worker.base + i, (i + 1) * active // total > i * active // total)
                 for i in range(total))
    retries = RetryQueue()
    pending: dict[int, Conn] = {}              # fd -> conn, oldest first
    t0 = monotonic_ns()
    deadline = t0 + int(CONNECT_DEADLINE_S * 1e9)
    stale_ns = int(CONNECT_STALE_S * 1e9)
    family, address = worker.family, worker.address
    sock_type = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    # Past ~14,000 connections from one address to one port, connect() slows
    # from ~20 µs to ~1 ms: the kernel tries the even ephemeral ports first
    # and must scan them all before it takes an odd one (__inet_hash_connect).
    # To a 127.x target, any 127.x source works: spread the connections over
    # 127.0.0.1, .2, ... (at most SOURCE_CONNS each), the port still chosen at
    # connect() (IP_BIND_ADDRESS_NO_PORT), so each source has its own ports.
    sources = loopback_sources(family, address[0], worker.spec.connections)

    def retry(conn: Conn, err: int, now: int) -> None:
        if conn.attempts >= CONNECT_ATTEMPTS:
            errors[connect_error_kind(err)] += 1
        else:
            worker.retries += 1
            retries.push(now + backoff_ns(conn.attempts), conn)

    def close(conn: Conn) -> None:
        ep.unregister(conn.fd)
        by_fd[conn.fd] = None
        conn.sock.close()

    now = progress = t0
    stall_ns = int(CONNECT_STALL_S * 1e9)
    while (todo or retries or pending) and now < deadline and now - progress < stall_ns:
        todo.extendleft(retries.pop_due(now, CONNECT_WINDOW - len(pending)))
        while todo and len(pending) < CONNECT_WINDOW:
            conn = todo.popleft()
            conn.attempts += 1
            try:
                sock = socket.socket(family, sock_type)
            except OSError as e:
                errors[connect_error_kind(e.errno)] += 1
                continue
            try:
                if sources:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((sources[conn.index % len(sources)], 0))
                err = sock.connect_ex(address)
            except OSError as e:
                err = e.errno
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                if err in _CONNECT_RETRY:
                    retry(conn, err, now)
                else:
                    errors[connect_error_kind(err)] += 1
                continue
            conn.sock, conn.fd, conn.started_ns = sock, sock.fileno(), now
            by_fd[conn.fd] = conn
            pending[conn.fd] = conn
            ep.register(conn.fd, EPOLLOUT)
        timeout = (min(deadline, progress + stall_ns) - now) / 1e9
        if pending:
            timeout = min(timeout, max(0.0, (next(iter(pending.values())).started_ns
                                             + stale_ns - now) / 1e9))
        if retries:
            timeout = min(timeout, max(0.0, (retries.next_ns() - now) / 1e9))
        if todo and len(pending) < CONNECT_WINDOW:
            timeout = 0
        events = ep.poll(timeout, MAXEVENTS)
        now = monotonic_ns()
        for fd, _ in events:
            conn = pending.pop(fd, None)
            if conn is None:
                conn = by_fd[fd]
                if conn is not None:
                    worker.probe(conn)      # established, and already closed or written to
                continue
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                close(conn)
                if err in _CONNECT_RETRY:
                    retry(conn, err, now)
                else:
                    errors[connect_error_kind(err)] += 1
                continue
            if conn.active:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                worker.active.append(conn)
            ep.modify(fd, EPOLLIN)           # idle ones too: a server close wakes us
            worker.conns.append(conn)
            worker.open_count += 1
            progress = now
        for fd, conn in list(pending.items()):   # oldest first: a dropped SYN, start again
            if now - conn.started_ns < stale_ns:
                break
            del pending[fd]
            close(conn)
            retry(conn, errno.ETIMEDOUT, now)
    worker.connect_s = (monotonic_ns() - t0) / 1e9
    for conn in pending.values():
        close(conn)
    errors["connect_timeout"] += len(pending) + len(todo) + len(retries)
