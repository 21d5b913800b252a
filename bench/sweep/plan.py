"""Profile -> the ordered list of points a run measures, and how long they take."""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass

from loadgen.burst import WARMUP_BURSTS

from bench.sweep.profile import (RUNS_PAST_FD_LIMIT, Experiment, Profile, ProfileError, fd_limit,
                                 unavailable)

REFUSED_FD_SETSIZE = "refused: FD_SETSIZE"
REFUSED_UNAVAILABLE = "refused: {mechanism} not available here: {why}"
TASK_FD_SLACK = 16       # descriptors a server holds besides its connections (tasks skip past it)

# Duration model, measured on the 2-core development machine (see
# estimate_s): starting the server and the load generator, handshakes and
# teardown cost a fixed part plus a part per connection.
OVERHEAD_S = 0.4
OVERHEAD_S_PER_CONN = 0.00005
# micro: 100 s of wait-mode configurations, then ~15 s of drain mode (issue 10)
TASK_ESTIMATE_S = {("micro", True): 25.0, ("micro", False): 115.0,   # (kind, quick) -> s
                   ("probes", False): 2.0}
# Measured the same way: syscalls = the tracer's self-test, then per profiled
# point start-up, attach and detach on top of warmup + 2 windows (4 points:
# 6.7 s at 1000 connections, 11.9 s with two at 5000); memory = per held N
# (each mechanism and the control) start-up, settling and reading, plus
# connecting and resetting (0.55 s per hold at 1000, 1.0 s at 5000, 5.7 s at 19000)
# ready (loadgen/burst.py), measured the same way: the load generator's start, connecting
# and one echo on every connection; then per burst the gate (stop, settle) and per message
# (ready points were calibrated under a load average of 25-55 from other jobs: the
# constants below are those timings scaled to the quiet machine the others were measured on)
READY_S = 0.1
READY_S_PER_CONN = 0.00005
BURST_S = 0.0006
BURST_S_PER_CONN = 0.000001        # select/poll: a stopped call tears down N wait-queue entries
BURST_S_PER_MSG = 0.00003
BURST_S_PER_THREAD = 0.00006       # threads: stopping and settling reads every thread's state
SYSCALLS_S = 0.5
SYSCALLS_S_PER_POINT = 0.4
MEMORY_S = 0.2
MEMORY_S_PER_HOLD = 0.4
MEMORY_S_PER_CONN = 0.00028


@dataclass(frozen=True)
class Point:
    """One server + load generator measurement: a mechanism at one set of axes."""

    id: str
    experiment: str
    mechanism: str
    connections: int
    active: int
    msg_size: int            # bytes
    rate: float | None       # messages/s over all connections; None = closed loop
    rep: int                 # 1-based repetition
    warmup_s: float
    window_s: float
    pipeline: int = 1
    arrivals: str = "fixed"
    server_max_fds: int | None = None
    noise_threshold_pct: float = 10.0
    refused: str | None = None   # why the point is recorded without running
    bursts: int | None = None    # ready: measured bursts of `active` (K) messages each

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Task:
    """A run-once job that writes its own table (micro, probes, syscalls, memory)."""

    id: str
    experiment: str
    quick: bool = False
    spec: Experiment | None = None     # the profile's settings for the task

    def to_dict(self) -> dict:
        return asdict(self)


def point_id(experiment: str, mechanism: str, connections: int, active: int, msg_size: int,
             rate: float | None, rep: int, pipeline: int = 1, arrivals: str = "fixed",
             server_max_fds: int | None = None, bursts: int | None = None) -> str:
    """`scan-epoll-c1000-a10-s64-r2`: every axis that varies is spelled out."""
    parts = [experiment, mechanism, f"c{connections}", f"a{active}", f"s{msg_size}"]
    if rate is not None:
        parts.append(f"rate{rate:g}")
    if arrivals != "fixed":
        parts.append(arrivals)
    if pipeline != 1:
        parts.append(f"k{pipeline}")
    if server_max_fds is not None:
        parts.append(f"fds{server_max_fds}")
    if bursts is not None:
        parts.append(f"b{bursts}")
    parts.append(f"r{rep}")
    return "-".join(parts)


def points(profile: Profile, seed: int) -> list[Point | Task]:
    """Every point of the profile, in the order a run measures them.

    Repetitions are outermost. Within a repetition the axis combinations of
    every experiment come in a seeded random order, and within a combination
    its mechanisms run back to back, also in seeded random order: drift on
    a noisy machine then hits every mechanism alike and is not mistaken for
    a trend along an axis. Tasks (micro) run once, after the sweep. The same
    profile and seed always give the same list, which is what --resume needs.
    """
    rng = random.Random(seed)
    out: list[Point | Task] = []
    reps = max((e.repetitions for e in profile.experiments if not e.is_task), default=0)
    for rep in range(1, reps + 1):
        groups = []
        for e in profile.experiments:
            if e.is_task or rep > e.repetitions:
                continue
            if e.kind == "ready":                 # K ready of N: the burst size is the axis
                groups += [(e, n, k, size, None) for n, k, size in
                           itertools.product(e.connections, e.ready, e.msg_size)]
                continue
            for n, act, size, rate in itertools.product(
                    e.connections, e.active or e.active_ratio, e.msg_size, e.rate):
                active = act if e.active else round(n * act)
                groups.append((e, n, active, size, rate))
        rng.shuffle(groups)
        for e, n, active, size, rate in groups:
            bursts = e.bursts_for(active) if e.kind == "ready" else None
            mechanisms = list(e.mechanisms)
            rng.shuffle(mechanisms)
            for m in mechanisms:
                limit = fd_limit(m)
                refused = (REFUSED_FD_SETSIZE if limit is not None and n > limit
                           and e.kind not in RUNS_PAST_FD_LIMIT else None)
                if why := unavailable(m):          # e.g. io_uring disabled: the reason, per row
                    refused = REFUSED_UNAVAILABLE.format(mechanism=m, why=why)
                out.append(Point(
                    id=point_id(e.kind, m, n, active, size, rate, rep, e.pipeline,
                                e.arrivals, e.server_max_fds, bursts),
                    experiment=e.kind, mechanism=m, connections=n, active=active,
                    msg_size=size, rate=rate, rep=rep, warmup_s=e.warmup_s,
                    window_s=e.window_s, pipeline=e.pipeline, arrivals=e.arrivals,
                    server_max_fds=e.server_max_fds,
                    noise_threshold_pct=profile.noise_threshold_pct, refused=refused,
                    bursts=bursts))
    out.extend(Task(id=e.kind, experiment=e.kind, quick=e.quick, spec=e)
               for e in profile.experiments if e.is_task)
    seen: dict[str, int] = {}
    for p in out:
        if p.id in seen:
            raise ProfileError(f"{profile.source}: experiment: point {p.id} is listed twice; "
                               "give each combination of axes once")
        seen[p.id] = 1
    return out


def estimate_s(p: Point | Task) -> float:
    """Expected wall time of one point: warmup + window + start-up, handshakes, teardown."""
    if isinstance(p, Task):
        e = p.spec
        if p.experiment == "syscalls" and e is not None:
            runs = [n for n, _, _ in e.points for m in e.mechanisms if _serves(m, n)]
            return SYSCALLS_S + sum(e.warmup_s + 2 * e.window_s + SYSCALLS_S_PER_POINT
                                    + OVERHEAD_S_PER_CONN * n for n in runs)
        if p.experiment == "memory" and e is not None:
            holds = [n for n in e.connections for m in ("control",) + e.mechanisms if _serves(m, n)]
            return MEMORY_S + sum(MEMORY_S_PER_HOLD + MEMORY_S_PER_CONN * n for n in holds)
        return TASK_ESTIMATE_S.get((p.experiment, p.quick), 60.0)
    if p.refused:
        return 0.0
    if p.bursts is not None:
        n = p.connections
        per_burst = BURST_S + BURST_S_PER_CONN * n + BURST_S_PER_MSG * p.active
        if p.mechanism == "threads":
            per_burst += BURST_S_PER_THREAD * n
        return (OVERHEAD_S + OVERHEAD_S_PER_CONN * n + READY_S + READY_S_PER_CONN * n
                + (p.bursts + WARMUP_BURSTS) * per_burst)
    return p.warmup_s + p.window_s + OVERHEAD_S + OVERHEAD_S_PER_CONN * p.connections


def _serves(mechanism: str, connections: int) -> bool:
    """Whether a task measures the mechanism at this count (select: below FD_SETSIZE)."""
    limit = fd_limit(mechanism) if mechanism != "control" else None
    return limit is None or connections + TASK_FD_SLACK <= limit
