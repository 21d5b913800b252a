"""Reference echo server: blocking sockets, one thread per connection.

The design the seed explanation offers as the alternative to readiness
multiplexing. Not one of the equivalent four; it shares only the statistics
format and the core's constants. Facts that shape it:

- There is no wait call. Each thread blocks in recv() on its own socket and
  the kernel wakes exactly that thread when data arrives, so wait_calls,
  wait_ns_total and events_total are 0, the histograms empty, and
  `wait_note` says why.
- The cost moves to the scheduler and, in CPython, to the GIL: every message
  is a thread wake-up, and the woken thread must take the GIL before it can
  touch the bytes. User and system CPU (getrusage covers every thread) show
  where it goes.
- Each thread costs a kernel task (a TID under kernel.pid_max and
  kernel.threads-max), about three memory mappings (its stack, the stack's
  guard page, and CPython 3.11's 16 KiB frame-stack chunk), counted against
  vm.max_map_count, and its socket's descriptor. The stack is reserved
  address space, touched only as used; threading.stack_size(STACK_BYTES)
  keeps the reservation small, and the statistics record it.
- A thread that ends through pthread_exit (CPython does so for a daemon
  thread caught by interpreter shutdown) makes glibc dlopen libgcc_s; with
  the mapping budget spent that fails and glibc aborts the process. So
  libgcc_s is loaded at start-up.
- When a thread cannot be started (pthread_create fails and Thread.start
  raises RuntimeError "can't start new thread"), that one connection is
  closed at once and counted in `rejected_threads`, with the reason in
  `rejected_threads_reason`; the others keep being served, as select does
  past FD_SETSIZE. So accepted == rejected_threads + sum(closed).
- The echo is sent with send() in a loop, not sendall(): sendall does not
  say how much went out before a reset, and every byte received must end
  in bytes_out, bytes_dropped (the rest of a chunk a reset cut short) or
  bytes_buffered (in a thread's hands when the statistics are taken).
- Back-pressure comes free: a blocking send blocks until the kernel takes the echo,
  so a thread stops reading while its client does not read, and at most one
  recv buffer per connection is held.
- Half-close needs nothing: when recv returns b"" every byte received has
  been echoed (sendall returned), so the thread closes.
- Signals are blocked in every thread (the mask is inherited at creation)
  and the main thread takes them with sigwait: SIGTERM/SIGINT stop,
  SIGUSR1 appends a snapshot. No worker's recv ever sees EINTR.
- Shutdown wakes each blocked thread with shutdown(SHUT_RDWR): recv returns
  b"" at once. close() from another thread would not wake it, and would free
  the descriptor number while the thread still uses it.
- EMFILE on accept never spins: the acceptor waits until a connection
  closes, counted in accept_paused.
- Counters: each connection's bytes are counted by its own thread in its own
  object and summed when statistics are taken, so no two threads write one
  counter (`+=` on a shared attribute is not atomic across a GIL switch).
"""

from __future__ import annotations

import errno
import signal
import socket
import threading
import time

from .core import _NO_FDS, _RESET, BUFSIZE, Stats, append_snapshot, listen

NAME = "threads"
STACK_BYTES = 256 * 1024    # per thread; the default is RLIMIT_STACK (8 MiB)
SHUTDOWN_WAIT_S = 10        # for threads to see their socket shut before the stats are taken
_STOP = (signal.SIGTERM, signal.SIGINT)


class _Conn:
    __slots__ = ("sock", "bytes_in", "bytes_out", "bytes_dropped")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.bytes_in = 0        # written only by this connection's thread
        self.bytes_out = 0
        self.bytes_dropped = 0


class ThreadServer:
    """A blocking listener, an acceptor thread and one thread per connection.

    Same interface as core.Server for `python -m servers`: `address`,
    run(server) until SIGTERM/SIGINT, shutdown() -> statistics dict.
    """

    def __init__(self, mechanism: str, host: str = "127.0.0.1", port: int = 0, *,
                 snapshots: str | None = None, max_threads: int | None = None):
        self.stats = Stats(mechanism)
        self.max_threads = max_threads          # --max-threads: a cap that fails like the kernel
        self.snapshots = snapshots
        self.lock = threading.Lock()            # guards conns, stopping, retired counters
        self.freed = threading.Condition(self.lock)   # a connection closed
        self.conns: dict[int, _Conn] = {}       # fd -> _Conn, one thread each
        self.stopping = False
        self.closes = 0                         # connections closed so far (wakes a paused accept)
        self.retired_in = self.retired_out = 0  # bytes of connections already closed
        self.retired_dropped = 0
        self.retired_buffered = 0               # in the hands of threads that outlived shutdown
        self.rejected_threads = 0
        self.rejected_reason: str | None = None
        self.peak_connections = 0
        self.failure: str | None = None

        self.listener = listen(host, port)
        self.address = self.listener.getsockname()[:2]

        # Before any thread exists, so every thread inherits the mask.
        # Opened once: at EMFILE there would be no descriptor left to open it.
        self.snapshot_file = open(snapshots, "a", buffering=1) if snapshots else None
        self.signals = set(_STOP) | {signal.SIGUSR1}   # ignored without --snapshots
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        # Never read it back with stack_size(): called without an argument it
        # sets the size to 0, the default (Modules/_threadmodule.c).
        threading.stack_size(STACK_BYTES)
        self.stack_bytes = STACK_BYTES
        try:
            import ctypes                       # here, so the other servers never load it
            ctypes.CDLL("libgcc_s.so.1")        # now, not at the first pthread_exit
        except OSError:
            pass                                # not glibc: nothing to preload

    # -- threads -------------------------------------------------------------

    def accept_loop(self) -> None:
        try:
            self._accept_loop()
        except Exception as e:                  # reported in the stats, never silent
            self.failure = f"acceptor: {type(e).__name__}: {e}"
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    def _accept_loop(self) -> None:
        stats = self.stats
        while True:
            closes = self.closes
            try:
                sock, _ = self.listener.accept()
            except OSError as e:
                if self.stopping:
                    return                      # shutdown() woke us
                if e.errno in _NO_FDS:
                    with self.lock:             # never spin on EMFILE: wait for a close
                        stats.accept_paused += 1
                        while self.closes == closes and not self.stopping:
                            self.freed.wait()   # (a close since the accept counts too)
                    continue
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue                    # the peer gave up in the backlog
                raise
            stats.accepted += 1
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock)
            fd = sock.fileno()
            with self.lock:
                if self.stopping:
                    sock.close()
                    stats.closed["shutdown"] += 1
                    return
                self.conns[fd] = conn
                self.peak_connections = max(self.peak_connections, len(self.conns))
            try:
                if self.max_threads is not None and len(self.conns) > self.max_threads:
                    raise RuntimeError(f"can't start new thread: --max-threads {self.max_threads}")
                threading.Thread(target=self.serve, args=(fd, conn), daemon=True).start()
            except (RuntimeError, MemoryError) as e:
                # No thread for this one: close it, keep serving the others.
                with self.lock:
                    del self.conns[fd]
                    self.rejected_threads += 1
                    self.rejected_reason = f"{type(e).__name__}: {e}"
                sock.close()

    def serve(self, fd: int, conn: _Conn) -> None:
        """One connection's thread: recv, echo, until EOF or an error."""
        sock = conn.sock
        reason = "error"
        try:
            while True:
                data = sock.recv(BUFSIZE)
                if not data:                    # FIN: all received is echoed already
                    reason = "peer"
                    break
                conn.bytes_in += len(data)
                unsent = memoryview(data)
                try:
                    while unsent:               # blocks while the client does not read
                        n = sock.send(unsent)
                        conn.bytes_out += n
                        unsent = unsent[n:]
                except OSError:
                    conn.bytes_dropped += len(unsent)
                    raise
        except OSError as e:
            reason = "reset" if e.errno in _RESET else "error"
        finally:
            with self.lock:
                if self.conns.pop(fd, None) is not None:
                    if self.stopping:
                        reason = "shutdown"     # woken by shutdown(), not by the peer
                    self.stats.closed[reason] += 1
                    self._retire(conn)
                    sock.close()
                self.closes += 1                # a descriptor is free again
                self.freed.notify_all()

    # -- statistics and shutdown --------------------------------------------

    def stats_dict(self) -> dict:
        with self.lock:
            live = list(self.conns.values())
            self.stats.bytes_in = self.retired_in + sum(c.bytes_in for c in live)
            self.stats.bytes_out = self.retired_out + sum(c.bytes_out for c in live)
            self.stats.bytes_dropped = self.retired_dropped + sum(c.bytes_dropped for c in live)
            # a live thread's chunk, received and not yet (all) sent
            self.stats.bytes_buffered = self.retired_buffered + sum(
                c.bytes_in - c.bytes_out - c.bytes_dropped for c in live)
            snap = self.stats.to_dict()
            snap.update(
                rejected_threads=self.rejected_threads,
                rejected_threads_reason=self.rejected_reason,
                peak_connections=self.peak_connections,
                threads_live=len(live),
            )
        snap.update(
            wait_calls=0, wait_ns_total=0, events_total=0,
            wait_ns_hist={}, events_per_call_hist={},
            wait_note="no wait call: each connection's thread blocks in recv()",
            peak_registered=None,               # nothing is registered with a poller
            thread_stack_bytes=self.stack_bytes,
        )
        return snap

    def _retire(self, conn: _Conn) -> None:
        """Fold a closed connection's counters into the server's (lock held)."""
        self.retired_in += conn.bytes_in
        self.retired_out += conn.bytes_out
        self.retired_dropped += conn.bytes_dropped

    def write_snapshot(self) -> None:
        if self.snapshot_file is not None:
            append_snapshot(self.snapshot_file, self.stats_dict())

    def shutdown(self) -> dict:
        """Wake and close every connection (counted as `shutdown`), return the stats."""
        with self.lock:
            self.stopping = True
            live = list(self.conns.values())
            self.freed.notify_all()             # an acceptor paused on EMFILE gives up
        for conn in live:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)    # recv/sendall return at once
            except OSError:
                pass
        try:
            self.listener.shutdown(socket.SHUT_RDWR)    # Linux: wakes a blocked accept()
        except OSError:
            pass
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        with self.lock:
            while self.conns and time.monotonic() < deadline:
                self.freed.wait(0.1)
            for conn in self.conns.values():    # threads that did not finish in time
                self.stats.closed["shutdown"] += 1
                self.retired_buffered += conn.bytes_in - conn.bytes_out - conn.bytes_dropped
                self._retire(conn)
                conn.sock.close()
            self.conns.clear()
        self.listener.close()
        if self.snapshot_file:
            self.snapshot_file.close()
        return self.stats_dict()               # signals stay blocked: a second SIGTERM waits


def make_server(mechanism: str, host: str, port: int, *, snapshots: str | None = None,
                max_threads: int | None = None):
    return ThreadServer(mechanism, host, port, snapshots=snapshots, max_threads=max_threads)


def run(server: ThreadServer) -> None:
    """Start the acceptor; the main thread only takes signals."""
    threading.Thread(target=server.accept_loop, name="acceptor", daemon=True).start()
    while True:
        sig = signal.sigwait(server.signals)
        if sig == signal.SIGUSR1:
            server.write_snapshot()
        else:
            break
    if server.failure:
        raise RuntimeError(server.failure)
