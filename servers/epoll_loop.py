"""Echo server loop on level-triggered epoll(7).

Facts about epoll that shape this loop:

- The interest set lives in the kernel (fs/eventpoll.c: a red-black tree of
  epitems). Registering is one epoll_ctl syscall per change; waiting costs
  nothing per registered descriptor. A socket's wake-up callback puts its
  epitem on a ready list, and epoll_wait copies only that list out: the
  cost of a call grows with the *ready* descriptors, not the registered ones.
- epoll_wait copies events into the caller's buffer (ep_send_events ->
  epoll_put_uevent). There is no shared mmap ring; C6 checks that claim.
- Level-triggered: a descriptor stays on the ready list while it is ready,
  so one recv per readiness is enough and nothing is lost if we stop early.
- Each interest change is its own epoll_ctl syscall (Gammo et al., OLS 2004,
  found it a large share of epoll's cost). So the loop calls modify only
  when the mask really changes: write interest is added only while bytes
  are unsent and removed when they drain, never toggled per message.
- CPython's epoll.poll() allocates a maxevents-sized array on every call
  (selectmodule.c, PyMem_New) and builds one tuple per event. MAXEVENTS is
  fixed so that cost is the same for every call; a batch larger than it
  just waits for the next call, which returns at once.
- EPOLLERR and EPOLLHUP are always reported, asked for or not; they wake
  both directions and the core closes the connection on the error.
- Unregistering must precede close(): a closed fd leaves the set anyway, but
  only once every duplicate of the file is closed, and the number is reused
  by the next accept.
- With no timeout, PEP 475 retries the call after EINTR, so only the
  wakeup fd, written by the signal handler, ends the wait.
"""

import select
from time import perf_counter_ns

from .core import CLOSED, READ, WRITE, Server

NAME = "epoll"
FD_LIMIT = None
MAXEVENTS = 1024     # fixed; CPython allocates the array per call (selectmodule.c)
_FLAGS = {0: 0, READ: select.EPOLLIN, WRITE: select.EPOLLOUT,
          READ | WRITE: select.EPOLLIN | select.EPOLLOUT}

_READABLE = ~select.EPOLLOUT   # anything but EPOLLOUT (incl. HUP/ERR) wakes the reader
_WRITABLE = ~select.EPOLLIN    # anything but EPOLLIN wakes the writer


def run(server: Server) -> None:
    ep = select.epoll()
    interest: dict[int, int] = {}            # fd -> mask the kernel has now

    def apply(changes):
        for fd, want in changes:
            have = interest.get(fd)
            if want == have:
                continue                     # no syscall when nothing changed
            if want == CLOSED:
                ep.unregister(fd)            # forget fd before close() frees its number
                del interest[fd]
                apply(server.close(fd))      # a freed fd may resume a paused accept
            elif have is None:
                ep.register(fd, _FLAGS[want])
                interest[fd] = want
            else:
                ep.modify(fd, _FLAGS[want])
                interest[fd] = want

    try:
        apply([(server.listen_fd, READ), (server.wakeup_fd, READ)])
        on_ready, stats = server.on_ready, server.stats
        clock, wait_hist, events_hist = perf_counter_ns, stats.wait_hist, stats.events_hist
        while server.running:
            t0 = clock()
            ready = ep.poll(-1, MAXEVENTS)   # no timeout: signals arrive on wakeup_fd
            wait_ns = clock() - t0
            stats.wait_ns_total += wait_ns   # inline: a call would cost more (core.Stats)
            wait_hist[wait_ns.bit_length()] += 1
            events_hist[len(ready)] += 1
            for fd, ev in ready:
                if fd in interest:      # may have closed earlier in this batch
                    changes = on_ready(fd, ev & _READABLE, ev & _WRITABLE)
                    if changes:
                        apply(changes)
    finally:
        ep.close()
