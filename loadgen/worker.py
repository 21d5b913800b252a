"""One load-generator process: its share of connections and its own epoll loop.

The parent forks P of these. Each one:

1. opens its connections (loadgen.connect) and sends ("connected", {...});
2. waits for ("go", t0_ns), t0 on CLOCK_MONOTONIC, shared by all workers;
3. runs warmup [t0, t0+W), window [t0+W, t0+W+D) and a drain of at most
   DRAIN_S in which nothing new is sent and in-flight echoes come back
   (loadgen.loop);
4. checks its idle connections are still open and sends ("result", {...}).

EOF on the control pipe means the parent is gone and the worker exits at
once; PR_SET_PDEATHSIG covers a parent killed by SIGKILL.

Framing: every message is msg_size bytes: an 8-byte little-endian header,
the connection index << 40 | sequence number, then a fixed pattern. Echoes
come back in order on each connection, so the next expected message is
known: verification is one bytes comparison against that message: with one
message in flight (K=1) the one last written, else rebuilt by struct.pack.
The Worker's methods are the paths off the hot loop: partial reads and
writes, errors, the open-loop release of owed messages.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import traceback
from array import array

from servers.sysutil import die_with_parent

from . import latency
from .connect import CONNECT_KINDS, Conn, open_connections
from .loop import RESET, RUN_KINDS, TICK_NS, ParentGone, run_loop
from .spec import HEADER_BYTES, LoadSpec

GO_DEADLINE_S = 10.0           # parent silent this long after "connected": give up

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT


def main(index: int, spec: LoadSpec, address: tuple, family: int, ctrl, parent_pid: int) -> None:
    """Process entry point: never raises, always exits."""
    die_with_parent(parent_pid)               # else the control pipe's EOF still ends us
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        if spec.cpus:
            os.sched_setaffinity(0, {spec.cpus[index % len(spec.cpus)]})
        Worker(index, spec, address, family, ctrl).run()
    except ParentGone:
        code = 1
    except BaseException:
        code = 1
        try:
            ctrl.send(("error", traceback.format_exc(limit=8)))
        except OSError:
            pass
    sys.stdout.flush()
    os._exit(code)


class Worker:
    def __init__(self, index: int, spec: LoadSpec, address: tuple, family: int, ctrl):
        self.index = index
        self.spec = spec
        self.address = address
        self.family = family
        self.ctrl = ctrl
        self.conn_count, self.active_count = spec.share(index)
        self.base = sum(spec.share(i)[0] for i in range(index))   # global index of conn 0
        self.size = spec.msg_size
        self.pattern = bytes((i * 151 + 17) & 0xFF for i in range(self.size - HEADER_BYTES))
        # message = pack(header, pattern): one C call builds (or rebuilds, to verify) it
        self.pack = struct.Struct(f"<Q{len(self.pattern)}s").pack
        self.ep = select.epoll()
        self.by_fd: list[Conn | None] = []    # fd -> Conn (list: cheapest lookup)
        self.conns: list[Conn] = []           # established
        self.active: list[Conn] = []          # established and active
        self.errors = dict.fromkeys(CONNECT_KINDS + RUN_KINDS, 0)
        self.retries = 0
        self.connect_s = 0.0
        # counters updated off the hot path (the hot loop keeps its own in locals)
        self.msgs = self.rx = self.tx = 0
        self.open_count = 0                   # established and not lost
        self.backlog = 0                      # open loop: owed messages in this worker
        self.unanswered = 0
        self.backlog_overflow = 0
        self.lat = array("q")                 # latencies (ns) of the window, not in hist
        self.hist = latency.new_histogram()

    # -- protocol with the parent ------------------------------------------

    def run(self) -> None:
        open_connections(self)
        self.ctrl.send(("connected", {"pid": os.getpid(), "established": len(self.conns),
                                      "connect_s": self.connect_s,
                                      "errors": dict(self.errors), "retries": self.retries}))
        if not self.ctrl.poll(GO_DEADLINE_S):
            raise ParentGone()
        try:
            msg = self.ctrl.recv()
        except EOFError:
            raise ParentGone() from None
        if msg[0] != "go":
            return                            # ("abort",): nothing to measure
        result = self.measure(msg[1])
        self.ctrl.send(("result", result))

    def measure(self, t0: int) -> dict:
        spec = self.spec
        ws = t0 + int(spec.warmup_s * 1e9)
        we = ws + int(spec.duration_s * 1e9)
        ticks = max(1, -(-int(spec.duration_s * 1e9) // TICK_NS))
        timeline = [[0, 0] for _ in range(ticks)]        # per tick: [messages, bytes]
        ctrl_fd = self.ctrl.fileno()
        self.by_fd[ctrl_fd] = None
        self.ep.register(ctrl_fd, _IN)                   # EOF: the parent is gone
        result = run_loop(self, t0, ws, we, timeline)
        self.ep.unregister(ctrl_fd)
        result.update(self.final_check())
        result["timeline"] = [(round(tick * TICK_NS / 1e9, 1), msgs, nbytes)
                              for tick, (msgs, nbytes) in enumerate(timeline)]
        return result

    def written(self) -> int:
        """Messages handed to the sockets so far (the kernel may not have taken all)."""
        return sum(conn.wseq - (conn.index << 40) for conn in self.active)

    # -- off the hot path ------------------------------------------------------

    def build(self, conn: Conn, count: int) -> bytes:
        """The next count messages of conn, as bytes."""
        seq, pattern, pack = conn.wseq, self.pattern, self.pack
        conn.wseq = seq + count
        if count == 1:
            conn.last = pack(seq, pattern)
            return conn.last
        return b"".join([pack(seq + i, pattern) for i in range(count)])

    def send_new(self, conn: Conn, count: int, now: int) -> None:
        """Closed loop: put count new messages in flight, sent now."""
        if conn.sock is None:
            return
        conn.due.extend([now] * count)
        self.send_bytes(conn, self.build(conn, count))

    def release(self, conn: Conn) -> None:
        """Open loop: write owed messages while the in-flight cap allows."""
        count = min(len(conn.owed), self.spec.pipeline - len(conn.due))
        if count <= 0:
            return
        for _ in range(count):
            conn.due.append(conn.owed.popleft())
        self.backlog -= count
        self.send_bytes(conn, self.build(conn, count))

    def send_bytes(self, conn: Conn, data: bytes) -> None:
        if conn.out is not None:
            conn.out += data                        # behind what the kernel has not taken
            return
        try:
            sent = os.write(conn.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.lose(conn, "reset" if e.errno in RESET else "other")
            return
        self.tx += len(data)
        if sent < len(data):
            self.defer(conn, data, sent)

    def defer(self, conn: Conn, data: bytes, sent: int) -> None:
        """The kernel took `sent` bytes of data: keep the rest, ask for EPOLLOUT.

        Whoever counted len(data) as sent is corrected here; flush counts the rest.
        """
        self.tx -= len(data) - sent
        conn.out = bytearray(memoryview(data)[sent:])
        self.ep.modify(conn.fd, _IN | _OUT)

    def flush(self, conn: Conn) -> None:
        try:
            sent = os.write(conn.fd, conn.out)
        except BlockingIOError:
            return
        except OSError as e:
            self.lose(conn, "reset" if e.errno in RESET else "other")
            return
        self.tx += sent
        del conn.out[:sent]
        if not conn.out:
            conn.out = None
            self.ep.modify(conn.fd, _IN)

    def receive(self, conn: Conn, data: bytes, now: int) -> int:
        """General receive: any split of the stream. Returns whole messages consumed."""
        msg_size, pattern, pack = self.size, self.pattern, self.pack
        if conn.rbuf is None:
            conn.rbuf = bytearray(data)
        else:
            conn.rbuf += data
        buf = conn.rbuf
        whole = len(buf) // msg_size
        if whole > len(conn.due):
            self.errors["corrupt"] += whole - len(conn.due)   # more bytes than were sent
            whole = len(conn.due)
            del buf[whole * msg_size:]
        done = 0
        for i in range(whole):
            sent_ns = conn.due.popleft()
            if buf[i * msg_size:(i + 1) * msg_size] == pack(conn.rseq, pattern):
                self.lat.append(now - sent_ns)
                done += 1
            else:
                self.errors["corrupt"] += 1
                conn.bad += 1
            conn.rseq += 1
        del buf[:whole * msg_size]
        if not buf:
            conn.rbuf = None
        self.msgs += done
        return whole                                # corrupt ones are replaced too

    def unexpected(self, conn: Conn) -> None:
        """Bytes on an idle connection: the server sent what nobody asked for."""
        self.errors["corrupt"] += 1

    def lose(self, conn: Conn, kind: str) -> None:
        """The connection is gone (reset, closed by the server...): count it, forget it."""
        self.errors[kind] += 1
        if conn.due:
            self.unanswered += len(conn.due)
        self.backlog -= len(conn.owed)
        conn.due.clear()
        conn.owed.clear()
        self.ep.unregister(conn.fd)
        self.by_fd[conn.fd] = None
        conn.sock.close()
        conn.sock = None
        self.open_count -= 1

    def probe(self, conn: Conn) -> None:
        """A readable connection nothing was asked of: closed, reset, or unexpected bytes."""
        try:
            data = os.read(conn.fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.lose(conn, "reset" if e.errno in RESET else "other")
            return
        if data:
            self.unexpected(conn)
        else:
            self.lose(conn, "closed_by_server")

    def final_check(self) -> dict:
        """Is each idle connection still open? A read that would block says yes."""
        idle_open = active_open = 0
        for conn in self.conns:
            if conn.sock is not None and not conn.active:
                self.probe(conn)
            if conn.sock is not None:
                if conn.active:
                    active_open += 1
                else:
                    idle_open += 1
        return {
            "connections": {
                "requested": self.conn_count,
                "established": None,                # filled by the parent from "connected"
                "active": self.active_count,
                "idle": self.conn_count - self.active_count,
                "active_established": len(self.active),
                "idle_open_at_end": idle_open,
                "active_open_at_end": active_open,
                "echoing": sum(1 for conn in self.active
                               if conn.rseq - (conn.index << 40) > conn.bad),
            },
            "errors": dict(self.errors),
        }
