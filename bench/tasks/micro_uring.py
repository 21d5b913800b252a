"""Micro-benchmark child for io_uring: the cost of learning readiness, as the server learns it.

N socketpairs are opened and one multishot POLL_ADD (POLLIN) is armed on one
end of each, as servers/uring_loop.py arms its sockets. Multishot poll is
edge-triggered: a descriptor that stays readable posts nothing more, so unlike
select/poll/epoll the same readiness cannot be asked for twice. Each sample
therefore first makes the A last registered ready again, untimed, by writing
one byte to each peer (a wake-up each, so a CQE each, posted by the task work
that runs as the write returns), then times what the server's loop does, and
reads the bytes back afterwards, untimed:

- timeout_mode=blocking: io_uring_submit_and_wait(ring, 1), the server's wait
  (one io_uring_enter with IORING_ENTER_GETEVENTS, returning at once), then
  reading user_data, res and flags of every CQE and one cq_advance;
- timeout_mode=zero: io_uring_get_events (the same enter with no minimum),
  then the same reaping.

ready=0 (zero only) is the enter with nothing to reap. The ring has room for
every CQE of a sample (its CQ holds 2 x next_pow2(N) entries, at most 65536),
so no multishot ends on overflow while timing. Where io_uring cannot run the
row's note is the refusal, as the server gives it.
"""

from __future__ import annotations

import gc
import os
import select
import statistics
from time import perf_counter_ns

MAX_ENTRIES = 32768      # IORING_MAX_ENTRIES


def measure(cfg: dict, samples: int | None, config) -> dict:
    """Child: one io_uring configuration of micro.csv (see the module docstring)."""
    from bench.tasks.micro_child import _timer_overhead, open_pairs, sample_count
    from servers import uring_loop
    why = uring_loop.unavailable()
    if why:
        return {"note": f"refused: io_uring not available here: {why}"}
    import liburing as L
    n, ready = cfg["registered"], cfg["ready"]
    readers, writers = open_pairs(n)
    ring, cqe = L.Ring(), L.Cqe()
    L.io_uring_queue_init(min(MAX_ENTRIES, max(n, 8)), ring)
    for i, fd in enumerate(readers):
        sqe = L.io_uring_get_sqe(ring)
        if sqe is None:                      # SQ full: submit what is queued
            L.io_uring_submit(ring)
            sqe = L.io_uring_get_sqe(ring)
        L.io_uring_prep_poll_multishot(sqe, fd, select.POLLIN)
        sqe.user_data = i + 1
    L.io_uring_submit(ring)
    woken, drained = writers[n - ready:], readers[n - ready:]   # the A last registered
    if cfg["timeout_mode"] == "blocking":
        def enter():
            L.io_uring_submit_and_wait(ring, 1)
    else:
        def enter():
            L.io_uring_get_events(ring)

    def reap() -> int:
        got = L.io_uring_cq_ready(ring)
        for i in L.CqeIter(ring, cqe):
            if i == got:
                break
            c = cqe[0]
            c.user_data, c.res, c.flags     # what the server's loop reads of each CQE
        L.io_uring_cq_advance(ring, got)
        return got

    def one() -> int:
        for w in woken:
            os.write(w, b"x")
        t0 = perf_counter_ns()
        enter()
        got = reap()
        t = perf_counter_ns() - t0
        for r in drained:
            os.read(r, 64)                   # untimed: the peers' buffers never fill
        if got != ready:
            raise RuntimeError(f"io_uring reaped {got} CQEs, expected {ready}")
        return t

    L.io_uring_get_events(ring)
    reap()                                   # the arming CQEs (none: nothing was ready)
    gc.collect()
    gc.disable()
    timer_ns = statistics.median(_timer_overhead(200))   # reported, not subtracted
    samples = sample_count(one, config, samples)
    data = [one() for _ in range(max(samples, 2))]
    gc.enable()
    L.io_uring_queue_exit(ring)
    return {"data": data, "note": "", "timer_ns": [timer_ns]}
