"""Phases 2-4 of a load-generator worker: warmup, window and drain, one loop.

The hot path (one readable connection) is written for its cost: raw
os.read/os.write on the descriptor (about 0.12 µs less per message than
socket.recv/send, measured here), a read no larger than what can be in
flight (a 64 KiB read allocates 64 KiB), one monotonic clock read, one
compare (K=1: against the message last written, saving a struct.pack), one
deque pop and push, one array append of the latency in ns (about 0.04 µs,
against 0.06 µs for a dict of µs buckets and 0.8 µs for
HdrHistogram.record_value) and, in closed loop, one pack and one write.
Counters live in local variables; partial reads and writes, errors and the
open-loop schedule live in Worker methods that count on the worker. One
loop pass handles housekeeping (phases, 100 ms timeline ticks, the
open-loop schedule) only when its next deadline has passed.

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
from array import array
from time import monotonic_ns

from . import latency

DRAIN_S = 2.0                  # after the window: wait this long for in-flight echoes
TICK_NS = 100_000_000          # timeline resolution
OPEN_BACKLOG = 2_000_000       # open loop: scheduled, unwritten messages per worker
SCHEDULE_BATCH = 10_000        # open loop: sends scheduled per loop iteration at most
MAXEVENTS = 1024
FINE_WAIT_S = 0.002            # below this, wait with select() (µs) not epoll_wait (ms)

RESET = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}
RUN_KINDS = ("reset", "closed_by_server", "short_read", "timeout", "corrupt", "other")


class ParentGone(Exception):
    """The control pipe is readable during the run: the parent is gone."""


# One long function on purpose, for speed: the hot path's state lives in this frame's locals.
def run_loop(worker, t0: int, ws: int, we: int, timeline: list) -> dict:
    """Warmup from t0, window [ws, we), drain; add to timeline; return the worker's result."""
    spec = worker.spec
    msg_size = worker.size
    pattern = worker.pattern
    by_fd = worker.by_fd
    ep = worker.ep
    poll = ep.poll
    closed = spec.rate_msgs_s is None
    # read at most what can be in flight: a small read allocates little
    bufsize = min(1 << 18, msg_size * spec.pipeline)
    read, write, pack = os.read, os.write, worker.pack
    lat = worker.lat
    lat_add = lat.append
    mono = monotonic_ns
    _OUT = select.EPOLLOUT
    ctrl_fd = worker.ctrl.fileno()
    epfd = ep.fileno()
    lose = worker.lose
    single = spec.pipeline == 1           # one in flight: the next echo is conn.last

    if not closed:
        # one schedule per worker, handed round-robin to its active connections
        share = spec.rate_msgs_s * len(worker.active) / max(1, spec.active)
        interval = 1e9 / share if share > 0 else float("inf")
        rng = random.Random(0x5EED + worker.index)
        poisson = spec.arrivals == "poisson"
        # workers interleave their fixed schedules; Poisson ones start at random
        offset = rng.random() if poisson else (worker.index + 0.5) / spec.workers
        next_send = t0 + offset * interval
        next_conn = -1
        inflight = spec.pipeline          # at most K written and unanswered per connection

    # fast-path counters, msg_size bytes each: verified echoes, closed-loop replies
    # (worker.defer subtracts what the kernel did not take); slow paths count on worker
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
        _wait_until(t0, now, epfd, poll, ctrl_fd)
        now = mono()
    if closed:
        for conn in worker.active:
            worker.send_new(conn, spec.pipeline, now)
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
                tick_msgs, tick_rx = msgs + worker.msgs, msgs * msg_size + worker.rx
                mark_start = (tick_rx, tick_msgs, replies * msg_size + worker.tx, worker.written())
            if sending and not closed:
                # open loop: hand out every send due by now (a bounded batch)
                active = worker.active
                limit = min(batch, we)
                budget = SCHEDULE_BATCH
                while next_send <= limit and budget:
                    budget -= 1
                    next_conn = next_conn + 1 if next_conn + 1 < len(active) else 0
                    conn = active[next_conn]
                    intended = int(next_send)
                    next_send += rng.expovariate(1.0) * interval if poisson else interval
                    if intended >= ws:
                        scheduled += 1
                    if conn.sock is None:
                        continue                # lost: its share is not sent
                    if not conn.owed and len(conn.due) < inflight:
                        conn.due.append(intended)
                        worker.send_bytes(conn, worker.build(conn, 1))
                    elif worker.backlog < OPEN_BACKLOG:
                        conn.owed.append(intended)
                        worker.backlog += 1
                    else:
                        worker.backlog_overflow += 1
            if phase == WINDOW:
                # what the loop did since the last update, it did by last_batch
                tick = max(0, min(len(timeline) - 1, (last_batch - ws) // TICK_NS))
                msgs_all, rx = msgs + worker.msgs, msgs * msg_size + worker.rx
                timeline[tick][0] += msgs_all - tick_msgs
                timeline[tick][1] += rx - tick_rx
                tick_msgs, tick_rx = msgs_all, rx
                if len(lat) > latency.FLUSH_VALUES:
                    latency.record_ns(worker.hist, lat)
                if batch >= we:
                    phase = DRAIN
                    sending = reply = False
                    ru1 = resource.getrusage(resource.RUSAGE_SELF)
                    win_end = batch
                    mark_end = (rx, msgs_all, replies * msg_size + worker.tx, worker.written())
                    latency.record_ns(worker.hist, lat)
                    lat = worker.lat = array("q")     # echoes after the window: not measured
                    lat_add = lat.append
                    for conn in worker.active:
                        conn.owed.clear()          # scheduled, never written: not sent
                    worker.backlog = 0
            if phase == DRAIN and (batch >= drain_deadline
                                   or not any(conn.due for conn in worker.active)):
                break
            if worker.open_count == 0:
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
            conn = by_fd[fd]
            if conn is None:
                if fd == ctrl_fd:
                    raise ParentGone()
                continue                        # closed earlier in this batch
            if ev != _OUT:                      # readable, or an error / hang-up
                try:
                    data = read(fd, bufsize)
                except BlockingIOError:
                    data = None
                except OSError as e:
                    lose(conn, "reset" if e.errno in RESET else "other")
                    continue
                if data:
                    now = mono()
                    due = conn.due
                    if conn.rbuf is None and due and data == (
                            conn.last if single else pack(conn.rseq, pattern)):
                        # fast path: exactly one whole message, verified
                        conn.rseq += 1
                        lat_add(now - due.popleft())
                        msgs += 1
                        if reply:                   # closed loop: its successor, now
                            seq = conn.wseq
                            conn.wseq = seq + 1
                            msg = conn.last = pack(seq, pattern)
                            due.append(now)
                            if conn.out is not None:
                                conn.out += msg    # behind what the kernel has not taken
                                continue
                            try:
                                sent = write(fd, msg)
                            except BlockingIOError:
                                sent = 0
                            except OSError as e:
                                lose(conn, "reset" if e.errno in RESET else "other")
                                continue
                            replies += 1
                            if sent < msg_size:
                                worker.defer(conn, msg, sent)
                        elif conn.owed and sending:
                            worker.release(conn)
                        continue
                    worker.rx += len(data)
                    if not conn.active:
                        worker.unexpected(conn)
                        continue
                    done = worker.receive(conn, data, now)
                    if done and sending:
                        if closed:
                            worker.send_new(conn, done, now)
                        elif conn.owed:
                            worker.release(conn)
                    continue
                if data is not None:            # b"": the server closed
                    lose(conn, "short_read" if conn.rbuf else "closed_by_server")
                    continue
            if ev & _OUT and conn.out is not None:
                worker.flush(conn)

    if win_start is not None and win_end is None:
        latency.record_ns(worker.hist, lat)   # the window ended early: every connection lost
    ru1 = ru1 or resource.getrusage(resource.RUSAGE_SELF)
    ru0 = ru0 or ru1
    rx, tx = msgs * msg_size + worker.rx, replies * msg_size + worker.tx
    mark_end = mark_end or (rx, msgs + worker.msgs, tx, worker.written())
    mark_start = mark_start or mark_end
    timeout_msgs = 0
    for conn in worker.active:
        if conn.sock is not None and conn.due:
            timeout_msgs += len(conn.due)
            worker.errors["timeout"] += 1
    worker.unanswered += timeout_msgs
    return {
        "index": worker.index,
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
        "latency_hdr": latency.encode(worker.hist),
        "unanswered_msgs": worker.unanswered,
        "timeout_msgs": timeout_msgs,
        "backlog_overflow_msgs": worker.backlog_overflow,
    }


def _wait_until(until_ns: int, now: int, epfd: int, poll, ctrl_fd: int) -> None:
    """Sleep towards until_ns; a readable control pipe means the parent is gone."""
    timeout = (until_ns - now) / 1e9
    if timeout < FINE_WAIT_S:
        select.select((epfd,), (), (), timeout)
        return
    for fd, _ in poll(timeout, MAXEVENTS):
        if fd == ctrl_fd:
            raise ParentGone()