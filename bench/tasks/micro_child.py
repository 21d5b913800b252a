"""The child side of the wait-call micro-benchmark: one configuration set up and timed.

Runs in a fresh spawned interpreter (bench.tasks.child.run_in_child), one per
configuration and process round; bench.tasks.micro plans the configurations
and pools what the children return. What each op times:

- op=wait: one wait call, called as the servers call it:
  `select.select(readers, writers, (), t)` on Python sets,
  `poll.poll(t)`, `epoll.poll(t, MAXEVENTS)` with the server's MAXEVENTS.
  timeout_mode=zero is t=0: the kernel only scans (fs/select.c do_select and
  do_poll clear _qproc for a zero timeout, so no wait-queue entry is made).
  timeout_mode=blocking is no timeout with A >= 1 ready, so it returns at
  once, but the kernel first adds a wait-queue entry (__pollwait) for every
  descriptor it scans before the first ready one and removes them all in
  poll_freewait. The ready descriptors are the A last registered (highest
  numbers, scanned last) so that path is exercised for the N - A idle ones.
  ready=0 rows (zero only) are C2's point: nothing ready, pure scan cost.
- io_uring (op=wait only, bench.tasks.micro_uring): N multishot polls armed,
  the A last made ready again before each sample (edge-triggered: readiness
  cannot be asked for twice); timed is the server loop's io_uring_enter and
  the reaping of the A completions.
- op=register: register one more descriptor into a set of N (none ready),
  then the next wait(timeout=0), timed together; unregistered untimed after.
  For poll, register() is only a dict insert: CPython rebuilds its whole
  pollfd array on the next poll() (selectmodule.c, ufd_uptodate and
  update_ufd_array), so the cost shows up there. For epoll it is one
  epoll_ctl(EPOLL_CTL_ADD). The wait row at the same N with ready=0 is the
  part to subtract for the registration alone. select has no registration
  (its sets are rebuilt from the Python set on every call): no rows.
- op=modify: modify a registered descriptor between POLLIN and
  POLLIN|POLLPRI (readiness unchanged, so the wait returns the same), then
  the next wait(timeout=0), timed together; poll pays the rebuild again,
  epoll one epoll_ctl(EPOLL_CTL_MOD).

- mode=drain (op=wait): libevent test/bench.c's loop. Each timed iteration is
  one wait(timeout=0), then for every descriptor it returned one byte read
  and one byte written to the next pair's peer, so A stay ready and the
  kernel's wake-up path runs as in a server (for epoll, ep_poll_callback
  puts each written descriptor back on the ready list; in mode=wait the
  descriptors are never read and stay on it). The cost is per iteration:
  the wait call and A reads and writes.

CPU time (C11): the timed loop runs in a fresh thread. getrusage(RUSAGE_SELF)
around it gives the loop's CPU time exactly (the scheduler's runtime, to the
microsecond); the split into user and system is the thread's own
getrusage(RUSAGE_THREAD) at the loop's end, whose ratio is that of the timer
ticks (4 ms at HZ=250) that found the thread in user or kernel mode
(kernel/sched/cputime.c cputime_adjust): a sample, finer the longer the loop
(~60 ticks in the default 250 ms budget). Where C11 reads it (op=wait,
timeout zero, ready 0 or 1) untimed calls follow the timed ones until the
loop has run SPLIT_MIN_S, so that a cheap call capped at max_samples still
gets ~25 ticks. A fresh thread, because the process's own ratio carries its
set-up (imports, socketpairs) into the split. The parent divides the pooled
seconds by the pooled calls, untimed ones included (micro.csv
user_ns_per_call + sys_ns_per_call = cpu_ns_per_call); they include the
loop's own overhead around each timed call (timer, closure), a constant.

Costs include the timer and call overhead (`timer_ns` in micro.json, a
constant offset that does not change a slope). The garbage collector is off
while timing: poll and epoll return tuples, whose allocation would trigger
collections at random points. Registered ends are packed at the lowest
descriptor numbers and their peers moved just under the descriptor limit,
so select runs while N + a few < FD_SETSIZE; past that it raises ValueError
(selectmodule.c, seq2set), which is recorded as "refused: FD_SETSIZE".
"""

from __future__ import annotations

import fcntl
import gc
import os
import resource
import select
import socket
import statistics
import threading
from time import perf_counter_ns
from typing import TYPE_CHECKING

from servers.sysutil import raise_nofile_limit

if TYPE_CHECKING:
    from bench.tasks.micro import MicroConfig

SPLIT_MIN_S = 0.1            # C11's rows: the CPU loop runs at least this long (25 ticks at HZ=250)
MAXEVENTS = 1024             # servers/epoll_loop.py MAXEVENTS: the same call as the server
REFUSED = "refused: FD_SETSIZE"


def open_pairs(n: int) -> tuple[list[int], list[int]]:
    """n socketpairs as (readers, writers): readers packed at the lowest free
    descriptor numbers, writers moved just under the soft RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    floor = soft - n - 16
    if floor < n + 64:
        raise OSError(f"RLIMIT_NOFILE soft {soft} too low for {n} socketpairs "
                      f"(need about {2 * n + 80}); raise the hard limit")
    readers, writers = [], []
    for _ in range(n):
        a, b = socket.socketpair()
        r, w = a.detach(), b.detach()
        writers.append(fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, floor))
        os.close(w)                        # frees a low number for the next reader
        readers.append(r)
    return readers, writers


def measure(cfg: dict, samples: int | None, config: MicroConfig) -> dict:
    """Child: set up one configuration and time it (see the module docstring)."""
    raise_nofile_limit()
    if cfg["mechanism"] == "io_uring":
        from bench.tasks import micro_uring
        return micro_uring.measure(cfg, samples, config)
    op, mech, n, ready = cfg["op"], cfg["mechanism"], cfg["registered"], cfg["ready"]
    blocking = cfg["timeout_mode"] == "blocking"
    readers, writers = open_pairs(n)
    extra_r, _extra_w = open_pairs(1) if op == "register" else (None, None)

    if mech == "select":
        rset, wset = set(readers), set()
        sel = select.select
        wait, args = sel, (rset, wset, (), None if blocking else 0)
    elif mech == "poll":
        obj = select.poll()
        for fd in readers:
            obj.register(fd, select.POLLIN)
        wait, args = obj.poll, (() if blocking else (0,))
        flag_in, flag_pri = select.POLLIN, select.POLLPRI
    else:
        obj = select.epoll()
        for fd in readers:
            obj.register(fd, select.EPOLLIN)
        wait, args = obj.poll, (-1 if blocking else 0, MAXEVENTS)
        flag_in, flag_pri = select.EPOLLIN, select.EPOLLPRI

    for w in writers[n - ready:]:
        os.write(w, b"x")                  # the A last registered: scanned last

    try:
        got = wait(*args)                  # also builds poll's pollfd array once
    except ValueError as e:
        return {"note": f"{REFUSED} ({type(e).__name__}: {e}; highest fd {max(readers)})"}
    returned = len(got[0]) if mech == "select" else len(got)
    want = min(ready, MAXEVENTS) if mech == "epoll" else ready
    if returned != want:
        raise RuntimeError(f"{mech} reported {returned} ready, expected {want}")
    note = f"epoll returned {MAXEVENTS} of {ready} ready (MAXEVENTS)" if returned < ready else ""

    if cfg.get("mode") == "drain":
        one = _drain_iteration(mech, wait, args, readers, writers, ready)
    elif op == "wait":
        def one():
            t0 = perf_counter_ns()
            wait(*args)
            return perf_counter_ns() - t0
    elif op == "register":
        fd = extra_r[0]

        def one():
            t0 = perf_counter_ns()
            obj.register(fd, flag_in)
            wait(*args)
            t = perf_counter_ns() - t0
            obj.unregister(fd)
            return t
    else:
        fd, masks, flip = readers[-1], (flag_in | flag_pri, flag_in), [0]

        def one():
            flip[0] ^= 1
            mask = masks[flip[0]]
            t0 = perf_counter_ns()
            obj.modify(fd, mask)
            wait(*args)
            return perf_counter_ns() - t0

    gc.collect()
    gc.disable()
    timer_ns = statistics.median(_timer_overhead(200))   # reported, not subtracted
    samples = sample_count(one, config, samples)
    split_min_s = (SPLIT_MIN_S if op == "wait" and cfg.get("mode", "wait") == "wait" and not blocking
                   and ready <= 1 else 0.0)
    data, cpu = _timed_loop(one, max(samples, 2), split_min_s)
    gc.enable()
    return {"data": data, "note": note, "timer_ns": [timer_ns], **cpu}


def sample_count(one, config, samples: int | None) -> int:
    """Warm up `one`; the fixed count if given, else as many calls as config's time budget holds."""
    warm = [one() for _ in range(max(config.warmup_calls, 3))]
    if samples is not None:
        return samples
    est_ns = max(statistics.median(warm), 1)
    return int(min(config.max_samples, max(config.min_samples, config.budget_ms * 1e6 / est_ns)))


def _timed_loop(one, n: int, min_s: float = 0.0) -> tuple[list[int], dict]:
    """n timed calls in a fresh thread, then untimed ones until min_s has passed:
    (samples, {cpu_user_s, cpu_sys_s, cpu_calls}) as the module docstring says."""
    out = {}

    def body():
        t_end = perf_counter_ns() + int(min_s * 1e9)
        out["data"] = [one() for _ in range(n)]
        calls = n
        while perf_counter_ns() < t_end:
            one()
            calls += 1
        out["calls"] = calls
        out["thread"] = resource.getrusage(resource.RUSAGE_THREAD)

    worker = threading.Thread(target=body)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    worker.start()
    worker.join()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    total = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    t = out["thread"]
    user_share = t.ru_utime / (t.ru_utime + t.ru_stime) if t.ru_utime + t.ru_stime > 0 else 1.0
    return out["data"], {"cpu_user_s": total * user_share, "cpu_sys_s": total * (1 - user_share),
                         "cpu_calls": out["calls"]}


def _drain_iteration(mech: str, wait, args, readers: list[int], writers: list[int], ready: int):
    """bench.c's iteration as a timed callable: wait, then read each ready and write the next."""
    nxt = {r: writers[(i + 1) % len(readers)] for i, r in enumerate(readers)}
    read, write = os.read, os.write

    def one():
        t0 = perf_counter_ns()
        got = wait(*args)
        fds = got[0] if mech == "select" else [fd for fd, _ in got]
        for fd in fds:
            read(fd, 1)
            write(nxt[fd], b"x")
        t = perf_counter_ns() - t0
        if len(fds) != ready:
            raise RuntimeError(f"{mech} drain: {len(fds)} ready, expected {ready}")
        return t
    return one


def _timer_overhead(n: int) -> list[int]:
    out = []
    for _ in range(n):
        t0 = perf_counter_ns()
        out.append(perf_counter_ns() - t0)
    return out
