"""Synthetic run directories with known answers, written through bench.rundir.store.

`make_run(dir, ...)` writes meta.json (format 1), points.csv and micro.csv
(and, on request, probes.json, memory.csv, syscalls.csv) whose costs follow
chosen slopes, so a test knows what the analysis must recover. Noise is
multiplicative and seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.rundir.schema import MEMORY_COLUMNS, MICRO_COLUMNS, POINT_COLUMNS, SYSCALL_COLUMNS
from bench.rundir.store import append_row, write_json

MECHS = ("select", "poll", "epoll", "epoll-et")
FD_SETSIZE = 1024

# ns per registered descriptor of one wait call, nothing but 1 ready
MICRO_SLOPES = {"select": 4.0, "poll": 5.0, "epoll": 0.0, "epoll-et": 0.0}
MICRO_INTERCEPT_NS = 600.0
PER_READY_NS = 40.0
MICRO_SIZES = (10, 100, 500, 1000, 2000, 5000, 10000)
MAXEVENTS = 1024          # epoll returns at most this many events per call (servers/epoll_loop.py)
# the servers' own wait time per call in scan: ns per total connection
SCAN_SLOPES = {"select": 6.0, "poll": 7.0, "epoll": 0.0, "epoll-et": 0.0}
SCAN_SIZES = (10, 100, 500, 1000, 2000, 5000, 10000)
# activity: server CPU µs per message at active ratio 0.01 and at 1.0
ACTIVITY_CPU = {"select": (30.0, 12.0), "poll": (28.0, 11.0),
                "epoll": (20.0, 11.5), "epoll-et": (19.0, 11.0)}
RATIOS = (0.01, 0.1, 0.5, 1.0)
# memory: the four named slab caches' share of every cache that grows (the rest: filp, dentry, ...)
NAMED_SHARE = 0.65
# ready: server CPU per message = per_msg_us + scan_ns_per_fd * N / K / 1000 (one scan per burst)
READY_COST = {"select": (10.0, 20.0), "poll": (10.0, 22.0), "epoll": (11.0, 0.0),
              "epoll-et": (10.8, 0.0), "epoll-toggle": (13.0, 0.0)}
READY_KS = {1000: (0, 1, 3, 10, 30, 100, 300, 1000), 5000: (0, 1, 10, 100, 1000, 5000)}
EPOLL_MAXEVENTS = 1024
# micro's CPU per wait call, ns per registered descriptor: CPython's select
# rebuilds its sets (user); select's and poll's kernel scan (system)
USER_SLOPES = {"select": 3.0, "poll": 0.0, "epoll": 0.0, "epoll-et": 0.0}
SYS_SLOPES = {"select": 2.0, "poll": 4.0, "epoll": 0.0, "epoll-et": 0.0}
USER_BASE_NS, SYS_BASE_NS = 500.0, 300.0

META = {  # the shape bench.rundir.meta.collect_meta writes
    "format": 1, "state": "complete",
    "started_at": "2025-01-01T00:00:00+00:00", "ended_at": "2025-01-01T00:15:00+00:00",
    "kernel": {"release": "6.1.0-synthetic", "version": "#1 SMP", "machine": "x86_64"},
    "python": {"version": "3.11.7", "implementation": "CPython", "executable": "/usr/bin/python3"},
    "cpu": {"model": "Synthetic CPU @ 2.0GHz", "count": 2, "affinity": [0, 1], "governors": {}},
    "memory": {"mem_total_bytes": 24 * 2 ** 30},
    "packages": {"numpy": "2.0", "pandas": "3.0", "matplotlib": "3.9"},
    "git": {"rev": "0" * 40, "dirty": False},
    "limits": {"rlimit_nofile": {"orchestrator": {"soft": 65536, "hard": 65536}},
               "fs.file-max": 2_400_000, "fs.nr_open": 1_048_576,
               "fs.epoll.max_user_watches": 5_000_000},
    "profile": {"name": "synthetic", "seed": 1},
}


class _Writer:
    def __init__(self, run_dir: Path, reps: int, noise: float, seed: int, cost_factor: float):
        self.dir, self.reps, self.noise, self.factor = run_dir, reps, noise, cost_factor
        self.rng = np.random.default_rng(seed)

    def jitter(self, value: float) -> float:
        return float(value * self.rng.lognormal(0.0, self.noise)) if self.noise else float(value)

    def cost(self, value: float) -> float:
        """A cost (time per message or per call): jittered and scaled by cost_factor."""
        return self.jitter(value) * self.factor

    def point(self, **row) -> None:
        append_row(self.dir / "points.csv", row, POINT_COLUMNS)


def _measures(w: _Writer, us_per_msg: float, wait_ns: float, events: float,
              throughput: float | None = None) -> dict:
    """A consistent set of point measures around one server cost per message."""
    us = w.cost(us_per_msg)
    tput = throughput if throughput is not None else 1e6 / us
    duration = 5.0
    msgs = tput * duration
    wait = w.cost(wait_ns)
    return {
        "throughput_msgs_s": round(tput, 3), "p50_us": round(10 * us, 3),
        "p90_us": round(14 * us, 3), "p99_us": round(25 * us, 3),
        "p999_us": round(40 * us, 3), "max_us": round(90 * us, 3),
        "server_cpu_user_s": us * 0.6 * msgs / 1e6, "server_cpu_sys_s": us * 0.4 * msgs / 1e6,
        "server_cpu_us_per_msg": us, "server_cpu_user_us_per_msg": 0.6 * us,
        "server_cpu_sys_us_per_msg": 0.4 * us,
        "wait_calls": int(msgs / events), "wait_ns_per_call": wait,
        "events_per_call": events, "loadgen_cpu_max": 0.5,
        "saturated": False, "noisy": False, "errors": 0, "corrupt": 0,
        "rejected_fd_setsize": 0, "duration_s": duration, "error": "",
        "server_saturated": False,
    }


def _pid(exp, mech, c, a, s, r):
    return f"{exp}-{mech}-c{c}-a{a}-s{s}-r{r}"


def make_run(run_dir, *, experiments=("scan", "scan-rate", "activity", "msgsize", "fdlimit"),
             micro: bool = True, micro_slopes=None, scan_slopes=None, activity_cpu=None,
             per_ready_ns=None, micro_sizes=MICRO_SIZES, micro_fn=None,
             select_wall: int | None = 1019, poll_wall: int | None = None,
             mechanisms=MECHS, reps: int = 5, noise: float = 0.02, seed: int = 0,
             saturate: tuple = (), noisy_points: tuple = (), server_saturate: tuple = (),
             saturate_all: tuple = (),
             probes: dict | None = None,
             memory: dict | None = None, syscalls: dict | None = None,
             meta: dict | None = None, cost_factor: float = 1.0,
             ready_cost: dict | None = None, ready_ks: dict | None = None,
             extra_cpu_us: dict | None = None, user_slopes: dict | None = None,
             sys_slopes: dict | None = None) -> Path:
    """Write a synthetic run directory and return its path.

    micro_slopes/scan_slopes: {mechanism: ns per descriptor}; micro_fn:
    {mechanism: f(registered) -> ns}, a wait cost of any shape replacing the
    slope; micro_sizes: the registered counts of micro; per_ready_ns:
    {mechanism: micro wait ns per ready descriptor} (default PER_READY_NS); activity_cpu:
    {mechanism: (µs/msg at ratio 0.01, at 1.0)}; select_wall: most
    connections select echoes in fdlimit (None: no wall); saturate /
    noisy_points: (experiment, mechanism, connections) whose rep 0 is flagged
    and given 3x costs (a flagged point must never move a result);
    saturate_all: (experiment, mechanism) whose every row was measured with the
    load generator saturated (the mechanism is lost to that experiment);
    server_saturate: (experiment, mechanism, connections) whose every rep has
    server_saturated set and 3x CPU costs (they must never move a CPU result);
    probes: the probes.json document; memory: {mechanism: per-connection
    kernel bytes, every slab cache} (the four named caches hold NAMED_SHARE of it); syscalls: {mechanism: {syscall: calls per message}};
    cost_factor: every time cost multiplied (2.0: a machine twice as slow);
    ready_cost: {mechanism: (µs per message, ns per registered fd per burst)}
    writes the ready experiment (N = 1000 and 5000 as READY_KS, or ready_ks)
    over READY_COST with these changes; epoll splits bursts at MAXEVENTS.
    extra_cpu_us: {mechanism: µs per message added in scan/scan-rate} (put
    "threads" in `mechanisms` to give it points); user_slopes/sys_slopes:
    {mechanism: ns per descriptor} of micro's user and system CPU per call
    (default USER_SLOPES/SYS_SLOPES; None of both: no split columns).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=False)   # rows are appended: never reuse a directory
    write_json(run_dir / "meta.json", {**META, **(meta or {})})
    w = _Writer(run_dir, reps, noise, seed, cost_factor)
    micro_slopes = {**MICRO_SLOPES, **(micro_slopes or {})}
    scan_slopes = {**SCAN_SLOPES, **(scan_slopes or {})}
    activity_cpu = {**ACTIVITY_CPU, **(activity_cpu or {})}
    multiplexers = [m for m in mechanisms if m != "threads"]   # threads: scan and scan-rate only

    def flagged(exp, mech, conns, rep):
        key = (exp, mech, conns)
        return {"saturated": (key in saturate and rep == 0) or (exp, mech) in saturate_all,
                "noisy": key in noisy_points and rep == 0}

    def emit(exp, mech, conns, active, size, rate, rep, m):
        f = flagged(exp, mech, conns, rep)
        if (exp, mech, conns) in server_saturate:
            m = {**m, "server_saturated": True, **{k: m[k] * 3 for k in (
                "server_cpu_us_per_msg", "server_cpu_user_us_per_msg", "server_cpu_sys_us_per_msg",
                "server_cpu_user_s", "server_cpu_sys_s")}}
        if f["saturated"] or f["noisy"]:
            m = {**m, **f, **{k: m[k] * 3 for k in (
                "wait_ns_per_call", "server_cpu_us_per_msg", "server_cpu_user_us_per_msg",
                "server_cpu_sys_us_per_msg", "p50_us", "p99_us")},
                 "throughput_msgs_s": m["throughput_msgs_s"] / 3}
        w.point(point_id=_pid(exp, mech, conns, active, size, rep), experiment=exp,
                mechanism=mech, connections=conns, active=active, msg_size=size,
                rate=rate, rep=rep, established=conns, echoing=conns, **m)

    def refused(exp, mech, conns, active, size, rate, rep):
        w.point(point_id=_pid(exp, mech, conns, active, size, rep), experiment=exp,
                mechanism=mech, connections=conns, active=active, msg_size=size,
                rate=rate, rep=rep, error="refused: FD_SETSIZE")

    for rep in range(reps):
        if "scan" in experiments or "scan-rate" in experiments:
            for conns in SCAN_SIZES:
                for mech in mechanisms:
                    wait = 2000 + scan_slopes.get(mech, 0.0) * conns
                    for exp, rate in (("scan", None), ("scan-rate", 20000)):
                        if exp not in experiments:
                            continue
                        if mech == "select" and conns >= FD_SETSIZE:
                            refused(exp, mech, conns, 10, 64, rate, rep)
                            continue
                        m = _measures(w, 4 + wait / 1000 + (extra_cpu_us or {}).get(mech, 0.0),
                                      wait, 5.0,   # base cost + one scan per message
                                      throughput=rate and w.jitter(rate * 0.999))
                        emit(exp, mech, conns, 10, 64, rate, rep, m)
        if "activity" in experiments:
            for ratio in RATIOS:
                for mech in multiplexers:
                    lo, hi = activity_cpu.get(mech, (20.0, 12.0))
                    us = lo + (hi - lo) * (ratio - 0.01) / 0.99
                    m = _measures(w, us, 3000 + 10 * ratio * 1000, max(1.0, 1000 * ratio / 4))
                    emit("activity", mech, 1000, int(round(1000 * ratio)), 64, None, rep, m)
        if "msgsize" in experiments:
            for size in (64, 1024, 16384):
                for mech in multiplexers:
                    m = _measures(w, 15 + size / 1000, 4000, 10.0)
                    emit("msgsize", mech, 100, 100, size, None, rep, m)
        if "fdlimit" in experiments:
            for conns in range(900, 1101, 20):
                for mech in multiplexers:
                    wall = {"select": select_wall, "poll": poll_wall}.get(mech)
                    echoing = min(conns, wall) if wall else conns
                    m = _measures(w, 30, 2000 + 5 * conns, 5.0)
                    m["rejected_fd_setsize"] = conns - echoing if mech == "select" else 0
                    f = flagged("fdlimit", mech, conns, rep)
                    w.point(point_id=_pid("fdlimit", mech, conns, conns, 64, rep),
                            experiment="fdlimit", mechanism=mech, connections=conns,
                            active=conns, msg_size=64, rate=None, rep=rep,
                            established=conns, echoing=echoing, **{**m, **f})

    if ready_cost is not None:
        _ready_rows(w, {**READY_COST, **ready_cost}, ready_ks or READY_KS, reps)
    if micro:
        for mech in multiplexers:
            for n in micro_sizes:
                for ready in sorted({0, 1, 10, n}):
                    for mode in ("zero", "blocking"):
                        row = dict(op="wait", mechanism=mech, registered=n, ready=ready,
                                   timeout_mode=mode, samples=200)
                        if mech == "select" and n >= FD_SETSIZE:
                            append_row(run_dir / "micro.csv", {**row, "note": "refused: FD_SETSIZE"},
                                       MICRO_COLUMNS)
                            continue
                        scan = (micro_fn[mech](n) if micro_fn and mech in micro_fn
                                else MICRO_INTERCEPT_NS + micro_slopes.get(mech, 0.0) * n)
                        returned = min(ready, MAXEVENTS) if mech.startswith("epoll") else ready
                        ns = w.cost(scan + (per_ready_ns or {}).get(mech, PER_READY_NS) * returned)
                        note = (f"epoll returned {MAXEVENTS} of {ready} ready (MAXEVENTS)"
                                if returned < ready else "")
                        user = w.cost(USER_BASE_NS + {**USER_SLOPES, **(user_slopes or {})}.get(mech, 0) * n)
                        sys_ = w.cost(SYS_BASE_NS + {**SYS_SLOPES, **(sys_slopes or {})}.get(mech, 0) * n)
                        append_row(run_dir / "micro.csv",
                                   {**row, "ns_median": round(ns, 2), "ns_p10": round(0.9 * ns, 2),
                                    "ns_p90": round(1.2 * ns, 2), "note": note,
                                    "user_ns_per_call": round(user, 1), "sys_ns_per_call": round(sys_, 1),
                                    "cpu_ns_per_call": round(user + sys_, 1)}, MICRO_COLUMNS)
            for n in (10, 100, 1000):               # mode drain: bench.c's loop, +1 µs per ready
                for ready in (1, n):
                    ns = w.cost(MICRO_INTERCEPT_NS + micro_slopes.get(mech, 0.0) * n + 1000.0 * ready)
                    append_row(run_dir / "micro.csv",
                               dict(op="wait", mechanism=mech, registered=n, ready=ready,
                                    timeout_mode="zero", samples=200, ns_median=round(ns, 2),
                                    ns_p10=round(0.9 * ns, 2), ns_p90=round(1.2 * ns, 2), note="",
                                    mode="drain"), MICRO_COLUMNS)
            for op in ("register", "modify"):
                append_row(run_dir / "micro.csv",
                           dict(op=op, mechanism=mech, registered=1000, ready=1, timeout_mode="zero",
                                ns_median=300.0, ns_p10=280.0, ns_p90=350.0, samples=200, note=""),
                           MICRO_COLUMNS)
    if probes is not None:
        write_json(run_dir / "probes.json", {"format": 1, **probes})
    if memory:
        for mech, per_conn in memory.items():
            for conns in (1000, 10000):
                append_row(run_dir / "memory.csv", {
                    "mechanism": mech, "connections": conns,
                    "rss_bytes": 30_000_000 + 600 * conns, "slab_bytes": per_conn * conns,
                    "per_conn_rss_bytes": 600, "per_conn_kernel_bytes": round(NAMED_SHARE * per_conn, 1),
                    "eventpoll_epi": 128 * conns, "eventpoll_pwq": 72 * conns,
                    "TCP": 2300 * conns, "sock_inode_cache": 700 * conns,
                    "threads": conns + 2 if mech == "threads" else 1,
                    "per_conn_thread_bytes": 23000 if mech == "threads" else 50}, MEMORY_COLUMNS)
    if syscalls:
        for mech, calls in syscalls.items():
            for name, per_msg in calls.items():
                append_row(run_dir / "syscalls.csv", {
                    "point_id": f"syscalls-{mech}", "mechanism": mech, "syscall": name,
                    "calls": int(per_msg * 100000), "seconds": per_msg * 0.1, "errors": 0,
                    "calls_per_msg": per_msg, "tracer": "synthetic"}, SYSCALL_COLUMNS)
    return run_dir


def _ready_rows(w: _Writer, cost: dict, ks: dict, reps: int) -> None:
    """The ready experiment: per burst one scan of N for select/poll, a per-message cost for all."""
    for rep in range(reps):
        for n, sizes in ks.items():
            for mech, (per_msg, scan_ns) in cost.items():
                if mech == "select" and n >= FD_SETSIZE:
                    continue
                for k in sizes:
                    bursts = 50
                    per_burst = w.cost(per_msg * k + scan_ns * n / 1000 + 5.0)
                    calls = 0 if k == 0 else (-(-k // EPOLL_MAXEVENTS) if mech.startswith("epoll") else 1)
                    row = dict(point_id=f"ready-{mech}-c{n}-a{k}-s64-b{bursts}-r{rep}", experiment="ready",
                               mechanism=mech, connections=n, active=k, msg_size=64, rate=None, rep=rep,
                               bursts=bursts, server_cpu_us_per_burst=per_burst,
                               server_cpu_user_s=0.6 * per_burst * bursts / 1e6,
                               server_cpu_sys_s=0.4 * per_burst * bursts / 1e6,
                               wait_calls=calls * bursts, wait_calls_per_burst=calls,
                               saturated=False, server_saturated=False, noisy=False, errors=0,
                               corrupt=0, error="",
                               established=n, echoing=k, duration_s=0.01 * bursts,
                               throughput_msgs_s=k * bursts / (0.01 * bursts),
                               drain_p50_us=20 + 3 * k, drain_p99_us=30 + 4 * k)
                    if k:
                        row.update(server_cpu_us_per_msg=per_burst / k,
                                   server_cpu_user_us_per_msg=0.6 * per_burst / k,
                                   server_cpu_sys_us_per_msg=0.4 * per_burst / k,
                                   events_per_call=k / calls, ready_fraction=k / calls / n)
                    w.point(**row)


def probes_doc(value_limit=True, kernel_takes_high_fd=True, poll_einval=True,
               et_writes_reported=2, eventpoll_mapped=False, pointer_bits=64, fd_setsize=1024,
               extra_client="reset") -> dict:
    """probes.json in the shape bench.tasks.probes writes (only the fields claims read)."""
    def tested(outcome):
        return {"status": "tested", "outcome": outcome, "reading": "synthetic"}
    return {"probes": {
        "C1": tested({"high_fd": 2000, "open_descriptors": 5, "low_fd": 3, "low_fd_ready": True,
                      "high_fd_select": {"exception": "ValueError" if value_limit else None,
                                         "message": "filedescriptor out of range in select()"},
                      "kernel_select_high_fd": {"nfds": 2001, "returned": int(kernel_takes_high_fd),
                                                "fd_reported_ready": kernel_takes_high_fd}}),
        "C4": tested({"nfds": 1200, "over_1024": {"highest_fd_reported": True},
                      "nfds_above_soft_limit": ({"soft": 1199, "result": "error", "errno": "EINVAL"}
                                                if poll_einval else {"soft": 1199, "result": "ok"})}),
        "C5": tested({"modes": {
            "level": {"events_total": 4, "writes_with_an_event": 2},
            "edge": {"events_total": et_writes_reported, "writes_with_an_event": et_writes_reported},
            "oneshot": {"events_total": 1, "writes_with_an_event": 1}}}),
        "C6": tested({"registered": 10000, "new_mapping_count": 1,
                      "new_mappings": [{"path": "", "bytes": 1 << 20}],
                      "eventpoll_mappings_after": [{"path": "anon_inode:[eventpoll]"}] if eventpoll_mapped else [],
                      "mmap_epoll_fd": {"result": "error", "errno": "ENODEV"}}),
        "C9": tested({"machine": "x86_64" if pointer_bits == 64 else "i686", "pointer_bits": pointer_bits,
                      "claimed_fd_setsize": 32 * pointer_bits,
                      "cpython_select": {"lowest_refused": fd_setsize, "searched": [5, 19999],
                                         "message": "filedescriptor out of range in select()"},
                      "fd_set_compiled": {"sizeof_fd_set": fd_setsize // 8, "FD_SETSIZE": fd_setsize},
                      "fd_set_fdelt_chk": {"lowest_refused": fd_setsize, "words": fd_setsize // pointer_bits,
                                           "bits_per_word": pointer_bits}}),
        "C10": tested({"thread_limit": {"started": 10000, "at_least": True, "stopped_by": "our cap"},
                       "capped_server": {"max_threads": 4, "served_first": 4, "extra_outcome": extra_client,
                                         "extra_waited_s": 2.0 if extra_client == "no answer" else 0.001,
                                         **({"extra_after_a_thread_freed": "echoed"}
                                            if extra_client == "no answer" else
                                            {"new_client_after_a_thread_freed": "echoed"})}}),
    }}


FULL_SYNTHETIC = dict(
    ready_cost={},
    probes=probes_doc(),
    mechanisms=MECHS + ("threads",), extra_cpu_us={"threads": 8.0},
    memory={"epoll": 5200, "epoll-et": 5200, "poll": 5000, "select": 5000, "threads": 40000},
    syscalls={"epoll": {"epoll_wait": 0.2, "recvfrom": 1.0, "sendto": 1.0, "mmap": 0.0001},
              "poll": {"poll": 0.2, "recvfrom": 1.0, "sendto": 1.0},
              "select": {"select": 0.2, "recvfrom": 1.0, "sendto": 1.0}},
)
