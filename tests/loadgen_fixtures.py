"""Misbehaving echo servers for the load-generator tests, on real sockets.

    python tests/loadgen_fixtures.py flip         echo, but every 1000th byte of
                                                  each connection's stream inverted
    python tests/loadgen_fixtures.py stall AFTER  echo for AFTER seconds after the
                                                  first byte, then stop reading
                                                  (connections stay open)
    python tests/loadgen_fixtures.py hangup BYTES echo the first BYTES bytes of each
                                                  connection, then close it

Each prints `READY <host> <port> <pid>` like `python -m servers`, and runs
until killed. `FixtureServer` starts one from a test and kills it at the end.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time

FLIP_EVERY = 1000


class FixtureServer:
    """A fixture server in its own process group; `stop()` kills it."""

    def __init__(self, mode: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, __file__, mode, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(10):
                self.stop()
                raise AssertionError(f"fixture {mode}: no READY line within 10 s")
        word, host, port, pid = self.proc.stdout.readline().split()
        assert word == "READY"
        self.host, self.port, self.pid = host, int(port), int(pid)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def serve(mode: str, arg: float) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    position: dict[socket.socket, int] = {}   # conn -> bytes echoed so far
    first_byte = None
    print(f"READY 127.0.0.1 {listener.getsockname()[1]} {os.getpid()}", flush=True)
    while True:
        if mode == "stall" and first_byte is not None and time.monotonic() - first_byte > arg:
            held = list(position)             # keep every connection open...
            for conn in held:
                sel.unregister(conn)          # ...and stop reading
            time.sleep(3600)
        for key, _ in sel.select(0.05):
            if key.fileobj is listener:
                try:
                    while True:
                        conn, _ = listener.accept()
                        conn.setblocking(True)
                        sel.register(conn, selectors.EVENT_READ)
                        position[conn] = 0
                except BlockingIOError:
                    continue
            conn = key.fileobj
            data = conn.recv(65536)
            if not data:
                sel.unregister(conn)
                del position[conn]
                conn.close()
                continue
            if first_byte is None:
                first_byte = time.monotonic()
            if mode == "flip":
                buf = bytearray(data)
                start = position[conn]
                for i in range(-start % FLIP_EVERY, len(buf), FLIP_EVERY):
                    buf[i] ^= 0xFF
                data = bytes(buf)
            if mode == "hangup":
                data = data[:max(0, int(arg) - position[conn])]
            position[conn] += len(data)
            conn.sendall(data)
            if mode == "hangup" and position[conn] >= arg:
                sel.unregister(conn)          # what it echoed is whole; then it is gone
                del position[conn]
                conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
