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

Every phase has a deadline (CONNECT_DEADLINE_S, STOP_DEADLINE_S,
PHASE_DEADLINE_S); a server that dies or stalls fails the run, and on
every exit path the server is sent SIGCONT, so it is never left stopped.
One process does it all: the server's work per burst does not depend on
how fast the load generator is.

The JSON document is the load generator's (loadgen/run.py, format 1) with
`mode` "bursts" and a `bursts` object: {count, size, warmup, completed,
drain_us (p50, p90, p99, p999, max, mean), drain_hdr, write_us and stop_us
({p50, max}: writing one burst, SIGSTOP until stopped)}. `saturated` is
always false: here the load generator's speed sets no measure.
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

from . import latency
from .spec import HEADER_BYTES, MAX_MSG_SIZE, MIN_MSG_SIZE, SpecError

FORMAT = 1
WARMUP_BURSTS = 2
CONNECT_DEADLINE_S = 10.0      # the whole connect phase
CONNECT_TIMEOUT_S = 2.0        # one connect
STOP_DEADLINE_S = 2.0          # SIGSTOP until every server thread is seen stopped
PHASE_DEADLINE_S = 5.0         # the warm-up echo pass, one burst's echoes, a settle
FD_RESERVE = 32
POLL_S = 20e-6                 # between two reads of /proc while waiting for a state
_STOPPED, _SLEEPING = frozenset("Tt"), frozenset("S")


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


class Failed(Exception):
    """A phase that could not finish: the message says which and why."""


def thread_states(pid: int) -> str:
    """One state letter per thread of pid (/proc/PID/task/*/stat); Failed if it is gone."""
    states = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    states.append(chr(f.read().rpartition(b")")[2][1]))
            except (FileNotFoundError, ProcessLookupError):
                continue                                   # a thread that just exited
    except FileNotFoundError:
        raise Failed(f"server {pid} is gone") from None
    if not states or states[0] in "ZX":
        raise Failed(f"server {pid} has exited")
    return "".join(states)


class Gate:
    """SIGSTOP/SIGCONT on the server, each confirmed from /proc with a deadline."""

    def __init__(self, pid: int):
        self.pid = pid
        self.stopped = False

    def _until(self, ok: frozenset, what: str, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while True:
            states = thread_states(self.pid)
            if all(s in ok for s in states):
                return
            if time.monotonic() > end:
                raise Failed(f"server {self.pid} not {what} within {deadline_s:g} s "
                             f"(thread states {states[:20]!r})")
            time.sleep(POLL_S)

    def stop(self) -> None:
        self._kill(signal.SIGSTOP)
        self.stopped = True
        self._until(_STOPPED, "stopped", STOP_DEADLINE_S)

    def cont(self) -> None:
        """SIGCONT if we stopped it; safe to call on any exit path."""
        if self.stopped:
            self.stopped = False
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def settle(self) -> None:
        """Wait until every server thread sleeps: the server has done what it had to do."""
        self._until(_SLEEPING, "idle (every thread sleeping)", PHASE_DEADLINE_S)

    def _kill(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            raise Failed(f"server {self.pid} is gone") from None


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
        return self.document(started, window, failure)

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

    # -- the JSON document ----------------------------------------------------

    def document(self, started: str, window: dict | None, failure: str | None) -> dict:
        spec = self.spec
        hist = latency.new_histogram()
        latency.record_ns(hist, self.lat)
        drain = latency.new_histogram()
        latency.record_ns(drain, self.drain)
        w = window or {"start": None, "end": None, "tx": 0, "rx": 0, "user_s": 0.0, "sys_s": 0.0}
        window_s = (w["end"] - w["start"]) if window else 0.0
        messages = spec.bursts * spec.burst_size if window else 0
        per_s = (lambda x: round(x / window_s, 3) if window_s > 0 else None)
        echoing = sum(1 for c in self.conns if c.echoed)
        open_ = len(self.conns) if failure is None else 0
        return {
            "format": FORMAT, "mode": "bursts",
            "target": f"{spec.host}:{spec.port}", "config": spec.to_config(),
            "started_at": started, "ended_at": utc_now("milliseconds"),
            "window_s": round(window_s, 6),
            "window_start_monotonic_s": w["start"], "window_end_monotonic_s": w["end"],
            "signals": self.signals,
            "messages": messages, "bytes_sent": w["tx"], "bytes_received": w["rx"],
            "bytes_sent_total": self.tx, "bytes_received_total": self.rx,
            "throughput_msgs_s": per_s(messages),
            "latency_us": latency.summary(hist), "latency_samples": hist.get_total_count(),
            "latency_hdr": latency.encode(hist),
            "rate": {"target": None, "arrivals": None, "achieved": per_s(messages),
                     "written": per_s(messages), "scheduled": None},
            "connections": {"requested": spec.connections, "established": len(self.conns),
                            "active": spec.burst_size, "idle": spec.connections - spec.burst_size,
                            "active_established": min(spec.burst_size, len(self.conns)),
                            "idle_established": max(0, len(self.conns) - spec.burst_size),
                            "idle_open_at_end": max(0, open_ - spec.burst_size),
                            "active_open_at_end": min(open_, spec.burst_size),
                            "echoing": echoing, "retries": 0},
            "connect_s": round(self.connect_s, 6),
            "errors": dict(self.errors), "corrupt": self.errors["corrupt"],
            "unanswered_msgs": sum(1 for c in self.conns if c.expect is not None),
            "backlog_overflow_msgs": 0,
            "workers": [{"index": 0, "pid": os.getpid(), "cpu": spec.cpu,
                         "connections": spec.connections, "established": len(self.conns),
                         "messages": messages, "cpu_user_s": round(w["user_s"], 6),
                         "cpu_sys_s": round(w["sys_s"], 6),
                         "cpu_util": round((w["user_s"] + w["sys_s"]) / window_s, 4)
                         if window_s > 0 else None,
                         "window_s": round(window_s, 6), "measured": window is not None}],
            "saturated": False,
            "failed": failure is not None, "failure": failure,
            "timeline": [],
            "bursts": {"count": spec.bursts, "size": spec.burst_size,
                       "warmup": spec.warmup_bursts, "completed": len(self.stop_ns),
                       "drain_us": latency.summary(drain), "drain_hdr": latency.encode(drain),
                       "write_us": _us(self.write_ns), "stop_us": _us(self.stop_ns)},
        }


def _us(values_ns: array) -> dict:
    """{p50, max} in µs of a few nanosecond durations; None without any."""
    if not values_ns:
        return {"p50": None, "max": None}
    s = sorted(values_ns)
    return {"p50": round(s[len(s) // 2] / 1000, 3), "max": round(s[-1] / 1000, 3)}


def _kinds(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no error recorded"


def run(spec: BurstSpec, address: tuple, family: int) -> dict:
    """One burst-mode run; returns the JSON document (see the module docstring)."""
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    return Bursts(spec, address, family).run()
