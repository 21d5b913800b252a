"""Equivalent echo servers over one shared core, one module per readiness mechanism.

MECHANISMS are the equivalent servers that sweeps and tests compare: select,
poll, epoll, epoll-et and io_uring (multishot poll; refused with the reason
where the kernel or the liburing package does not provide it).
REFERENCES are what the comparison is read against, labelled as such in every
table: the seed's per-message epoll_ctl toggle, a thread per connection, and
asyncio on its stock loop and on uvloop (one module serves both names).
"""

from . import (asyncio_server, epoll_et_loop, epoll_loop, epoll_toggle_loop, poll_loop,
               select_loop, threads_server, uring_loop)

MECHANISMS = {m.NAME: m for m in (select_loop, poll_loop, epoll_loop, epoll_et_loop, uring_loop)}
REFERENCES = {epoll_toggle_loop.NAME: epoll_toggle_loop, threads_server.NAME: threads_server,
              **{name: asyncio_server for name in asyncio_server.NAMES}}
