"""Profiles: the TOML files that say what a sweep measures.

A profile is a few run-wide settings and a list of `[[experiment]]` tables:

    description = "every experiment at a small scale"
    repetitions = 3            # default for every experiment
    warmup_s = 0.5             # load before the measured window
    window_s = 2.0             # the measured window
    mechanisms = ["select", "poll", "epoll", "epoll-et"]

    [[experiment]]
    kind = "scan"                          # one of EXPERIMENTS or TASKS
    connections = [10, 1000, 5000]         # or {from = 900, to = 1100, step = 20}
    active = 10                            # or active_ratio = [0.01, 0.1]
    msg_size = 64

    [[experiment]]
    kind = "micro"                         # a task: runs once, writes micro.csv
    quick = true

Every axis takes one value or a list; a sweep point is one combination of
axes, one mechanism and one repetition. An experiment may override the
run-wide repetitions, warmup_s, window_s and mechanisms. Any mistake is a
ProfileError naming the file, the field and the allowed values.

Run-wide fields: description, seed (fixes the interleaved order; default:
drawn and recorded in meta.json), repetitions, warmup_s, window_s,
mechanisms, procs (load-generator workers; default one per load-generator
CPU), noise_threshold_pct (a point is noisy when other processes used more
than this % of one CPU during its window; default 10), ready_timeout_s
(server READY deadline; default 10), point_timeout_s (allowance beyond
warmup + window for connecting and teardown; default 60), cluster (a Dask
scheduler, tcp://HOST:PORT: the load generator's workers run on its client
hosts, the server here; `bench run --cluster` overrides it; procs then
defaults to one worker per Dask worker thread), hosts (with cluster: use
its first N client hosts; default all).

Sweep fields: kind, connections, active | active_ratio (default ratio 1.0),
msg_size (bytes, >= 16; default 64), rate (messages/s over all
connections: open loop; scan-rate needs it, scan refuses it), arrivals
(fixed | poisson, with rate), pipeline (messages in flight per connection:
kept in flight in a closed loop, at most in flight with rate), required
(true: a point a mechanism cannot serve, e.g. select past FD_SETSIZE, is
an error instead of a refused row),
server_max_fds (the server's --max-fds), and the run-wide overrides.

The ready experiment (bursts, loadgen/burst.py) has its own fields: kind,
mechanisms, repetitions, connections, ready (burst sizes K, each 0 to the
smallest of connections; 0 is the stop/continue control), bursts (the most
measured bursts per point, default 200), burst_messages (the messages a
point aims for: ceil(burst_messages / K) bursts, at least MIN_BURSTS and at
most bursts, so large bursts take few; default 2000), msg_size.

Task fields (a task runs once per run directory, after the sweep):
micro: quick (the small sizes). probes: none (bench.tasks.probes -> probes.json).
syscalls (bench.tasks.syscalls -> syscalls.csv, syscalls.json): points (a list of
{connections, active | active_ratio, msg_size}), mechanisms, warmup_s,
window_s (each of the untraced and the traced interval), tracer (auto |
perf | strace). memory (bench.tasks.memory -> memory.csv, memory.json):
connections (idle connections held), mechanisms.

Open to growth: a new sweep kind is a new name in schema.EXPERIMENTS; a
new task is a name in TASKS, its fields in TASK_FIELDS and a runner in
bench.sweep.run.TASK_RUNNERS; a new mechanism is a new entry in servers.MECHANISMS
(or servers.REFERENCES, labelled as a reference in every row),
which this module reads.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import servers

from bench.rundir.schema import EXPERIMENTS
from bench.sweep.profile_check import (_SIZE_WHY, MAX_MSG_SIZE, MAX_REPETITIONS, FieldChecker,
                                       ProfileError, check_points, check_procs, connection_limit)

PROFILES_DIR = Path(__file__).parent / "profiles"

TASKS = ("micro", "probes", "syscalls", "memory")   # run once per run directory
KINDS = EXPERIMENTS + TASKS

# kinds that run select past FD_SETSIZE (that is what they measure); every
# other kind records such a point as refused instead of running it
RUNS_PAST_FD_LIMIT = ("fdlimit",)

RUN_FIELDS = ("description", "seed", "repetitions", "warmup_s", "window_s", "mechanisms",
              "procs", "noise_threshold_pct", "ready_timeout_s", "point_timeout_s", "cluster",
              "hosts",
              "experiment")
SWEEP_FIELDS = ("kind", "mechanisms", "repetitions", "warmup_s", "window_s", "connections",
                "active", "active_ratio", "msg_size", "rate", "arrivals", "pipeline",
                "required", "server_max_fds")
READY_FIELDS = ("kind", "mechanisms", "repetitions", "connections", "ready", "bursts",
                "burst_messages", "msg_size")
MIN_BURSTS = 4             # ready: even the largest burst is measured this many times
TASK_FIELDS = {"micro": ("kind", "quick"), "probes": ("kind",),
               "syscalls": ("kind", "points", "mechanisms", "warmup_s", "window_s", "tracer"),
               "memory": ("kind", "connections", "mechanisms")}
POINT_FIELDS = ("connections", "active", "active_ratio", "msg_size")   # a syscalls point
TRACERS = ("auto", "perf", "strace")
ARRIVALS = ("fixed", "poisson")
MIN_MSG_SIZE = 16          # the load generator's header + pattern (loadgen/spec.py)
_REPS_WHY = "more is a mistake, not a measurement; several runs can be compared"


@dataclass(frozen=True)
class Experiment:
    index: int                          # 1-based position in the file, for messages
    kind: str
    mechanisms: tuple[str, ...] = ()
    repetitions: int = 1
    warmup_s: float = 0.0
    window_s: float = 0.0
    connections: tuple[int, ...] = ()
    active: tuple[int, ...] = ()         # fixed counts, or
    active_ratio: tuple[float, ...] = ()  # shares of connections (exactly one is set)
    msg_size: tuple[int, ...] = (64,)    # bytes
    rate: tuple[float | None, ...] = (None,)   # messages/s over all connections; None = closed loop
    arrivals: str = "fixed"
    pipeline: int = 1
    required: bool = False
    server_max_fds: int | None = None
    quick: bool = False                  # tasks only
    points: tuple[tuple[int, int, int], ...] = ()   # syscalls: (connections, active, msg_size)
    tracer: str = "auto"                 # syscalls
    ready: tuple[int, ...] = ()          # ready: burst sizes K
    bursts: int = 200                    # ready: the most measured bursts per point
    burst_messages: int = 2000           # ready: messages a point aims for

    @property
    def is_task(self) -> bool:
        return self.kind in TASKS

    def bursts_for(self, k: int) -> int:
        """ready: bursts of K per point: ceil(burst_messages / K) within [MIN_BURSTS, bursts]."""
        if k == 0:
            return self.bursts
        return max(min(MIN_BURSTS, self.bursts), min(self.bursts, -(-self.burst_messages // k)))


@dataclass(frozen=True)
class Profile:
    name: str
    source: str                          # the file it came from (for messages)
    text: str                            # the TOML as read, stored in meta.json
    experiments: tuple[Experiment, ...]
    description: str = ""
    seed: int | None = None              # None: the run draws one and records it
    procs: int | None = None             # load generator workers; None: one per loadgen CPU
    noise_threshold_pct: float = 10.0    # other processes' CPU in the window, % of one CPU
    ready_timeout_s: float = 10.0
    point_timeout_s: float = 60.0        # allowance beyond warmup + window (connect, teardown)
    cluster: str | None = None           # Dask scheduler tcp://HOST:PORT: load from its hosts
    hosts: int | None = None             # with cluster: its first N client hosts (None: all)


def resolve(profile: str | Path) -> Path:
    """A bundled profile name (quick, default, full) or a path to a TOML file."""
    path = PROFILES_DIR / f"{profile}.toml"
    if path.is_file():
        return path
    path = Path(profile)
    if path.is_file():
        return path
    names = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
    raise ProfileError(f"unknown profile {str(profile)!r}: give one of {names} "
                       "or the path to a .toml file")


def load(profile: str | Path) -> Profile:
    """Read and check a profile by name or path."""
    path = resolve(profile)
    try:
        text = path.read_text()
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a TOML profile (not UTF-8 text); give a .toml "
                           "file") from None
    return parse(text, source=str(path), name=path.stem)


def parse(text: str, source: str = "<profile>", name: str = "profile") -> Profile:
    """Check a profile's TOML text; raise ProfileError on the first mistake."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{source}: not valid TOML: {e}") from None
    c = FieldChecker(source)
    c.known(doc, RUN_FIELDS, "")
    runwide = dict(
        repetitions=c.integer(doc, "repetitions", 1, default=1, high=MAX_REPETITIONS,
                              why=_REPS_WHY),
        warmup_s=c.number(doc, "warmup_s", 0, default=1.0),
        window_s=c.number(doc, "window_s", 0, default=2.0, open_low=True),
        mechanisms=c.mechanisms(doc, "mechanisms", default=tuple(servers.MECHANISMS)),
    )
    tables = doc.get("experiment")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ProfileError(f"{source}: experiment: missing; add one or more [[experiment]] "
                           f"tables; allowed kinds: {', '.join(KINDS)}")
    experiments = tuple(_experiment(c, t, i, runwide) for i, t in enumerate(tables, 1))
    description = doc.get("description", "")
    if not isinstance(description, str):
        c.fail("description", description, "a string")
    procs = c.integer(doc, "procs", 1, default=None)
    check_procs(source, procs, experiments)
    check_points(source, experiments)
    return Profile(
        name=name, source=source, text=text, experiments=experiments, description=description,
        seed=c.integer(doc, "seed", 0, default=None),
        procs=procs,
        noise_threshold_pct=c.number(doc, "noise_threshold_pct", 0, default=10.0),
        ready_timeout_s=c.number(doc, "ready_timeout_s", 0, default=10.0, open_low=True),
        point_timeout_s=c.number(doc, "point_timeout_s", 0, default=60.0, open_low=True),
        cluster=c.cluster(doc, "cluster"),
        hosts=c.integer(doc, "hosts", 1, default=None),
    )


def _experiment(c: FieldChecker, t: dict, index: int, runwide: dict) -> Experiment:
    where = f"experiment[{index}]."
    kind = t.get("kind")
    if kind not in KINDS:
        c.fail(where + "kind", kind, "one of " + ", ".join(KINDS))
    if kind in TASKS:
        return _task(c, t, index, runwide)
    if kind == "ready":
        return _ready(c, t, index, runwide)

    c.known(t, SWEEP_FIELDS, where)
    mechanisms = c.mechanisms(t, "mechanisms", runwide["mechanisms"], where)
    connections = c.connections(t, where)
    if "active" in t and "active_ratio" in t:
        raise ProfileError(f"{c.source}: {where}active_ratio: give either active or "
                           "active_ratio, not both")
    active = c.integers(t, "active", 1, where, default=())
    active_ratio = c.numbers(t, "active_ratio", 0, where, default=() if active else (1.0,),
                             high=1.0, open_low=True)
    for n in connections:
        for a in active:
            if a > n:
                raise ProfileError(f"{c.source}: {where}active: {a} active connections "
                                   f"exceed connections = {n}; allowed: 1 to {n}")
        for r in active_ratio:
            if round(n * r) < 1:
                raise ProfileError(f"{c.source}: {where}active_ratio: {r} of {n} connections "
                                   "is no active connection; allowed: ratios with "
                                   "round(connections * ratio) >= 1")
    rate = c.numbers(t, "rate", 0, where, default=(None,), open_low=True)
    if kind == "scan-rate" and rate == (None,):
        raise ProfileError(f"{c.source}: {where}rate: missing; scan-rate is open loop: "
                           "give rate = messages per second over all connections")
    if kind == "scan" and rate != (None,):
        raise ProfileError(f"{c.source}: {where}rate: scan is closed loop; "
                           "use kind = \"scan-rate\" for a fixed rate")
    arrivals = t.get("arrivals", "fixed")
    if arrivals not in ARRIVALS:
        c.fail(where + "arrivals", arrivals, "one of " + ", ".join(ARRIVALS))
    required = t.get("required", False)
    if not isinstance(required, bool):
        c.fail(where + "required", required, "true or false")
    exp = Experiment(
        index=index, kind=kind, mechanisms=mechanisms,
        repetitions=c.integer(t, "repetitions", 1, where, default=runwide["repetitions"],
                              high=MAX_REPETITIONS, why=_REPS_WHY),
        warmup_s=c.number(t, "warmup_s", 0, where, default=runwide["warmup_s"]),
        window_s=c.number(t, "window_s", 0, where, default=runwide["window_s"], open_low=True),
        connections=connections, active=active, active_ratio=active_ratio,
        msg_size=c.msg_sizes(t, MIN_MSG_SIZE, where),
        rate=rate, arrivals=arrivals,
        pipeline=c.integer(t, "pipeline", 1, where, default=1),
        required=required,
        server_max_fds=c.integer(t, "server_max_fds", 1, where, default=None),
    )
    if required:
        for m in mechanisms:
            limit = fd_limit(m)
            over = [n for n in connections if limit is not None and n > limit]
            if over and kind not in RUNS_PAST_FD_LIMIT:
                raise ProfileError(
                    f"{c.source}: {where}required: {m} cannot serve connections = {over[0]} "
                    f"(descriptor limit {limit}); allowed: connections up to {limit} for {m}, "
                    "or required = false to record those points as refused")
    return exp


def _ready(c: FieldChecker, t: dict, index: int, runwide: dict) -> Experiment:
    where = f"experiment[{index}]."
    c.known(t, READY_FIELDS, where)
    connections = c.connections(t, where)
    if "ready" not in t:
        raise ProfileError(f"{c.source}: {where}ready: missing; give the burst sizes K, "
                           "e.g. ready = [0, 1, 10, 100, 1000]")
    ready = c.integers(t, "ready", 0, where, default=())
    over = [k for k in ready if k > min(connections)]
    if over:
        raise ProfileError(f"{c.source}: {where}ready: {over[0]} exceeds connections = "
                           f"{min(connections)}; allowed: 0 to {min(connections)} "
                           "(one table per N for larger bursts)")
    return Experiment(
        index=index, kind="ready",
        mechanisms=c.mechanisms(t, "mechanisms", runwide["mechanisms"], where),
        repetitions=c.integer(t, "repetitions", 1, where, default=runwide["repetitions"]),
        connections=connections, ready=ready,
        msg_size=c.integers(t, "msg_size", MIN_MSG_SIZE, where, default=(64,)),
        bursts=c.integer(t, "bursts", 1, where, default=200),
        burst_messages=c.integer(t, "burst_messages", 1, where, default=2000))


def _task(c: FieldChecker, t: dict, index: int, runwide: dict) -> Experiment:
    where = f"experiment[{index}]."
    kind = t["kind"]
    c.known(t, TASK_FIELDS[kind], where)
    quick = t.get("quick", False)
    if not isinstance(quick, bool):
        c.fail(where + "quick", quick, "true or false")
    fields = {}
    if kind in ("syscalls", "memory"):
        fields["mechanisms"] = c.mechanisms(t, "mechanisms", runwide["mechanisms"], where)
    if kind == "memory":
        fields["connections"] = c.connections(t, where)
    if kind == "syscalls":
        tracer = t.get("tracer", "auto")
        if tracer not in TRACERS:
            c.fail(where + "tracer", tracer, "one of " + ", ".join(TRACERS))
        fields.update(
            points=_points(c, t, where), tracer=tracer,
            warmup_s=c.number(t, "warmup_s", 0, where, default=runwide["warmup_s"]),
            window_s=c.number(t, "window_s", 0, where, default=runwide["window_s"], open_low=True))
    return Experiment(index=index, kind=kind, quick=quick, **fields)


def _points(c: FieldChecker, t: dict, where: str) -> tuple[tuple[int, int, int], ...]:
    """syscalls points: [{connections = 100, active = 10}, ...] -> ((100, 10, 64), ...)."""
    tables = t.get("points")
    if not isinstance(tables, list) or not tables or not all(isinstance(p, dict) for p in tables):
        raise ProfileError(f"{c.source}: {where}points: missing; give a list of tables such as "
                           "[{connections = 100, active = 10}, {connections = 1000, active_ratio = 1.0}]")
    out = []
    for i, p in enumerate(tables, 1):
        at = f"{where}points[{i}]."
        c.known(p, POINT_FIELDS, at)
        if "connections" not in p:
            raise ProfileError(f"{c.source}: {at}connections: missing; give a whole number >= 1")
        n = c.integer(p, "connections", 1, at, high=connection_limit()[0],
                      why=connection_limit()[1])
        if ("active" in p) == ("active_ratio" in p):
            raise ProfileError(f"{c.source}: {at}active: give exactly one of active or active_ratio")
        active = (c.integer(p, "active", 1, at) if "active" in p
                  else round(n * c.number(p, "active_ratio", 0, at, open_low=True, high=1.0)))
        if not 1 <= active <= n:
            raise ProfileError(f"{c.source}: {at}active: {active} active connections of {n}; "
                               f"allowed: 1 to {n}")
        out.append((n, active, c.integer(p, "msg_size", MIN_MSG_SIZE, at, default=64,
                                         high=MAX_MSG_SIZE, why=_SIZE_WHY)))
    if len(set(out)) != len(out):
        raise ProfileError(f"{c.source}: {where}points: a point is listed twice; give each once")
    return tuple(out)


@functools.cache
def unavailable(mechanism: str) -> str | None:
    """Why a mechanism cannot run on this machine (io_uring: measured once), or None."""
    mod = servers.MECHANISMS.get(mechanism)
    check = getattr(mod, "unavailable", None)
    return check() if check else None


def fd_limit(mechanism: str) -> int | None:
    """The highest connection count a mechanism can serve (select: FD_SETSIZE)."""
    mod = servers.MECHANISMS.get(mechanism)
    return getattr(mod, "FD_LIMIT", None)
