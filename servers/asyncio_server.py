"""Reference echo server: an asyncio Protocol, on the stock loop or on uvloop's.

What people deploy instead of a hand-written loop. Not one of the equivalent
four; one Protocol class runs on both loops, so `asyncio` and `uvloop`
differ only in the loop underneath. Facts that shape it:

- Stock asyncio (`asyncio`) is _UnixSelectorEventLoop over
  selectors.EpollSelector: level-triggered epoll behind the selectors layer
  CLAIMS.md keeps out of the equivalent servers. Each ready event becomes a
  Handle in the ready queue and runs after the wait; select() passes
  maxevents = the number of registered fds, so that array grows with idle
  connections.
- Stock asyncio reads with sock.recv(transport.max_size), 256 KiB in
  CPython 3.11 (selector_events._SelectorTransport.max_size): every read
  allocates a bytes object that large and shrinks it to what arrived. glibc
  serves 256 KiB with mmap, the shrink is an mremap, so the chunk stays
  mmapped, is freed with munmap and never raises the dynamic mmap
  threshold: strace shows mmap + mremap + munmap for every 64-byte
  message. The core reads 64 KiB from the heap. `read_size_bytes` records
  the value read from the first transport.
- uvloop (`uvloop`) runs libuv's loop in C. It reads into one loop-wide
  buffer (loop._recv_buffer, UV_STREAM_RECV_BUF_SIZE) and copies only what
  arrived into bytes. That size is compiled in and invisible from Python,
  so `read_size_bytes` comes from the package's own includes/consts.pxi,
  and `max_read_bytes_seen` (the largest chunk delivered) cross-checks it.
- transport.write sends at once and buffers only what the kernel refused,
  both loops (selector_events write; uvloop _initiate_write -> uv_try_write),
  as the core does.
- Back-pressure as in the core: set_write_buffer_limits(high=HIGH_WATER,
  low=0) makes the transport call pause_writing above the mark and
  resume_writing once drained, and the protocol pauses and resumes reading.
- Half-close: eof_received returns None, so the transport closes after
  flushing what is buffered.
- The loop's wait call (epoll_wait) is not ours to time: wait_* are null and
  `wait_note` says so.
- EMFILE on accept is the loop's business, so accept_paused is null. Stock
  asyncio removes the listener, retries after 1 s, and reports each failed
  accept to the exception handler; in 3.11 it goes on calling accept up to
  `backlog` times after the first failure (python/cpython#151615), each
  with a logged traceback. Those reports are counted in
  `accept_emfile_errors` and kept off stderr (a full stderr pipe would
  stall the loop). uvloop gets libuv's EMFILE trick: it frees a spare
  descriptor, accepts the waiting connections and closes them at once, so
  those clients see EOF or a reset and the protocol never sees them.
- bytes_out = bytes given to transport.write minus what open transports
  still buffer (bytes_buffered). A reset drops its transport's buffer
  unseen: both loops clear it before connection_lost runs, so after resets
  bytes_out may exceed what the kernel took, and bytes_dropped is null
  (not 0) with `bytes_note` saying why.
- Signals arrive through loop.add_signal_handler (set_wakeup_fd underneath).
  uvloop listens only while a run call is active (loop.pyx,
  _setup_or_resume_signals / _pause_signals): a signal in between is kept
  until the next one. So the server runs one run_until_complete from start
  to stop, and signals are blocked from before READY until the loop runs.
"""

from __future__ import annotations

import os
import signal
import socket

from .core import _NO_FDS, _RESET, BACKLOG, HIGH_WATER, Stats, append_snapshot, listen

NAMES = ("asyncio", "uvloop")
_STOP = (signal.SIGTERM, signal.SIGINT)


def new_loop(name: str):
    """The stock event loop or uvloop's; imported here so `servers` loads neither."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise RuntimeError("uvloop is not installed: pip install uvloop") from None
        return uvloop.new_event_loop()
    import asyncio
    return asyncio.new_event_loop()


def read_size(transport) -> tuple[int | None, str]:
    """How many bytes one read asks for, and where that number came from."""
    size = getattr(transport, "max_size", None)         # stock: the recv() argument
    if size is not None:
        return size, f"{type(transport).__name__}.max_size"
    import uvloop                                        # compiled in: read its source
    path = os.path.join(os.path.dirname(uvloop.__file__), "includes", "consts.pxi")
    try:
        with open(path) as f:
            for line in f:
                if line.split("=")[0].strip() == "UV_STREAM_RECV_BUF_SIZE":
                    return int(line.split("=")[1].split("#")[0]), \
                        "uvloop includes/consts.pxi UV_STREAM_RECV_BUF_SIZE"
    except (OSError, ValueError):
        pass
    return None, f"not readable from {type(transport).__name__}"


class EchoProtocol:
    """One connection: echo what arrives; stop reading while the echo is backed up.

    Duck-typed asyncio.Protocol (both loops accept any object with these methods),
    so this module imports asyncio only when the stock loop is asked for.
    """

    __slots__ = ("server", "transport")

    def __init__(self, server: AsyncioServer):
        self.server = server
        self.transport = None

    def connection_made(self, transport) -> None:
        s = self.server
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=0)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.stats.accepted += 1
        s.live.add(self)
        if len(s.live) > s.peak_connections:
            s.peak_connections = len(s.live)
        if s.read_size is None:
            s.read_size, s.read_size_source = read_size(transport)

    def data_received(self, data: bytes) -> None:
        s = self.server
        n = len(data)
        s.stats.bytes_in += n
        if n > s.max_read:
            s.max_read = n
        self.transport.write(data)           # sends at once; buffers only the rest
        s.written += n

    def eof_received(self) -> None:
        return None                          # close once the buffer is flushed

    def pause_writing(self) -> None:         # buffer above HIGH_WATER: stop reading
        self.transport.pause_reading()

    def resume_writing(self) -> None:        # drained (low = 0): read again
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        s = self.server
        s.live.discard(self)
        if s.stopping:
            return                           # already counted as shutdown
        if exc is None:
            reason = "peer"
        elif isinstance(exc, OSError) and exc.errno in _RESET:
            reason = "reset"
        else:
            reason = "error"
        s.stats.closed[reason] += 1


class AsyncioServer:
    """A listening socket and an event loop, stock or uvloop.

    Same interface as core.Server for `python -m servers`: `address`,
    run(server) until SIGTERM/SIGINT, shutdown() -> statistics dict.
    """

    def __init__(self, mechanism: str, host: str = "127.0.0.1", port: int = 0, *,
                 snapshots: str | None = None):
        self.stats = Stats(mechanism)
        self.snapshots = snapshots
        self.loop = new_loop(mechanism)
        self.live: set[EchoProtocol] = set()
        self.stopping = False
        self.written = 0                     # bytes given to transport.write
        self.max_read = 0                    # largest chunk data_received was given
        self.peak_connections = 0
        self.read_size: int | None = None
        self.read_size_source = "no connection yet"
        self.accept_emfile_errors = 0
        self.server = None
        self.loop.set_exception_handler(self._on_loop_error)

        try:
            self.listener = listen(host, port)
        except BaseException:
            self.loop.close()
            raise
        self.address = self.listener.getsockname()[:2]
        # Opened once: at EMFILE there would be no descriptor left to open it.
        self.snapshot_file = open(snapshots, "a", buffering=1) if snapshots else None
        self.stopped = self.loop.create_future()    # SIGTERM/SIGINT resolve it
        for sig in _STOP:
            self.loop.add_signal_handler(sig, self._stop)
        # SIGUSR1 always handled: without --snapshots it is ignored, never fatal
        self.loop.add_signal_handler(signal.SIGUSR1, self.write_snapshot)
        # Held from before READY until serve() runs, when the loop listens for them.
        self.signals = set(_STOP) | {signal.SIGUSR1}
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)

    def _stop(self) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)

    def _on_loop_error(self, loop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _NO_FDS:
            self.accept_emfile_errors += 1   # a failed accept; the loop retries in 1 s
            return
        loop.default_exception_handler(context)

    def stats_dict(self) -> dict:
        self.stats.bytes_buffered = sum(p.transport.get_write_buffer_size() for p in self.live)
        self.stats.bytes_out = self.written - self.stats.bytes_buffered
        snap = self.stats.to_dict()
        loop = self.loop
        selector = getattr(loop, "_selector", None)
        snap.update(
            wait_calls=None, wait_ns_total=None, wait_ns_hist=None,
            events_total=None, events_per_call_hist=None,
            wait_note="the event loop's own wait call is not instrumented",
            accept_paused=None, accept_emfile_errors=self.accept_emfile_errors,
            bytes_dropped=None,
            bytes_note="a reset transport's buffer is discarded by the loop unseen: "
                       "bytes_out counts it as sent",
            peak_registered=None,
            peak_connections=self.peak_connections,
            read_size_bytes=self.read_size, read_size_source=self.read_size_source,
            max_read_bytes_seen=self.max_read,
            event_loop=f"{type(loop).__module__}.{type(loop).__qualname__}"
                       + (f" ({type(selector).__name__})" if selector else ""),
        )
        return snap

    def write_snapshot(self) -> None:
        if self.snapshot_file is not None:
            append_snapshot(self.snapshot_file, self.stats_dict())

    def shutdown(self) -> dict:
        """Count open connections as `shutdown`, take the stats, close everything."""
        self.stopping = True
        self.stats.closed["shutdown"] += len(self.live)
        stats = self.stats_dict()            # before abort: buffered bytes are unsent
        for p in list(self.live):
            p.transport.abort()
        if self.server is not None:
            self.server.close()
        else:
            self.listener.close()
        self.loop.close()                    # not run again: pending accept retries are dropped
        if self.snapshot_file:
            self.snapshot_file.close()
        return stats


def make_server(mechanism: str, host: str, port: int, *, snapshots: str | None = None):
    return AsyncioServer(mechanism, host, port, snapshots=snapshots)


def run(server: AsyncioServer) -> None:
    server.loop.run_until_complete(serve(server))


async def serve(server: AsyncioServer) -> None:
    """Serve until SIGTERM/SIGINT, all inside one run call of the loop."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, server.signals)   # held ones arrive now
    server.server = await server.loop.create_server(
        lambda: EchoProtocol(server), sock=server.listener, backlog=BACKLOG)
    await server.stopped
