"""Echo server loop on poll(2).

Facts about poll that shape this loop:

- The kernel walks every registered pollfd on every call and calls each
  socket's poll function (fs/select.c do_poll): the cost grows with the
  registered descriptors, not with the ready ones. The loop does nothing
  about that; it is what is being measured.
- The array has no size limit but RLIMIT_NOFILE: nfds above it is EINVAL
  (poll(2)). The kernel copies it in page-sized chunks chained in a list.
- CPython keeps a dict fd -> events and rebuilds its whole pollfd array on
  the first poll() after any register/modify/unregister (selectmodule.c,
  update_ufd_array): O(n) user time per change. So the loop calls modify
  only when the mask really changes (write interest only while bytes are
  unsent), never per message.
- POLLHUP and POLLERR are reported whatever was asked and wake both
  directions (as Lib/selectors.py does); the core then hits the error and
  closes.
- With no timeout, PEP 475 retries the call after EINTR, so only the
  wakeup fd, written by the signal handler, ends the wait.
"""

import select
from time import perf_counter_ns

from .core import CLOSED, READ, WRITE, Server

NAME = "poll"
FD_LIMIT = None
_FLAGS = {0: 0, READ: select.POLLIN, WRITE: select.POLLOUT,
          READ | WRITE: select.POLLIN | select.POLLOUT}

_READABLE = ~select.POLLOUT   # anything but POLLOUT (incl. HUP/ERR) wakes the reader
_WRITABLE = ~select.POLLIN    # anything but POLLIN wakes the writer


def run(server: Server) -> None:
    poller = select.poll()
    interest: dict[int, int] = {}            # fd -> mask the kernel has now

    def apply(changes):
        for fd, want in changes:
            have = interest.get(fd)
            if want == have:
                continue                     # no call when nothing changed
            if want == CLOSED:
                poller.unregister(fd)        # forget fd before close() frees its number
                del interest[fd]
                apply(server.close(fd))      # a freed fd may resume a paused accept
            elif have is None:
                poller.register(fd, _FLAGS[want])
                interest[fd] = want
            else:
                poller.modify(fd, _FLAGS[want])
                interest[fd] = want

    apply([(server.listen_fd, READ), (server.wakeup_fd, READ)])
    on_ready, stats = server.on_ready, server.stats
    clock, wait_hist, events_hist = perf_counter_ns, stats.wait_hist, stats.events_hist
    while server.running:
        t0 = clock()
        ready = poller.poll()                # no timeout: signals arrive on wakeup_fd
        wait_ns = clock() - t0
        stats.wait_ns_total += wait_ns   # inline: a call would cost more (core.Stats)
        wait_hist[wait_ns.bit_length()] += 1
        events_hist[len(ready)] += 1
        for fd, ev in ready:
            if fd in interest:      # may have closed earlier in this batch
                changes = on_ready(fd, ev & _READABLE, ev & _WRITABLE)
                if changes:
                    apply(changes)
