"""Reference echo server: level-triggered epoll, interest toggled per message.

Not one of the equivalent four: it breaks "echo by sending at once" on
purpose, to price the style the seed explanation teaches. Facts that shape it:

- The seed's loop reads a message, switches the socket's interest to
  EPOLLOUT with epoll_ctl(EPOLL_CTL_MOD), writes when epoll says writable,
  then switches back to EPOLLIN. That is two epoll_ctl calls per message,
  even though a socket with room in its send buffer would have taken the
  echo at once (the equivalent epoll loop sends at once and calls
  epoll_ctl only when a send falls short).
- Its server does the deferring (SERVER, toggle_core.DeferredWriteServer):
  each recv is buffered whole and reading stops until it is sent, so
  on_ready asks for WRITE alone and then READ alone, and this loop,
  epoll_loop's own, turns every such change into one epoll_ctl.
  `diff epoll_loop.py` shows only the server, the counter and these words.
- ctl_calls counts every epoll_ctl issued (register, modify, unregister);
  it is in the statistics and the SIGUSR1 snapshots, so a window's count
  per echoed message is a difference of two lines.
- EPOLL_CTL_MOD re-polls the file (fs/eventpoll.c, ep_modify ->
  ep_item_poll): a socket that is already writable goes onto the ready
  list inside the call, so the next epoll_wait returns at once. The toggle
  therefore also costs one more pass of the loop per message, and
  wait_calls shows it.
- Each epoll_ctl takes the instance's mutex and looks the descriptor up
  in the red-black tree. Gammo, Brecht, Shukla and Pariag (OLS 2004) found
  these calls a large share of epoll's cost; CLAIMS.md C7 compares this
  server's CPU per message with epoll's, measured in the same run.
- Back-pressure needs nothing more: at most one recv (BUFSIZE, below
  HIGH_WATER) is ever unsent, because reading waits for the write.
- As in epoll_loop: level-triggered, one recv per readiness; EPOLLERR and
  EPOLLHUP wake both directions; unregister precedes close; MAXEVENTS is
  fixed; only the wakeup fd ends the wait.
"""

import select
from time import perf_counter_ns

from .core import CLOSED, READ, WRITE, Server
from .toggle_core import DeferredWriteServer

NAME = "epoll-toggle"
FD_LIMIT = None
SERVER = DeferredWriteServer   # buffers every echo and asks for WRITE, then READ
MAXEVENTS = 1024     # fixed; CPython allocates the array per call (selectmodule.c)
_FLAGS = {0: 0, READ: select.EPOLLIN, WRITE: select.EPOLLOUT,
          READ | WRITE: select.EPOLLIN | select.EPOLLOUT}

_READABLE = ~select.EPOLLOUT   # anything but EPOLLOUT (incl. HUP/ERR) wakes the reader
_WRITABLE = ~select.EPOLLIN    # anything but EPOLLIN wakes the writer


def run(server: Server) -> None:
    ep = select.epoll()
    interest: dict[int, int] = {}            # fd -> mask the kernel has now
    counters = server.stats.extra            # "ctl_calls" -> epoll_ctl calls so far
    counters["ctl_calls"] = 0

    def apply(changes):
        for fd, want in changes:
            have = interest.get(fd)
            if want == have:
                continue                     # no syscall when nothing changed
            counters["ctl_calls"] += 1       # each branch below is one epoll_ctl
            if want == CLOSED:
                ep.unregister(fd)            # forget fd before close() frees its number
                del interest[fd]
                apply(server.close(fd))      # a freed fd may resume a paused accept
            elif have is None:
                ep.register(fd, _FLAGS[want])
                interest[fd] = want
            else:
                ep.modify(fd, _FLAGS[want])  # per message: EPOLLOUT, then EPOLLIN again
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
