"""Echo server loop on edge-triggered epoll(7) (EPOLLET).

Facts about edge-triggered epoll that shape this loop:

- EPOLLET reports a change of state, not a state: epoll(7) says "an event
  will be generated upon each receipt of a chunk of data", and nothing while
  data already queued sits unread. Whatever a wake-up announced must be
  consumed now or it is never announced again. So the core, built with
  edge=True, reads until the receive queue is empty, accepts until EAGAIN,
  and when a close frees a descriptor after EMFILE it accepts at once: the
  backlog raised its edge long ago.
- A read paused by back-pressure needs no such retry: it resumes when an
  EPOLLOUT edge lets the connection drain, and every reported event carries
  the file's full current mask (ep_send_events polls each ready item), so
  EPOLLIN comes with it if data is queued.
- Reading stops at EAGAIN, not at a short read. epoll(7) says a short read
  means the queue is exhausted, and for data it is; but a FIN that arrived
  with the last data raised its edge before we read, so stopping early
  leaves the connection in CLOSE-WAIT forever (the half-close test caught
  it). The price is one recv per wake-up that returns EAGAIN.
- Because only changes raise events, a descriptor can be registered once
  for both directions and never modified: EPOLLOUT does not fire while the
  socket stays writable, only when send-buffer space comes back after a
  send fell short. This loop never calls epoll_ctl after registration; the
  level-triggered loop calls it whenever write interest comes or goes.
- EPOLLRDHUP reports the peer's FIN even when no data comes with it.
- It is not once-only: every new chunk raises a new event (C5 probes
  this); once-only needs EPOLLONESHOT and a re-arm per event.
- As in epoll_loop: the set lives in the kernel, epoll_wait copies out only
  ready events, CPython allocates a maxevents array per call, unregister
  precedes close, and only the wakeup fd ends the wait.
"""

import select
from time import perf_counter_ns

from .core import CLOSED, READ, Server

NAME = "epoll-et"
FD_LIMIT = None
EDGE = True          # the core reads/writes until EAGAIN and retries on resume
MAXEVENTS = 1024     # fixed; CPython allocates the array per call (selectmodule.c)
_ALL = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET

_READABLE = ~select.EPOLLOUT   # anything but EPOLLOUT (incl. HUP/ERR) wakes the reader
_WRITABLE = ~select.EPOLLIN    # anything but EPOLLIN wakes the writer


def run(server: Server) -> None:
    ep = select.epoll()
    registered: set[int] = set()

    def apply(changes):
        for fd, want in changes:
            if want == CLOSED:
                ep.unregister(fd)            # forget fd before close() frees its number
                registered.discard(fd)
                apply(server.close(fd))      # may accept at once after EMFILE
            elif fd not in registered:
                ep.register(fd, _ALL)        # once, for both directions
                registered.add(fd)

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
                if fd in registered:    # may have closed earlier in this batch
                    changes = on_ready(fd, ev & _READABLE, ev & _WRITABLE)
                    if changes:
                        apply(changes)
    finally:
        ep.close()
