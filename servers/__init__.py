"""Equivalent echo servers over one shared core, one module per readiness mechanism.

MECHANISMS are the four equivalent servers that sweeps and tests compare.
REFERENCES are what the comparison is read against, labelled as such in every
table: the seed's per-message epoll_ctl toggle and a thread per connection.
"""

from . import epoll_et_loop, epoll_loop, epoll_toggle_loop, poll_loop, select_loop, threads_server

MECHANISMS = {m.NAME: m for m in (select_loop, poll_loop, epoll_loop, epoll_et_loop)}
REFERENCES = {epoll_toggle_loop.NAME: epoll_toggle_loop, threads_server.NAME: threads_server}
