"""Equivalent echo servers over one shared core, one module per readiness mechanism."""

from . import epoll_et_loop, epoll_loop, poll_loop, select_loop

MECHANISMS = {m.NAME: m for m in (select_loop, poll_loop, epoll_loop, epoll_et_loop)}
