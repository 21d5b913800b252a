"""One load-generator process: its share of connections and its own epoll loop.

The parent forks P of these. Each one:

1. opens its connections (non-blocking connect, at most CONNECT_WINDOW in
   progress, retries on transient errors, CONNECT_DEADLINE_S overall and
   CONNECT_STALL_S without any progress) and sends ("connected", {...});
2. waits for ("go", t0_ns), t0 on CLOCK_MONOTONIC, shared by all workers;
3. runs warmup [t0, t0+W), window [t0+W, t0+W+D) and a drain of at most
   DRAIN_S in which nothing new is sent and in-flight echoes come back;
4. checks its idle connections are still open and sends ("result", {...}).

EOF on the control pipe means the parent is gone and the worker exits at
once; PR_SET_PDEATHSIG covers a parent killed by SIGKILL.

Framing: every message is S bytes: an 8-byte little-endian header, the
connection index << 40 | sequence number, then a fixed pattern. Echoes come
back in order on each connection, so the next expected message is known:
verification is one bytes comparison against that message: with one
message in flight (K=1) the one last written, else rebuilt by struct.pack.

The hot path (`_loop`, one readable connection) is written for its cost:
raw os.read/os.write on the descriptor (about 0.12 µs less per message
than socket.recv/send, measured here), a read no larger than what can be
in flight (a 64 KiB read allocates 64 KiB), one monotonic clock read, one
compare (K=1: against the message last written, saving a struct.pack),
one deque pop and push, one array append of the latency
in ns (about 0.04 µs, against 0.06 µs for a dict of µs buckets and 0.8 µs
for HdrHistogram.record_value) and, in closed loop, one pack and one write.
Counters live in local variables; partial reads and writes, errors and the
open-loop schedule live in methods that count on `self`. One loop pass
handles housekeeping (phases, 100 ms timeline ticks, the open-loop
schedule) only when its next deadline has passed.

Open loop: one schedule per worker (fixed or exponential inter-arrival
times) hands sends round-robin to its active connections. A connection
holds at most K (--pipeline) written, unanswered messages; a send due
while it is full waits in `owed` with its intended time, so latency still
counts from when it should have gone (no coordinated omission).
"""

from __future__ import annotations

import errno
import os
import random
import resource
import select
import signal
import socket
import sys
import struct
import traceback
from array import array
from collections import deque
from time import monotonic_ns

from servers.sysutil import die_with_parent

from . import latency
from .spec import HEADER_BYTES, LoadSpec

CONNECT_WINDOW = 256           # connects in progress per worker
CONNECT_DEADLINE_S = 5.0       # the whole connect phase
CONNECT_STALE_S = 0.25         # a SYN dropped on a full accept queue waits 1 s: retry sooner
CONNECT_ATTEMPTS = 6           # per connection
CONNECT_STALL_S = 1.5          # no connection completed for this long: the server is not accepting
GO_DEADLINE_S = 10.0           # parent silent this long after "connected": give up
DRAIN_S = 2.0                  # after the window: wait this long for in-flight echoes
TICK_NS = 100_000_000          # timeline resolution
SOURCE_CONNS = 8000            # connections per loopback source address (see open_connections)
OPEN_BACKLOG = 2_000_000       # open loop: scheduled, unwritten messages per worker
SCHEDULE_BATCH = 10_000        # open loop: sends scheduled per loop iteration at most
MAXEVENTS = 1024
FINE_WAIT_S = 0.002            # below this, wait with select() (µs) not epoll_wait (ms)

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)   # linux/in.h
_CONNECT_RETRY = {errno.EADDRNOTAVAIL, errno.EAGAIN, errno.ENOBUFS, errno.ETIMEDOUT,
                  errno.EINTR, errno.ENETUNREACH}
_RESET = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}

# error kinds (see run.py for units)
CONNECT_KINDS = ("refused", "addr_not_available", "connect_timeout", "no_fds", "connect_other")
RUN_KINDS = ("reset", "closed_by_server", "short_read", "timeout", "corrupt", "other")


def connect_error_kind(err: int) -> str:
    if err == errno.ECONNREFUSED:
        return "refused"
    if err == errno.EADDRNOTAVAIL:
        return "addr_not_available"
    if err in (errno.ETIMEDOUT,):
        return "connect_timeout"
    if err in (errno.EMFILE, errno.ENFILE):
        return "no_fds"
    return "connect_other"


class Conn:
    __slots__ = ("index", "sock", "fd", "active", "rseq", "wseq", "due", "owed",
                 "rbuf", "out", "bad", "last", "attempts", "started_ns")

    def __init__(self, index: int, active: bool):
        self.index = index
        self.active = active
        self.sock = None
        self.fd = -1
        self.rseq = self.wseq = index << 40   # header of the next message to expect / write
        self.due: deque[int] = deque()        # send (closed) or intended (open) time, in flight
        self.owed: deque[int] = deque()       # open loop: intended times not yet written
        self.rbuf = None                      # partial echo (bytearray) or None
        self.out = None                       # unsent bytes (bytearray) or None
        self.bad = 0                          # corrupt echoes
        self.last = None                      # the last message written (K=1: the next echo)
        self.attempts = 0
        self.started_ns = 0


def main(index: int, spec: LoadSpec, address: tuple, family: int, ctrl, parent_pid: int) -> None:
    """Process entry point: never raises, always exits."""
    die_with_parent(parent_pid)               # else the control pipe's EOF still ends us
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        if spec.cpus:
            os.sched_setaffinity(0, {spec.cpus[index % len(spec.cpus)]})
        Worker(index, spec, address, family, ctrl).run()
    except _ParentGone:
        code = 1
    except BaseException:
        code = 1
        try:
            ctrl.send(("error", traceback.format_exc(limit=8)))
        except OSError:
            pass
    sys.stdout.flush()
    os._exit(code)


class _ParentGone(Exception):
    pass


class Worker:
    def __init__(self, index: int, spec: LoadSpec, address: tuple, family: int, ctrl):
        self.index = index
        self.spec = spec
        self.address = address
        self.family = family
        self.ctrl = ctrl
        self.n, self.a = spec.share(index)
        self.base = sum(spec.share(i)[0] for i in range(index))   # global index of conn 0
        self.size = spec.msg_size
        self.pattern = bytes((i * 151 + 17) & 0xFF for i in range(self.size - HEADER_BYTES))
        # message = pack(header, pattern): one C call builds (or rebuilds, to verify) it
        self.pack = struct.Struct(f"<Q{len(self.pattern)}s").pack
        self.ep = select.epoll()
        self.by_fd: list[Conn | None] = []    # fd -> Conn (list: cheapest lookup)
        self.conns: list[Conn] = []           # established
        self.active: list[Conn] = []          # established and active
        self.errors = dict.fromkeys(CONNECT_KINDS + RUN_KINDS, 0)
        self.retries = 0
        self.connect_s = 0.0
        # counters updated off the hot path (the hot loop keeps its own in locals)
        self.msgs = self.rx = self.tx = 0
        self.open_count = 0                   # established and not lost
        self.backlog = 0                      # open loop: owed messages in this worker
        self.unanswered = 0
        self.backlog_overflow = 0
        self.lat = array("q")                 # latencies (ns) of the window, not yet in hist
        self.hist = latency.new_histogram()

    # -- protocol with the parent ------------------------------------------

    def run(self) -> None:
        self.open_connections()
        self.ctrl.send(("connected", {"pid": os.getpid(), "established": len(self.conns),
                                      "connect_s": self.connect_s,
                                      "errors": dict(self.errors), "retries": self.retries}))
        if not self.ctrl.poll(GO_DEADLINE_S):
            raise _ParentGone()
        try:
            msg = self.ctrl.recv()
        except EOFError:
            raise _ParentGone() from None
        if msg[0] != "go":
            return                            # ("abort",): nothing to measure
        result = self.measure(msg[1])
        self.ctrl.send(("result", result))

    # -- phase 1: connect ---------------------------------------------------

    def open_connections(self) -> None:
        """Open n connections, a bounded number in progress; retry transient errors."""
        ep, by_fd = self.ep, self.by_fd
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        by_fd.extend([None] * (min(hard, 1 << 20) + 1))
        # spread the active ones evenly over the connect order
        todo = deque(Conn(self.base + i, (i + 1) * self.a // self.n > i * self.a // self.n)
                     for i in range(self.n))
        later: deque[tuple[int, Conn]] = deque()   # (not before ns, conn) to retry
        pending: dict[int, Conn] = {}              # fd -> conn, oldest first
        t0 = monotonic_ns()
        deadline = t0 + int(CONNECT_DEADLINE_S * 1e9)
        stale_ns = int(CONNECT_STALE_S * 1e9)
        family, address = self.family, self.address
        sock_type = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
        # Past ~14,000 connections from one address to one port, connect() slows
        # from ~20 µs to ~1 ms: the kernel tries the even ephemeral ports first
        # and must scan them all before it takes an odd one (__inet_hash_connect).
        # To a 127.x target, any 127.x source works: spread the connections over
        # 127.0.0.1, .2, ... (at most SOURCE_CONNS each), the port still chosen at
        # connect() (IP_BIND_ADDRESS_NO_PORT), so each source has its own ports.
        sources = self._sources()

        def retry(c: Conn, err: int, now: int) -> None:
            if c.attempts >= CONNECT_ATTEMPTS:
                self.errors[connect_error_kind(err)] += 1
            else:
                self.retries += 1
                later.append((now + (5_000_000 << min(c.attempts, 5)), c))

        def close(c: Conn) -> None:
            ep.unregister(c.fd)
            by_fd[c.fd] = None
            c.sock.close()

        now = progress = t0
        stall_ns = int(CONNECT_STALL_S * 1e9)
        while (todo or later or pending) and now < deadline and now - progress < stall_ns:
            while later and later[0][0] <= now and len(pending) < CONNECT_WINDOW:
                todo.appendleft(later.popleft()[1])
            while todo and len(pending) < CONNECT_WINDOW:
                c = todo.popleft()
                c.attempts += 1
                try:
                    s = socket.socket(family, sock_type)
                except OSError as e:
                    self.errors[connect_error_kind(e.errno)] += 1
                    continue
                try:
                    if sources:
                        s.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                        s.bind((sources[c.index % len(sources)], 0))
                    err = s.connect_ex(address)
                except OSError as e:
                    err = e.errno
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    if err in _CONNECT_RETRY:
                        retry(c, err, now)
                    else:
                        self.errors[connect_error_kind(err)] += 1
                    continue
                c.sock, c.fd, c.started_ns = s, s.fileno(), now
                by_fd[c.fd] = c
                pending[c.fd] = c
                ep.register(c.fd, _OUT)
            timeout = (min(deadline, progress + stall_ns) - now) / 1e9
            if pending:
                timeout = min(timeout, max(0.0, (next(iter(pending.values())).started_ns
                                                 + stale_ns - now) / 1e9))
            if later:
                timeout = min(timeout, max(0.0, (later[0][0] - now) / 1e9))
            if todo and len(pending) < CONNECT_WINDOW:
                timeout = 0
            events = ep.poll(timeout, MAXEVENTS)
            now = monotonic_ns()
            for fd, ev in events:
                c = pending.pop(fd, None)
                if c is None:
                    c = by_fd[fd]
                    if c is not None:
                        self._probe(c)      # established, and already closed or written to
                    continue
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    close(c)
                    if err in _CONNECT_RETRY:
                        retry(c, err, now)
                    else:
                        self.errors[connect_error_kind(err)] += 1
                    continue
                if c.active:
                    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.active.append(c)
                ep.modify(fd, _IN)           # idle ones too: a server close wakes us
                self.conns.append(c)
                self.open_count += 1
                progress = now
            for fd, c in list(pending.items()):   # oldest first: a dropped SYN, start again
                if now - c.started_ns < stale_ns:
                    break
                del pending[fd]
                close(c)
                retry(c, errno.ETIMEDOUT, now)
        self.connect_s = (monotonic_ns() - t0) / 1e9
        for c in pending.values():
            close(c)
        self.errors["connect_timeout"] += len(pending) + len(todo) + len(later)

    def _sources(self) -> list[str]:
        """Source addresses for a 127.x IPv4 target, or [] to let the kernel choose."""
        if self.family != socket.AF_INET or not self.address[0].startswith("127."):
            return []
        count = -(-self.spec.connections // SOURCE_CONNS)
        return [f"127.0.0.{1 + k}" for k in range(count)] if count > 1 else []

    # -- phases 2-4: measure ---------------------------------------------------

    def measure(self, t0: int) -> dict:
        spec = self.spec
        ws = t0 + int(spec.warmup_s * 1e9)
        we = ws + int(spec.duration_s * 1e9)
        ticks = max(1, -(-int(spec.duration_s * 1e9) // TICK_NS))
        timeline = [[0, 0] for _ in range(ticks)]        # per tick: [messages, bytes]
        ctrl_fd = self.ctrl.fileno()
        self.by_fd[ctrl_fd] = None
        self.ep.register(ctrl_fd, _IN)                   # EOF: the parent is gone
        result = self._loop(t0, ws, we, timeline)
        self.ep.unregister(ctrl_fd)
        result.update(self._final_check())
        result["timeline"] = [(round(k * TICK_NS / 1e9, 1), m, b)
                              for k, (m, b) in enumerate(timeline)]
        return result

    def _written(self) -> int:
        """Messages handed to the sockets so far (the kernel may not have taken all)."""
        return sum(c.wseq - (c.index << 40) for c in self.active)

    def _loop(self, t0: int, ws: int, we: int, timeline: list) -> dict:
        spec = self.spec
        S = self.size
        pattern = self.pattern
        by_fd = self.by_fd
        ep = self.ep
        poll = ep.poll
        closed = spec.rate_msgs_s is None
        # read at most what can be in flight: a small read allocates little
        bufsize = min(1 << 18, S * spec.pipeline)
        read, write, pack = os.read, os.write, self.pack
        lat = self.lat
        lat_add = lat.append
        mono = monotonic_ns
        _OUT = select.EPOLLOUT
        ctrl_fd = self.ctrl.fileno()
        epfd = ep.fileno()
        lose = self._lose
        single = spec.pipeline == 1           # one in flight: the next echo is c.last

        if not closed:
            # one schedule per worker, handed round-robin to its active connections
            share = spec.rate_msgs_s * len(self.active) / max(1, spec.active)
            interval = 1e9 / share if share > 0 else float("inf")
            rng = random.Random(0x5EED + self.index)
            poisson = spec.arrivals == "poisson"
            # workers interleave their fixed schedules; Poisson ones start at random
            offset = rng.random() if poisson else (self.index + 0.5) / spec.workers
            next_send = t0 + offset * interval
            rr = -1
            inflight = spec.pipeline          # at most K written and unanswered per connection

        # fast-path counters, S bytes each: verified echoes, closed-loop replies
        # (_defer subtracts what the kernel did not take); slow paths count on self
        msgs = replies = 0
        reply = closed                        # the fast path sends a successor
        WARMUP, WINDOW, DRAIN = 0, 1, 2
        phase = WARMUP
        sending = True
        mark_start = mark_end = None          # (rx, msgs, tx, written) at window start / end
        ru0 = ru1 = None
        win_start = win_end = None
        tick_msgs = tick_rx = 0               # counters at the last timeline update
        scheduled = 0                         # open loop: intended sends inside the window
        drain_deadline = we + int(DRAIN_S * 1e9)

        # wait for t0; then, closed loop, K messages on every active connection
        now = mono()
        while now < t0:
            self._wait_until(t0, now, epfd, poll, ctrl_fd)
            now = mono()
        if closed:
            for c in self.active:
                self._send_new(c, spec.pipeline, now)
        batch = last_batch = now
        next_check = now

        while True:
            if batch >= next_check:
                # -- housekeeping: phases, timeline, open-loop schedule, the end --
                if phase == WARMUP and batch >= ws:
                    phase = WINDOW
                    del lat[:]                      # warmup latencies are not measured
                    ru0 = resource.getrusage(resource.RUSAGE_SELF)
                    win_start = batch
                    tick_msgs, tick_rx = msgs + self.msgs, msgs * S + self.rx
                    mark_start = (tick_rx, tick_msgs, replies * S + self.tx, self._written())
                if sending and not closed:
                    # open loop: hand out every send due by now (a bounded batch)
                    act = self.active
                    limit = min(batch, we)
                    budget = SCHEDULE_BATCH
                    while next_send <= limit and budget:
                        budget -= 1
                        rr = rr + 1 if rr + 1 < len(act) else 0
                        c = act[rr]
                        intended = int(next_send)
                        next_send += rng.expovariate(1.0) * interval if poisson else interval
                        if intended >= ws:
                            scheduled += 1
                        if c.sock is None:
                            continue                # lost: its share is not sent
                        if not c.owed and len(c.due) < inflight:
                            c.due.append(intended)
                            self._write(c, self._build(c, 1))
                        elif self.backlog < OPEN_BACKLOG:
                            c.owed.append(intended)
                            self.backlog += 1
                        else:
                            self.backlog_overflow += 1
                if phase == WINDOW:
                    # what the loop did since the last update, it did by last_batch
                    k = max(0, min(len(timeline) - 1, (last_batch - ws) // TICK_NS))
                    m_all, rx = msgs + self.msgs, msgs * S + self.rx
                    timeline[k][0] += m_all - tick_msgs
                    timeline[k][1] += rx - tick_rx
                    tick_msgs, tick_rx = m_all, rx
                    if len(lat) > latency.FLUSH_VALUES:
                        latency.record_ns(self.hist, lat)
                    if batch >= we:
                        phase = DRAIN
                        sending = reply = False
                        ru1 = resource.getrusage(resource.RUSAGE_SELF)
                        win_end = batch
                        mark_end = (rx, m_all, replies * S + self.tx, self._written())
                        latency.record_ns(self.hist, lat)
                        lat = self.lat = array("q")     # echoes after the window: not measured
                        lat_add = lat.append
                        for c in self.active:
                            c.owed.clear()          # scheduled, never written: not sent
                        self.backlog = 0
                if phase == DRAIN and (batch >= drain_deadline
                                       or not any(c.due for c in self.active)):
                    break
                if self.open_count == 0:
                    break                           # every connection is gone
                if phase == WARMUP:
                    del lat[:]                      # a long warmup holds no latencies
                    next_check = min(ws, batch + 1_000_000_000)
                elif phase == WINDOW:
                    next_check = min(we, ws + ((batch - ws) // TICK_NS + 1) * TICK_NS)
                else:
                    next_check = min(drain_deadline, batch + 10_000_000)
                if sending and not closed and next_send < next_check:
                    next_check = int(next_send)

            # -- wait --
            timeout = (next_check - batch) / 1e9
            if timeout <= 0:
                timeout = 0
            elif timeout < FINE_WAIT_S:
                select.select((epfd,), (), (), timeout)   # µs resolution; epoll_wait has ms
                timeout = 0
            events = poll(timeout, MAXEVENTS)
            last_batch = batch
            batch = mono()

            # -- the hot path: one iteration per ready descriptor --
            for fd, ev in events:
                c = by_fd[fd]
                if c is None:
                    if fd == ctrl_fd:
                        raise _ParentGone()
                    continue                        # closed earlier in this batch
                if ev != _OUT:                      # readable, or an error / hang-up
                    try:
                        data = read(fd, bufsize)
                    except BlockingIOError:
                        data = None
                    except OSError as e:
                        lose(c, "reset" if e.errno in _RESET else "other")
                        continue
                    if data:
                        now = mono()
                        due = c.due
                        if c.rbuf is None and due and data == (
                                c.last if single else pack(c.rseq, pattern)):
                            # fast path: exactly one whole message, verified
                            c.rseq += 1
                            lat_add(now - due.popleft())
                            msgs += 1
                            if reply:                   # closed loop: its successor, now
                                seq = c.wseq
                                c.wseq = seq + 1
                                msg = c.last = pack(seq, pattern)
                                due.append(now)
                                if c.out is not None:
                                    c.out += msg    # behind what the kernel has not taken
                                    continue
                                try:
                                    sent = write(fd, msg)
                                except BlockingIOError:
                                    sent = 0
                                except OSError as e:
                                    lose(c, "reset" if e.errno in _RESET else "other")
                                    continue
                                replies += 1
                                if sent < S:
                                    self._defer(c, msg, sent)
                            elif c.owed and sending:
                                self._release(c)
                            continue
                        self.rx += len(data)
                        if not c.active:
                            self._unexpected(c)
                            continue
                        done = self._receive(c, data, now)
                        if done and sending:
                            if closed:
                                self._send_new(c, done, now)
                            elif c.owed:
                                self._release(c)
                        continue
                    if data is not None:            # b"": the server closed
                        lose(c, "short_read" if c.rbuf else "closed_by_server")
                        continue
                if ev & _OUT and c.out is not None:
                    self._flush(c)

        if win_start is not None and win_end is None:
            latency.record_ns(self.hist, lat)   # the window ended early: every connection lost
        ru1 = ru1 or resource.getrusage(resource.RUSAGE_SELF)
        ru0 = ru0 or ru1
        rx, tx = msgs * S + self.rx, replies * S + self.tx
        mark_end = mark_end or (rx, msgs + self.msgs, tx, self._written())
        mark_start = mark_start or mark_end
        timeout_msgs = 0
        for c in self.active:
            if c.sock is not None and c.due:
                timeout_msgs += len(c.due)
                self.errors["timeout"] += 1
        self.unanswered += timeout_msgs
        return {
            "index": self.index,
            "pid": os.getpid(),
            "window_start_ns": win_start,            # None: the window never began
            "window_end_ns": win_end or batch if win_start else None,
            "bytes_received": mark_end[0] - mark_start[0],
            "messages": mark_end[1] - mark_start[1],
            "bytes_sent": mark_end[2] - mark_start[2],
            "written_msgs": mark_end[3] - mark_start[3],
            "scheduled_msgs": scheduled,
            "bytes_received_total": rx,
            "bytes_sent_total": tx,
            "cpu_user_s": ru1.ru_utime - ru0.ru_utime,
            "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
            "latency_hdr": latency.encode(self.hist),
            "unanswered_msgs": self.unanswered,
            "timeout_msgs": timeout_msgs,
            "backlog_overflow_msgs": self.backlog_overflow,
        }

    def _wait_until(self, t: int, now: int, epfd: int, poll, ctrl_fd: int) -> None:
        """Sleep towards t; a readable control pipe means the parent is gone."""
        timeout = (t - now) / 1e9
        if timeout < FINE_WAIT_S:
            select.select((epfd,), (), (), timeout)
            return
        for fd, _ in poll(timeout, MAXEVENTS):
            if fd == ctrl_fd:
                raise _ParentGone()

    # -- off the hot path ------------------------------------------------------

    def _build(self, c: Conn, k: int) -> bytes:
        """The next k messages of c, as bytes."""
        seq, pattern, pack = c.wseq, self.pattern, self.pack
        c.wseq = seq + k
        if k == 1:
            c.last = pack(seq, pattern)
            return c.last
        return b"".join([pack(seq + i, pattern) for i in range(k)])

    def _send_new(self, c: Conn, k: int, now: int) -> None:
        """Closed loop: put k new messages in flight, sent now."""
        if c.sock is None:
            return
        c.due.extend([now] * k)
        self._write(c, self._build(c, k))

    def _release(self, c: Conn) -> None:
        """Open loop: write owed messages while the in-flight cap allows."""
        k = min(len(c.owed), self.spec.pipeline - len(c.due))
        if k <= 0:
            return
        for _ in range(k):
            c.due.append(c.owed.popleft())
        self.backlog -= k
        self._write(c, self._build(c, k))

    def _write(self, c: Conn, data: bytes) -> None:
        if c.out is not None:
            c.out += data                           # behind what the kernel has not taken
            return
        try:
            sent = os.write(c.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._lose(c, "reset" if e.errno in _RESET else "other")
            return
        self.tx += len(data)
        if sent < len(data):
            self._defer(c, data, sent)

    def _defer(self, c: Conn, data: bytes, sent: int) -> None:
        """The kernel took `sent` bytes of data: keep the rest, ask for EPOLLOUT.

        Whoever counted len(data) as sent is corrected here; _flush counts the rest.
        """
        self.tx -= len(data) - sent
        c.out = bytearray(memoryview(data)[sent:])
        self.ep.modify(c.fd, _IN | _OUT)

    def _flush(self, c: Conn) -> None:
        try:
            sent = os.write(c.fd, c.out)
        except BlockingIOError:
            return
        except OSError as e:
            self._lose(c, "reset" if e.errno in _RESET else "other")
            return
        self.tx += sent
        del c.out[:sent]
        if not c.out:
            c.out = None
            self.ep.modify(c.fd, _IN)

    def _receive(self, c: Conn, data: bytes, now: int) -> int:
        """General receive: any split of the stream. Returns whole messages consumed."""
        S, pattern, pack = self.size, self.pattern, self.pack
        if c.rbuf is None:
            c.rbuf = bytearray(data)
        else:
            c.rbuf += data
        buf = c.rbuf
        whole = len(buf) // S
        if whole > len(c.due):
            self.errors["corrupt"] += whole - len(c.due)   # more bytes than were sent
            whole = len(c.due)
            del buf[whole * S:]
        done = 0
        for i in range(whole):
            t = c.due.popleft()
            if buf[i * S:(i + 1) * S] == pack(c.rseq, pattern):
                self.lat.append(now - t)
                done += 1
            else:
                self.errors["corrupt"] += 1
                c.bad += 1
            c.rseq += 1
        del buf[:whole * S]
        if not buf:
            c.rbuf = None
        self.msgs += done
        return whole                                # corrupt ones are replaced too

    def _unexpected(self, c: Conn) -> None:
        """Bytes on an idle connection: the server sent what nobody asked for."""
        self.errors["corrupt"] += 1

    def _lose(self, c: Conn, kind: str) -> None:
        """The connection is gone (reset, closed by the server...): count it, forget it."""
        self.errors[kind] += 1
        if c.due:
            self.unanswered += len(c.due)
        self.backlog -= len(c.owed)
        c.due.clear()
        c.owed.clear()
        self.ep.unregister(c.fd)
        self.by_fd[c.fd] = None
        c.sock.close()
        c.sock = None
        self.open_count -= 1

    def _probe(self, c: Conn) -> None:
        """A readable connection nothing was asked of: closed, reset, or unexpected bytes."""
        try:
            data = os.read(c.fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._lose(c, "reset" if e.errno in _RESET else "other")
            return
        if data:
            self._unexpected(c)
        else:
            self._lose(c, "closed_by_server")

    def _final_check(self) -> dict:
        """Is each idle connection still open? A read that would block says yes."""
        idle_open = active_open = 0
        for c in self.conns:
            if c.sock is not None and not c.active:
                self._probe(c)
            if c.sock is not None:
                if c.active:
                    active_open += 1
                else:
                    idle_open += 1
        return {
            "connections": {
                "requested": self.n,
                "established": None,                # filled by the parent from "connected"
                "active": self.a,
                "idle": self.n - self.a,
                "active_established": len(self.active),
                "idle_open_at_end": idle_open,
                "active_open_at_end": active_open,
                "echoing": sum(1 for c in self.active if c.rseq - (c.index << 40) > c.bad),
            },
            "errors": dict(self.errors),
        }
