"""LoadSpec: what one load-generator run does, checked before any socket opens.

Every check here is a usage error (exit 2): the value is wrong for this
program or this machine, whatever the server does.
"""

from __future__ import annotations

import math
import resource
from dataclasses import asdict, dataclass

HEADER_BYTES = 8           # u64 little-endian: connection index << 40 | sequence number
MIN_MSG_SIZE = 16          # header + at least 8 pattern bytes
MAX_MSG_SIZE = 1 << 20     # K messages of S bytes are held per connection
FD_RESERVE = 32            # per worker: epoll, control pipe, stdio, imports
SOURCE_CONNS = 8000        # connections per loopback source address before the next is used
MAX_SOURCES = 8            # loopback source addresses 127.0.0.1 - 127.0.0.8
MAX_PROCS = 256            # worker processes: each is a Python interpreter of its own
ARRIVALS = ("fixed", "poisson")


class SpecError(ValueError):
    """A value no run can use; the message names the option and the fix."""


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    connections: int
    active_ratio: float
    msg_size: int
    duration_s: float
    warmup_s: float
    procs: int
    rate_msgs_s: float | None = None     # None: closed loop
    arrivals: str = "fixed"              # open loop only: fixed | poisson
    pipeline: int = 1                    # in flight per active connection: closed = K, open <= K
    cpus: tuple[int, ...] | None = None
    signal_pid: int | None = None

    @property
    def active(self) -> int:
        return round(self.connections * self.active_ratio)

    @property
    def workers(self) -> int:
        """Worker processes actually started: no worker without a connection."""
        return min(self.procs, self.connections)

    def share(self, worker: int) -> tuple[int, int]:
        """(connections, active) of one worker: an even split, remainders first."""
        n, a, p = self.connections, self.active, self.workers
        return n // p + (worker < n % p), a // p + (worker < a % p)

    def to_config(self) -> dict:
        d = asdict(self)
        d["cpus"] = list(self.cpus) if self.cpus is not None else None
        d["active"] = self.active
        d["target"] = f"{self.host}:{self.port}"
        return d


def parse_target(text: str) -> tuple[str, int]:
    """'127.0.0.1:8000' or '[::1]:8000' -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise SpecError(f"--target {text!r} is not HOST:PORT, e.g. 127.0.0.1:8000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise SpecError(f"--target {text!r}: write an IPv6 address in brackets, e.g. [::1]:8000")
    try:
        port = int(port_text)
    except ValueError:
        raise SpecError(f"--target {text!r}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise SpecError(f"--target {text!r}: port must be 1-65535")
    return host, port


def parse_cpus(text: str) -> tuple[int, ...]:
    """pyperf's CPU list syntax: '0-3,7' -> (0, 1, 2, 3, 7)."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first = int(lo)
            last = int(hi) if dash else first
        except ValueError:
            raise SpecError(f"--cpus {text!r}: {part!r} is not a CPU number or range "
                            "(write e.g. 0-3,7)") from None
        if first < 0 or last < first:
            raise SpecError(f"--cpus {text!r}: {part!r} is not an increasing range of CPUs >= 0")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def ephemeral_ports() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return 28232                     # Linux default 32768-60999


def check(spec: LoadSpec, here: bool = True) -> LoadSpec:
    """Raise SpecError naming the option and the fix; return spec unchanged.

    here=False: the workers run on other hosts, whose CPUs are not checked here.
    """
    if spec.connections < 1:
        raise SpecError(f"--connections {spec.connections}: give at least 1")
    if not (0.0 <= spec.active_ratio <= 1.0) or math.isnan(spec.active_ratio):
        raise SpecError(f"--active-ratio {spec.active_ratio}: give a number in [0, 1]")
    if spec.msg_size < MIN_MSG_SIZE:
        raise SpecError(f"--msg-size {spec.msg_size}: the framing needs at least "
                        f"{MIN_MSG_SIZE} bytes ({HEADER_BYTES}-byte header + pattern)")
    if spec.msg_size > MAX_MSG_SIZE:
        raise SpecError(f"--msg-size {spec.msg_size}: give at most {MAX_MSG_SIZE} bytes")
    if not (spec.duration_s > 0 and math.isfinite(spec.duration_s)):
        raise SpecError(f"--duration {spec.duration_s}: give a positive number of seconds")
    if not (spec.warmup_s >= 0 and math.isfinite(spec.warmup_s)):
        raise SpecError(f"--warmup {spec.warmup_s}: give zero or more seconds")
    if spec.procs < 1:
        raise SpecError(f"--procs {spec.procs}: give at least 1")
    if spec.procs > MAX_PROCS:
        raise SpecError(f"--procs {spec.procs}: give at most {MAX_PROCS} (each worker is a "
                        "Python process of its own; more than the CPUs only share them)")
    if spec.pipeline < 1:
        raise SpecError(f"--pipeline {spec.pipeline}: give at least 1 message in flight")
    if spec.arrivals not in ARRIVALS:
        raise SpecError(f"--arrivals {spec.arrivals!r}: give one of {', '.join(ARRIVALS)}")
    if spec.rate_msgs_s is not None:
        if not (spec.rate_msgs_s > 0 and math.isfinite(spec.rate_msgs_s)):
            raise SpecError(f"--rate {spec.rate_msgs_s}: give a positive number of messages/s")
        if spec.active == 0:
            raise SpecError("--rate needs active connections: raise --active-ratio")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_worker = -(-spec.connections // spec.workers) + FD_RESERVE
    if hard != resource.RLIM_INFINITY and per_worker > hard:
        need = -(-spec.connections // (hard - FD_RESERVE))
        raise SpecError(f"--connections {spec.connections} over --procs {spec.procs} needs "
                        f"{per_worker} descriptors per process, above the limit {hard}: "
                        f"use --procs {need} or more")
    ports = ephemeral_ports()
    if spec.host.startswith("127.") or spec.host == "localhost":
        # to 127.x the workers spread connections over several source addresses
        if spec.connections > MAX_SOURCES * ports:
            raise SpecError(f"--connections {spec.connections}: at most {MAX_SOURCES * ports} "
                            f"reach one loopback target ({MAX_SOURCES} source addresses "
                            f"127.0.0.1-{MAX_SOURCES} x {ports} ephemeral ports)")
    elif spec.connections > ports:
        raise SpecError(f"--connections {spec.connections} is more than the {ports} ephemeral "
                        "ports one target can be reached from (net.ipv4.ip_local_port_range)")
    if spec.cpus is not None and here:
        import os
        allowed = os.sched_getaffinity(0)
        missing = [c for c in spec.cpus if c not in allowed]
        if missing:
            raise SpecError(f"--cpus: CPU {missing[0]} is not available here "
                            f"(allowed: {','.join(map(str, sorted(allowed)))})")
    return spec
