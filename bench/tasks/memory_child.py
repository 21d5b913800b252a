"""The memory task's child processes: the idle client (hold) and the bare control server (bare).

Both run as `python -m bench.tasks.memory hold|bare` (bench.tasks.memory.main).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import time


def hold(host: str, port: int, n: int) -> int:
    """Client: open n connections (blocking), print READY, hold until SIGTERM, then reset them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    socks, failure = [], None
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5.0)
        try:
            s.connect((host, port))
        except OSError as e:
            s.close()
            failure = errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
            break
        socks.append(s)
    print(f"READY {len(socks)} {failure or 'ok'} {os.getpid()}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)   # RST: no TIME_WAIT
        s.close()
    return 0


def bare() -> int:
    """Control server: accept and keep every connection, no multiplexer; exit on SIGTERM."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    host, port = listener.getsockname()
    print(f"READY {host} {port} {os.getpid()}", flush=True)
    held = []
    while True:
        try:
            held.append(listener.accept()[0])
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                time.sleep(0.1)             # full: keep what we hold, the reading shows it
                continue
            raise
