"""Burst mode: N connections held, B bursts that each make K of them readable at one instant.

The `ready` experiment asks what a wait call costs when a chosen share of
the registered descriptors is ready, whatever the load generator's speed.
A client that writes K messages one after another cannot promise that: a
fast server serves the first before the last is written. So the server is
gated. Per burst:

1. SIGSTOP the server and wait until /proc shows every one of its threads
   stopped (kill() returns before the target stops: a server woken by the
   signal could still return from its wait call with the first message);
2. write one message on each of K connections spread evenly over the N
   (the spread turns by one connection per burst);
3. SIGCONT: the server's next wait call finds all K ready at once (select
   and poll restart their call, epoll_wait is retried by CPython after its
   EINTR, so the call the server records is the one that returns them);
4. read and verify every echo; the burst's drain time runs from SIGCONT
   to the last echo verified (the writing in step 2 happens while the
   server cannot run, so it is not the server's time), each message's
   latency from SIGCONT to its own echo;
5. wait until every server thread sleeps again, so the next burst starts
   from a server that has finished this one.

K = 0 is the control: stop and continue alone, so the report can show
what the gate costs the server. Before the bursts, one message echoed on
every connection proves that the server accepted and registered all N,
and a few unmeasured bursts warm its paths. SIGUSR1 to the server (its
--snapshots) brackets the measured bursts, so the server's CPU, wait calls
and events come from its own counters, after it has settled.

Every phase has a deadline (CONNECT_DEADLINE_S, PHASE_DEADLINE_S and the
gate's own, loadgen/gate.py); a server that dies or stalls fails the run, and on
every exit path the server is sent SIGCONT, so it is never left stopped.
One process does it all: the server's work per burst does not depend on
how fast the load generator is.

The JSON document is the load generator's (loadgen/run.py, format 1) with
`mode` "bursts" and a `bursts` object (loadgen/burst_doc.py).
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import struct
import time
from array import array
from dataclasses import asdict, dataclass

from servers.sysutil import utc_now

from . import burst_doc
from .gate import Failed, Gate
from .spec import HEADER_BYTES, MAX_MSG_SIZE, MIN_MSG_SIZE, SpecError

WARMUP_BURSTS = 2
CONNECT_DEADLINE_S = 10.0      # the whole connect phase
CONNECT_TIMEOUT_S = 2.0        # one connect
PHASE_DEADLINE_S = 5.0         # the warm-up echo pass, one burst's echoes, a settle
FD_RESERVE = 32


@dataclass(frozen=True)
class BurstSpec:
    host: str
    port: int
    connections: int
    burst_size: int
    bursts: int
    signal_pid: int
    msg_size: int = 64
    warmup_bursts: int = WARMUP_BURSTS
    cpu: int | None = None

    def to_config(self) -> dict:
        return {**asdict(self), "target": f"{self.host}:{self.port}", "active": self.burst_size}


def check(spec: BurstSpec) -> BurstSpec:
    """Raise SpecError naming the option and the fix; return spec unchanged."""
    if spec.connections < 1:
        raise SpecError(f"--connections {spec.connections}: give at least 1")
    if not 0 <= spec.burst_size <= spec.connections:
        raise SpecError(f"--burst-size {spec.burst_size}: give 0 (the stop/continue control) "
                        f"to --connections ({spec.connections})")
    if spec.bursts < 1:
        raise SpecError(f"--bursts {spec.bursts}: give at least 1")
    if spec.warmup_bursts < 0:
        raise SpecError(f"--warmup-bursts {spec.warmup_bursts}: give 0 or more")
    if not MIN_MSG_SIZE <= spec.msg_size <= MAX_MSG_SIZE:
        raise SpecError(f"--msg-size {spec.msg_size}: give {MIN_MSG_SIZE} to {MAX_MSG_SIZE} bytes")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and spec.connections + FD_RESERVE > hard:
        raise SpecError(f"--connections {spec.connections}: burst mode holds them in one process, "
                        f"and its descriptor limit is {hard}: give at most {hard - FD_RESERVE}")
    return spec


class Conn:
    __slots__ = ("index", "sock", "fd", "seq", "expect", "got", "echoed")

    def __init__(self, index: int, sock: socket.socket):
        self.index = index
        self.sock = sock
        self.fd = sock.fileno()
        self.seq = index << 40
        self.expect: bytes | None = None     # the message whose echo is due
        self.got = bytearray()
        self.echoed = 0


class Bursts:
    """One burst-mode run: connect, warm up, measure B bursts, check, report."""

    def __init__(self, spec: BurstSpec, address: tuple, family: int):
        self.spec = spec
        self.address, self.family = address, family
        self.pattern = bytes((i * 151 + 17) & 0xFF for i in range(spec.msg_size - HEADER_BYTES))
        self.pack = struct.Struct(f"<Q{len(self.pattern)}s").pack
        self.conns: list[Conn] = []
        self.by_fd: dict[int, Conn] = {}
        self.ep = select.epoll()
        self.gate = Gate(spec.signal_pid)
        self.errors = {k: 0 for k in ("refused", "connect_timeout", "no_fds", "connect_other",
                                      "reset", "closed_by_server", "short_read", "timeout",
                                      "corrupt", "other")}
        self.tx = self.rx = 0
        self.lat = array("q")
        self.drain = array("q")
        self.write_ns = array("q")
        self.stop_ns = array("q")
        self.connect_s = 0.0
        self.last_ns = 0                     # when the latest echo was verified
        self.signals = {"start_monotonic_s": None, "end_monotonic_s": None, "errors": []}

    # -- phases ---------------------------------------------------------------

    def run(self) -> dict:
        started = utc_now("milliseconds")
        failure, window = None, None
        try:
            self.connect()
            self.echo_all()
            for b in range(self.spec.warmup_bursts):
                self.burst(b, record=False)
            window = self.measure()
            self.final_check()
        except Failed as e:
            failure = str(e)
        finally:
            self.gate.cont()                     # never leave the server stopped
            for c in self.conns:
                c.sock.close()
            self.ep.close()
        return burst_doc.document(self, started, window, failure)

    def connect(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + CONNECT_DEADLINE_S
        for i in range(self.spec.connections):
            left = deadline - time.monotonic()
            if left <= 0:
                self.errors["connect_timeout"] += self.spec.connections - i
                break
            s = socket.socket(self.family, socket.SOCK_STREAM)
            s.settimeout(min(CONNECT_TIMEOUT_S, left))
            try:
                s.connect(self.address)
            except OSError as e:
                s.close()
                kind = ("refused" if e.errno == errno.ECONNREFUSED else "no_fds"
                        if e.errno in (errno.EMFILE, errno.ENFILE) else "connect_timeout"
                        if isinstance(e, TimeoutError) else "connect_other")
                self.errors[kind] += 1
                continue
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(i, s)
            self.conns.append(c)
            self.by_fd[c.fd] = c
            self.ep.register(c.fd, select.EPOLLIN)     # idle ones too: a server close wakes us
        self.connect_s = time.monotonic() - t0
        if len(self.conns) < self.spec.connections:
            raise Failed(f"only {len(self.conns)} of {self.spec.connections} connections opened "
                         f"({_kinds(self.errors)})")

    def echo_all(self) -> None:
        """One message echoed on every connection: the server accepted and registers all N."""
        for c in self.conns:
            self.send(c)
        self.collect(len(self.conns), None, "the warm-up echo on every connection")

    def measure(self) -> dict:
        self.settle_and_signal("start_monotonic_s")
        t0 = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        tx0, rx0 = self.tx, self.rx
        for b in range(self.spec.bursts):
            self.burst(self.spec.warmup_bursts + b, record=True)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        self.settle_and_signal("end_monotonic_s")
        t1 = time.monotonic()
        return {"start": t0, "end": t1, "tx": self.tx - tx0, "rx": self.rx - rx0,
                "user_s": ru1.ru_utime - ru0.ru_utime, "sys_s": ru1.ru_stime - ru0.ru_stime}

    def settle_and_signal(self, key: str) -> None:
        self.gate.settle()
        try:
            os.kill(self.spec.signal_pid, signal.SIGUSR1)
            self.signals[key] = time.monotonic()
        except OSError as e:
            self.signals["errors"].append(f"SIGUSR1 to {self.spec.signal_pid}: {e.strerror}")
            raise Failed(f"cannot signal the server: {e.strerror}") from None
        self.gate.settle()                       # the snapshot is written, the server waits again

    def burst(self, b: int, record: bool) -> None:
        n, k = self.spec.connections, self.spec.burst_size
        chosen = [self.conns[(j * n // k + b) % n] for j in range(k)]
        t_stop = time.monotonic_ns()
        self.gate.stop()
        t_write = time.monotonic_ns()
        for c in chosen:
            self.send(c)
        t_cont = time.monotonic_ns()
        self.gate.cont()
        if k:
            self.collect(k, t_cont if record else None, f"burst {b + 1} of {k}")
        if record:
            self.stop_ns.append(t_write - t_stop)
            self.write_ns.append(t_cont - t_write)
            if k:
                self.drain.append(self.last_ns - t_cont)
        self.gate.settle()

    # -- I/O --------------------------------------------------------------------

    def send(self, c: Conn) -> None:
        msg = self.pack(c.seq, self.pattern)
        c.seq += 1
        c.expect = msg
        try:
            sent = os.write(c.fd, msg)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.lost(c, e)
        if sent < len(msg):                      # an empty socket takes one small message
            raise Failed(f"connection {c.index}: the kernel took {sent} of {len(msg)} bytes")
        self.tx += sent

    def collect(self, due: int, t0_ns: int | None, what: str) -> None:
        """Read until `due` echoes are verified; latencies from t0_ns when recording."""
        size = self.spec.msg_size
        deadline = time.monotonic() + PHASE_DEADLINE_S
        poll, by_fd = self.ep.poll, self.by_fd
        while due:
            left = deadline - time.monotonic()
            if left <= 0:
                self.errors["timeout"] += 1
                raise Failed(f"{what}: {due} echoes still missing {PHASE_DEADLINE_S:g} s later")
            for fd, _ in poll(left, 1024):
                c = by_fd[fd]
                try:
                    data = os.read(fd, 2 * size)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self.lost(c, e)
                if not data:
                    self.errors["short_read" if c.got else "closed_by_server"] += 1
                    raise Failed(f"connection {c.index} closed by the server during {what}")
                self.rx += len(data)
                if c.expect is None:
                    self.errors["corrupt"] += 1
                    raise Failed(f"connection {c.index}: {len(data)} bytes nobody sent")
                c.got += data
                if len(c.got) < size:
                    continue
                now = time.monotonic_ns()
                if len(c.got) > size or c.got != c.expect:
                    self.errors["corrupt"] += 1
                    raise Failed(f"connection {c.index}: the echo differs from what was sent")
                c.got.clear()
                c.expect = None
                due -= 1
                if t0_ns is not None:
                    self.lat.append(now - t0_ns)
                    c.echoed += 1
                self.last_ns = now

    def lost(self, c: Conn, e: OSError):
        kind = "reset" if e.errno in (errno.ECONNRESET, errno.EPIPE) else "other"
        self.errors[kind] += 1
        raise Failed(f"connection {c.index}: {e.strerror}")

    def final_check(self) -> None:
        """Every connection still open, nothing unexpected waiting on any."""
        for c in self.conns:
            try:
                data = c.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError as e:
                self.lost(c, e)
            if not data:
                self.errors["closed_by_server"] += 1
                raise Failed(f"connection {c.index} was closed by the server")
            self.errors["corrupt"] += 1
            raise Failed(f"connection {c.index}: bytes nobody sent")

def _kinds(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no error recorded"


def run(spec: BurstSpec, address: tuple, family: int) -> dict:
    """One burst-mode run; returns the JSON document (see the module docstring)."""
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    return Bursts(spec, address, family).run()
