"""Echo server loop on select(2).

Facts about select that shape this loop:

- An fd_set is a fixed 1024-bit array (glibc FD_SETSIZE): it cannot hold a
  descriptor whose *value* is 1024 or more, whatever the count. CPython
  raises ValueError for one (selectmodule.c, seq2set). So the server refuses
  such a descriptor at accept (FD_LIMIT): it is closed at once and counted,
  and the other connections are served.
- The kernel takes any nfds and, on every call, scans every descriptor below
  the highest one and calls its poll function (fs/select.c do_select): the
  cost grows with the registered descriptors, not the ready ones. The bitmaps
  it copies are small (3 x 128 bytes at 1024 fds).
- CPython rebuilds the fd_sets from our Python sets on every call and builds
  result lists by scanning them again: O(n) user time per call, part of
  what select costs from Python. The loop passes the sets as they are.
- select reports read and write readiness in separate lists; a descriptor
  in both gets one on_ready call per direction (spurious readiness is
  allowed by the core's contract).
- With no timeout, PEP 475 retries the call after EINTR, so only the
  wakeup fd, written by the signal handler, ends the wait.
"""

import select
from time import perf_counter_ns

from .core import CLOSED, READ, WRITE, Server
from .sysutil import FD_SETSIZE

NAME = "select"
FD_LIMIT = FD_SETSIZE


def run(server: Server) -> None:
    readers: set[int] = set()
    writers: set[int] = set()
    interest: dict[int, int] = {}            # fd -> mask the kernel will be given

    def apply(changes):
        for fd, want in changes:
            have = interest.get(fd)
            if want == have:
                continue
            if want == CLOSED:
                readers.discard(fd)          # forget fd before close() frees its number
                writers.discard(fd)
                del interest[fd]
                apply(server.close(fd))      # a freed fd may resume a paused accept
                continue
            (readers.add if want & READ else readers.discard)(fd)
            (writers.add if want & WRITE else writers.discard)(fd)
            interest[fd] = want

    apply([(server.listen_fd, READ), (server.wakeup_fd, READ)])
    on_ready, stats = server.on_ready, server.stats
    clock, wait_hist, events_hist = perf_counter_ns, stats.wait_hist, stats.events_hist
    while server.running:
        t0 = clock()
        r, w, _ = select.select(readers, writers, ())   # no timeout: signals arrive on wakeup_fd
        wait_ns = clock() - t0
        stats.wait_ns_total += wait_ns   # inline: a call would cost more (core.Stats)
        wait_hist[wait_ns.bit_length()] += 1
        events_hist[len(r) + len(w)] += 1
        for fd in r:
            if fd in interest:      # may have closed earlier in this batch
                changes = on_ready(fd, True, False)
                if changes:
                    apply(changes)
        for fd in w:
            if fd in interest:
                changes = on_ready(fd, False, True)
                if changes:
                    apply(changes)
