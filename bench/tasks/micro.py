"""Wait-call micro-benchmark: libevent's bench.c design on socketpairs, no TCP.

N socketpairs are opened and one end of each is registered; A of them are
made readable by writing one byte to their peer (never read, so they stay
ready). Each configuration (op, mechanism, N, A, timeout mode) runs in a
fresh spawned interpreter (`processes` of them per configuration, samples
pooled, the second round in reverse order); mechanisms alternate within every (N, A, mode)
and the (op, N) groups run in a seeded random order, so drift on a shared
machine lands on every mechanism and every N alike. Each row of micro.csv
(schema.MICRO_COLUMNS) is the median, p10 and p90 of the `samples` single
operations, each timed by perf_counter_ns() around it:

- op=wait: one wait call, called as the servers call it:
  `select.select(readers, writers, (), t)` on Python sets,
  `poll.poll(t)`, `epoll.poll(t, MAXEVENTS)` with the server's MAXEVENTS.
  timeout_mode=zero is t=0: the kernel only scans (fs/select.c do_select and
  do_poll clear _qproc for a zero timeout, so no wait-queue entry is made).
  timeout_mode=blocking is no timeout with A >= 1 ready, so it returns at
  once, but the kernel first adds a wait-queue entry (__pollwait) for every
  descriptor it scans before the first ready one and removes them all in
  poll_freewait. The ready descriptors are the A last registered (highest
  numbers, scanned last) so that path is exercised for the N - A idle ones.
  ready=0 rows (zero only) are C2's point: nothing ready, pure scan cost.
- op=register: register one more descriptor into a set of N (none ready),
  then the next wait(timeout=0), timed together; unregistered untimed after.
  For poll, register() is only a dict insert: CPython rebuilds its whole
  pollfd array on the next poll() (selectmodule.c, ufd_uptodate and
  update_ufd_array), so the cost shows up there. For epoll it is one
  epoll_ctl(EPOLL_CTL_ADD). The wait row at the same N with ready=0 is the
  part to subtract for the registration alone. select has no registration
  (its sets are rebuilt from the Python set on every call): no rows.
- op=modify: modify a registered descriptor between POLLIN and
  POLLIN|POLLPRI (readiness unchanged, so the wait returns the same), then
  the next wait(timeout=0), timed together; poll pays the rebuild again,
  epoll one epoll_ctl(EPOLL_CTL_MOD).

Costs include the timer and call overhead (`timer_ns` in micro.json, a
constant offset that does not change a slope). The garbage collector is off
while timing: poll and epoll return tuples, whose allocation would trigger
collections at random points. Registered ends are packed at the lowest
descriptor numbers and their peers moved just under the descriptor limit,
so select runs while N + a few < FD_SETSIZE; past that it raises ValueError
(selectmodule.c, seq2set), which is recorded as "refused: FD_SETSIZE".
"""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import platform
import random
import resource
import select
import socket
import statistics
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter_ns

from bench.rundir.schema import FORMAT, MICRO_COLUMNS
from servers.sysutil import raise_nofile_limit, utc_now

MAXEVENTS = 1024             # servers/epoll_loop.py MAXEVENTS: the same call as the server
MECHANISMS = ("select", "poll", "epoll")
CHILD_TIMEOUT_S = 120.0
REFUSED = "refused: FD_SETSIZE"


@dataclass(frozen=True)
class Profile:
    sizes: tuple[int, ...]       # registered descriptors N, log steps
    budget_ms: float             # timed calls per configuration, in total
    min_samples: int
    max_samples: int
    warmup_calls: int
    processes: int               # fresh processes per configuration, samples pooled
    readies: tuple[int, ...] = (1, 10)   # ready descriptors A, besides 0 and N
    ops: tuple[str, ...] = ("wait", "register", "modify")


PROFILES = {
    "default": Profile(sizes=(1, 3, 10, 30, 100, 300, 1000, 3000, 9000), budget_ms=250,
                       min_samples=200, max_samples=10000, warmup_calls=50, processes=2),
    "quick": Profile(sizes=(1, 30, 1000, 9000), budget_ms=20, min_samples=40,
                     max_samples=1000, warmup_calls=10, processes=1, readies=(1,)),
}


class ChildFailed(RuntimeError):
    """A child process died, timed out or raised; the message says which."""


# ---------------------------------------------------------------- parent side

def run_micro(out=None, quick: bool = False, *, sizes=None, samples: int | None = None,
              ops=None, processes: int | None = None, seed: int | None = None) -> Path:
    """Run the micro-benchmark into run directory `out`; return it.

    `sizes`, `samples` (a fixed count per process), `ops` and `processes`
    override the profile (tests use a tiny configuration).
    """
    from bench.rundir.store import RunFormatError, append_row, write_json   # pandas: parent only
    profile = PROFILES["quick" if quick else "default"]
    if sizes is not None:
        profile = Profile(**{**asdict(profile), "sizes": tuple(sizes)})
    if ops is not None:
        profile = Profile(**{**asdict(profile), "ops": tuple(ops)})
    if processes is not None:
        profile = Profile(**{**asdict(profile), "processes": processes})
    started_at = utc_now()
    run_dir = Path(out) if out is not None else Path("results") / _run_id()
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "micro.csv"
    if csv_path.exists() and csv_path.stat().st_size > 0:
        raise RunFormatError(f"{csv_path} exists; a run directory is never overwritten: "
                             "give a new --out directory")
    limits = raise_nofile_limit()
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    groups = plan(profile, seed)
    info = {"format": FORMAT, "started_at": started_at, "profile": asdict(profile),
            "quick": quick, "samples_fixed": samples, "seed": seed,
            "rlimit_nofile": limits, "maxevents": MAXEVENTS, "kernel": platform.release(),
            "python": platform.python_version(), "start_method": "spawn"}
    if created and not (run_dir / "meta.json").exists():
        _write_min_meta(run_dir, started_at, limits, "running")

    t_start = perf_counter_ns()
    timer_ns: list[int] = []
    state = "failed"
    try:
        for i, (op, n, configs) in enumerate(groups, 1):
            rows = measure_group(configs, samples, profile, timer_ns)
            for row in rows:
                append_row(csv_path, row, MICRO_COLUMNS)
            elapsed_s = (perf_counter_ns() - t_start) / 1e9
            print(f"micro [{i:2}/{len(groups)}] {op:8} N={n:<5} {progress_line(rows)}"
                  f"  ({elapsed_s:.0f} s)", file=sys.stderr, flush=True)
        state = "complete"
    except KeyboardInterrupt:
        state = "interrupted"              # finished groups are in micro.csv already
        raise
    finally:
        info.update(ended_at=utc_now(), state=state,
                    timer_ns=statistics.median(timer_ns) if timer_ns else None)
        write_json(run_dir / "micro.json", info)
        if created:
            _write_min_meta(run_dir, started_at, limits, state)
    for line in summary_lines(_read_rows(csv_path)):
        print(line, file=sys.stderr, flush=True)
    return run_dir


def measure_group(configs: list[dict], samples: int | None, profile: Profile,
                  timer_ns: list[int]) -> list[dict]:
    """Measure one (op, N) group: every configuration in `profile.processes`
    fresh children, samples pooled; returns its micro.csv rows."""
    pooled = [{"data": [], "note": ""} for _ in configs]
    refused = None                         # select's refusal at this N, measured once
    for rnd in range(profile.processes):
        # later rounds run the group backwards, so no configuration always goes first
        order = range(len(configs)) if rnd % 2 == 0 else reversed(range(len(configs)))
        for j in order:
            cfg, acc = configs[j], pooled[j]
            if acc["note"] and not acc["data"]:
                continue                   # refused or failed: not retried
            if cfg["mechanism"] == "select" and refused:
                acc["note"] = refused
                continue
            try:
                res = run_in_child(measure, cfg, samples, profile, timeout_s=CHILD_TIMEOUT_S)
            except ChildFailed as e:
                acc["note"] = f"failed: {e}"
                continue
            if cfg["mechanism"] == "select" and res["note"].startswith(REFUSED):
                refused = res["note"]
            acc["note"] = res["note"]
            acc["data"] += res.get("data", [])
            timer_ns.extend(res.get("timer_ns", []))
    rows = []
    for cfg, acc in zip(configs, pooled):
        row = {k: cfg[k] for k in ("op", "mechanism", "registered", "ready", "timeout_mode")}
        row.update(ns_median=None, ns_p10=None, ns_p90=None, samples=None, note=acc["note"])
        if len(acc["data"]) >= 2:
            row["ns_median"], row["ns_p10"], row["ns_p90"] = summarize(acc["data"])
            row["samples"] = len(acc["data"])
        rows.append(row)
    return rows


def plan(profile: Profile, seed: int) -> list[tuple[str, int, list[dict]]]:
    """The configurations as (op, N, [config]) groups in run order.

    Within a group, mechanisms alternate for each (A, mode) and the first
    mechanism rotates; the groups themselves are shuffled with `seed`.
    """
    groups, turn = [], 0
    for op in profile.ops:
        mechs = MECHANISMS if op == "wait" else ("poll", "epoll")
        for n in profile.sizes:
            configs = []
            for ready, mode in cases(op, n, profile.readies):
                for k in range(len(mechs)):
                    mech = mechs[(turn + k) % len(mechs)]
                    configs.append({"op": op, "mechanism": mech, "registered": n,
                                    "ready": ready, "timeout_mode": mode})
                turn += 1
            groups.append((op, n, configs))
    random.Random(seed).shuffle(groups)
    return groups


def cases(op: str, n: int, readies: tuple[int, ...] = (1, 10)) -> list[tuple[int, str]]:
    """(ready, timeout_mode) pairs measured for one op at N registered:
    nothing ready (timeout 0 only), then each A in readies and N itself."""
    if op != "wait":
        return [(0, "zero")]
    readies = sorted({a for a in (*readies, n) if a <= n})
    return [(0, "zero")] + [(a, mode) for a in readies for mode in ("zero", "blocking")]


def progress_line(rows: list[dict]) -> str:
    """One line per group: the median per mechanism at 1 ready (else 0), zero timeout."""
    want = 1 if any(r["ready"] == 1 for r in rows) else 0
    parts = []
    for r in rows:
        if r["ready"] == want and r["timeout_mode"] == "zero":
            cost = f"{r['ns_median'] / 1000:8.1f} us" if r["ns_median"] else "   " + r["note"][:20]
            parts.append(f"{r['mechanism']:6} {cost}")
    return f"ready={want} zero: " + "  ".join(parts)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares y = slope * x + intercept; returns (slope, intercept, r2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    syy = sum((y - my) ** 2 for y in ys)
    slope = sxy / sxx if sxx else 0.0
    r2 = (sxy * sxy) / (sxx * syy) if sxx and syy else 0.0
    return slope, my - slope * mx, r2


def summary_lines(rows: list[dict]) -> list[str]:
    """Per-fd slopes of the wait cost (ns per registered fd) for C2, C3 and C7.

    Every mechanism is fitted over the sizes all of them ran (select stops at
    FD_SETSIZE), then poll and epoll again over all their sizes.
    """
    lines = []
    for ready, mode in ((0, "zero"), (1, "zero"), (1, "blocking")):
        cost = {m: {int(r["registered"]): float(r["ns_median"]) for r in rows
                    if r["op"] == "wait" and r["mechanism"] == m and r["ns_median"]
                    and int(r["ready"]) == ready and r["timeout_mode"] == mode}
                for m in MECHANISMS}
        common = sorted(set.intersection(*(set(c) for c in cost.values())))
        spans = [(common, MECHANISMS)]
        if any(set(c) != set(common) for c in cost.values()):
            spans.append((sorted(set(cost["poll"]) | set(cost["epoll"])), ("poll", "epoll")))
        for sizes, mechs in spans:
            parts = []
            for m in mechs:
                ns = [n for n in sizes if n in cost[m]]
                if len(ns) >= 2:
                    slope, _, r2 = fit_line(ns, [cost[m][n] for n in ns])
                    parts.append(f"{m} {slope:7.2f} ns/fd (R2 {r2:.2f})")
            if parts:
                lines.append(f"micro slope ready={ready} {mode:8} N<={sizes[-1]:<5}: "
                             + "  ".join(parts))
    return lines


def run_in_child(fn, *args, timeout_s: float = 60.0):
    """Run fn(*args) in a fresh spawned interpreter and return its result.

    Raises ChildFailed if the child raises, dies or exceeds timeout_s; the
    child is killed on every exit path.
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    ok = None
    try:
        if not recv.poll(timeout_s):
            raise ChildFailed(f"{fn.__name__}: no result within {timeout_s:.0f} s")
        ok, value = recv.recv()
    except EOFError:
        proc.join(5)
        raise ChildFailed(f"{fn.__name__}: child exited with {proc.exitcode} and no result") from None
    finally:
        recv.close()
        if ok is not None:
            proc.join(10)                  # let it close its descriptors before the next one
        if proc.is_alive():
            proc.kill()
            proc.join()
    if not ok:
        raise ChildFailed(value)
    return value


def _child_main(conn, fn, args):
    try:
        result = (True, fn(*args))
    except BaseException as e:             # the parent records it; the run goes on
        result = (False, f"{fn.__name__}: {type(e).__name__}: {e}")
    conn.send(result)
    conn.close()


def _read_rows(path: Path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _write_min_meta(run_dir: Path, started_at: str, limits: dict, state: str) -> None:
    """meta.json for a run directory micro created itself: the same document bench run writes."""
    from bench.rundir.meta import collect_meta
    from bench.rundir.store import write_json
    meta = collect_meta() | {"state": state, "started_at": started_at,
                             "ended_at": utc_now() if state != "running" else None,
                             "experiments": ["micro"]}
    meta["limits"]["rlimit_nofile"]["orchestrator"] = limits
    write_json(run_dir / "meta.json", meta)


# ----------------------------------------------------------------- child side

def open_pairs(n: int) -> tuple[list[int], list[int]]:
    """n socketpairs as (readers, writers): readers packed at the lowest free
    descriptor numbers, writers moved just under the soft RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    floor = soft - n - 16
    if floor < n + 64:
        raise OSError(f"RLIMIT_NOFILE soft {soft} too low for {n} socketpairs "
                      f"(need about {2 * n + 80}); raise the hard limit")
    readers, writers = [], []
    for _ in range(n):
        a, b = socket.socketpair()
        r, w = a.detach(), b.detach()
        writers.append(fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, floor))
        os.close(w)                        # frees a low number for the next reader
        readers.append(r)
    return readers, writers


def measure(cfg: dict, samples: int | None, profile: Profile) -> dict:
    """Child: set up one configuration and time it (see the module docstring)."""
    raise_nofile_limit()
    op, mech, n, ready = cfg["op"], cfg["mechanism"], cfg["registered"], cfg["ready"]
    blocking = cfg["timeout_mode"] == "blocking"
    readers, writers = open_pairs(n)
    extra_r, _extra_w = open_pairs(1) if op == "register" else (None, None)

    if mech == "select":
        rset, wset = set(readers), set()
        sel = select.select
        wait, args = sel, (rset, wset, (), None if blocking else 0)
    elif mech == "poll":
        obj = select.poll()
        for fd in readers:
            obj.register(fd, select.POLLIN)
        wait, args = obj.poll, (() if blocking else (0,))
        flag_in, flag_pri = select.POLLIN, select.POLLPRI
    else:
        obj = select.epoll()
        for fd in readers:
            obj.register(fd, select.EPOLLIN)
        wait, args = obj.poll, (-1 if blocking else 0, MAXEVENTS)
        flag_in, flag_pri = select.EPOLLIN, select.EPOLLPRI

    for w in writers[n - ready:]:
        os.write(w, b"x")                  # the A last registered: scanned last

    try:
        got = wait(*args)                  # also builds poll's pollfd array once
    except ValueError as e:
        return {"note": f"{REFUSED} ({type(e).__name__}: {e}; highest fd {max(readers)})"}
    returned = len(got[0]) if mech == "select" else len(got)
    want = min(ready, MAXEVENTS) if mech == "epoll" else ready
    if returned != want:
        raise RuntimeError(f"{mech} reported {returned} ready, expected {want}")
    note = f"epoll returned {MAXEVENTS} of {ready} ready (MAXEVENTS)" if returned < ready else ""

    if op == "wait":
        def one():
            t0 = perf_counter_ns()
            wait(*args)
            return perf_counter_ns() - t0
    elif op == "register":
        fd = extra_r[0]

        def one():
            t0 = perf_counter_ns()
            obj.register(fd, flag_in)
            wait(*args)
            t = perf_counter_ns() - t0
            obj.unregister(fd)
            return t
    else:
        fd, masks, flip = readers[-1], (flag_in | flag_pri, flag_in), [0]

        def one():
            flip[0] ^= 1
            mask = masks[flip[0]]
            t0 = perf_counter_ns()
            obj.modify(fd, mask)
            wait(*args)
            return perf_counter_ns() - t0

    gc.collect()
    gc.disable()
    timer_ns = statistics.median(_timer_overhead(200))   # reported, not subtracted
    warm = [one() for _ in range(max(profile.warmup_calls, 3))]
    if samples is None:
        est_ns = max(statistics.median(warm), 1)
        samples = int(min(profile.max_samples,
                          max(profile.min_samples, profile.budget_ms * 1e6 / est_ns)))
    data = [one() for _ in range(max(samples, 2))]
    gc.enable()
    return {"data": data, "note": note, "timer_ns": [timer_ns]}


def summarize(samples_ns: list[int]) -> tuple[int, int, int]:
    """(median, p10, p90) of the samples, in ns, rounded to integers."""
    deciles = statistics.quantiles(samples_ns, n=10, method="inclusive")
    return round(statistics.median(samples_ns)), round(deciles[0]), round(deciles[8])


def _timer_overhead(n: int) -> list[int]:
    out = []
    for _ in range(n):
        t0 = perf_counter_ns()
        out.append(perf_counter_ns() - t0)
    return out
