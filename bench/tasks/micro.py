"""Wait-call micro-benchmark: libevent's bench.c design on socketpairs, no TCP.

N socketpairs are opened and one end of each is registered; A of them are
made readable by writing one byte to their peer (never read, so they stay
ready). Each configuration (op, mechanism, N, A, timeout mode) runs in a
fresh spawned interpreter (`processes` of them per configuration, samples
pooled, the second round in reverse order); mechanisms alternate within every (N, A, mode)
and the (op, N) groups run in a seeded random order, so drift on a shared
machine lands on every mechanism and every N alike. Each row of micro.csv
(schema.MICRO_COLUMNS) is the median, p10 and p90 of the `samples` single
operations, each timed by perf_counter_ns() around it.

This module is the parent side: the configurations, their order, the
children and the rows. What each op times, and how, is the child side:
bench.tasks.micro_child. The per-fd slopes printed after a run are
bench.analysis.micro_summary.
"""

from __future__ import annotations

import platform
import random
import statistics
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter_ns

from bench.rundir.schema import FORMAT, MICRO_COLUMNS
from bench.tasks.child import ChildFailed, run_in_child
from bench.tasks.micro_child import MAXEVENTS, REFUSED, measure
from servers.sysutil import raise_nofile_limit, utc_now

MECHANISMS = ("select", "poll", "epoll", "io_uring")   # io_uring: wait only (micro_uring)
DRAIN_MECHANISMS = ("select", "poll", "epoll")         # mode drain: bench.c's loop (micro_child)
CHILD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class MicroConfig:
    sizes: tuple[int, ...]       # registered descriptors N, log steps
    budget_ms: float             # timed calls per configuration, in total
    min_samples: int
    max_samples: int
    warmup_calls: int
    processes: int               # fresh processes per configuration, samples pooled
    readies: tuple[int, ...] = (1, 10)   # ready descriptors A, besides 0 and N
    ops: tuple[str, ...] = ("wait", "drain", "register", "modify")
    drain_sizes: tuple[int, ...] = (10, 1000, 9000)   # N of mode=drain (1 and all ready)


CONFIGS = {
    "default": MicroConfig(sizes=(1, 3, 10, 30, 100, 300, 1000, 3000, 9000), budget_ms=250,
                           min_samples=200, max_samples=10000, warmup_calls=50, processes=2),
    "quick": MicroConfig(sizes=(1, 30, 1000, 9000), budget_ms=20, min_samples=40,
                         max_samples=1000, warmup_calls=10, processes=1, readies=(1,),
                         drain_sizes=(30, 1000)),
}


def run_micro(out=None, quick: bool = False, *, sizes=None, samples: int | None = None,
              ops=None, processes: int | None = None, seed: int | None = None) -> Path:
    """Run the micro-benchmark into run directory `out`; return it.

    `sizes`, `samples` (a fixed count per process), `ops` and `processes`
    override the configuration (tests use a tiny one).
    """
    from bench.rundir.store import RunFormatError, append_row, write_json   # pandas: parent only
    config = CONFIGS["quick" if quick else "default"]
    if sizes is not None:
        config = MicroConfig(**{**asdict(config), "sizes": tuple(sizes), "drain_sizes": tuple(sizes)})
    if ops is not None:
        config = MicroConfig(**{**asdict(config), "ops": tuple(ops)})
    if processes is not None:
        config = MicroConfig(**{**asdict(config), "processes": processes})
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
    groups = schedule(config, seed)
    info = {"format": FORMAT, "started_at": started_at, "profile": asdict(config),
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
            rows = measure_group(configs, samples, config, timer_ns)
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
    return run_dir


def measure_group(configs: list[dict], samples: int | None, config: MicroConfig,
                  timer_ns: list[int]) -> list[dict]:
    """Measure one (op, N) group: every configuration in `config.processes`
    fresh children, samples pooled; returns its micro.csv rows."""
    pooled = [{"data": [], "note": "", "user_s": 0.0, "sys_s": 0.0, "cpu_calls": 0} for _ in configs]
    refused = None                         # select's refusal at this N, measured once
    for rnd in range(config.processes):
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
                res = run_in_child(measure, cfg, samples, config, timeout_s=CHILD_TIMEOUT_S)
            except ChildFailed as e:
                acc["note"] = f"failed: {e}"
                continue
            if cfg["mechanism"] == "select" and res["note"].startswith(REFUSED):
                refused = res["note"]
            acc["note"] = res["note"]
            acc["data"] += res.get("data", [])
            acc["user_s"] += res.get("cpu_user_s", 0.0)
            acc["sys_s"] += res.get("cpu_sys_s", 0.0)
            acc["cpu_calls"] += res.get("cpu_calls", 0)
            timer_ns.extend(res.get("timer_ns", []))
    rows = []
    for cfg, acc in zip(configs, pooled):
        row = {k: cfg[k] for k in ("op", "mechanism", "registered", "ready", "timeout_mode")}
        row.update(ns_median=None, ns_p10=None, ns_p90=None, samples=None, note=acc["note"],
                   mode=cfg.get("mode", "wait"))
        if len(acc["data"]) >= 2:
            row["ns_median"], row["ns_p10"], row["ns_p90"] = summarize(acc["data"])
            row["samples"] = len(acc["data"])
            if acc["cpu_calls"]:               # io_uring: none (its loop writes untimed to make readiness)
                row.update(cpu_split(acc["user_s"], acc["sys_s"], acc["cpu_calls"]))
        rows.append(row)
    return rows


def schedule(config: MicroConfig, seed: int) -> list[tuple[str, int, list[dict]]]:
    """The configurations as (op, N, [config]) groups in run order.

    Within a group, mechanisms alternate for each (A, mode) and the first
    mechanism rotates; the groups themselves are shuffled with `seed`.
    """
    groups, turn = [], 0
    for op in config.ops:
        mechs = (MECHANISMS if op == "wait" else DRAIN_MECHANISMS if op == "drain"
                 else ("poll", "epoll"))
        for n in (config.drain_sizes if op == "drain" else config.sizes):
            configs = []
            for ready, mode in cases(op, n, config.readies):
                for k in range(len(mechs)):
                    mech = mechs[(turn + k) % len(mechs)]
                    # drain rows are wait rows in mode drain (micro.csv's mode column)
                    configs.append({"op": "wait" if op == "drain" else op, "mechanism": mech,
                                    "registered": n, "ready": ready, "timeout_mode": mode,
                                    "mode": "drain" if op == "drain" else "wait"})
                turn += 1
            groups.append((op, n, configs))
    random.Random(seed).shuffle(groups)
    return groups


def cases(op: str, n: int, readies: tuple[int, ...] = (1, 10)) -> list[tuple[int, str]]:
    """(ready, timeout_mode) pairs measured for one op at N registered:
    nothing ready (timeout 0 only), then each A in readies and N itself;
    drain: 1 ready and, up to MAXEVENTS, all N, timeout 0."""
    if op == "drain":                   # 1 ready, and all of them up to MAXEVENTS
        return [(a, "zero") for a in sorted({1, n}) if a == 1 or n <= MAXEVENTS]
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


def summarize(samples_ns: list[int]) -> tuple[int, int, int]:
    """(median, p10, p90) of the samples, in ns, rounded to integers."""
    deciles = statistics.quantiles(samples_ns, n=10, method="inclusive")
    return round(statistics.median(samples_ns)), round(deciles[0]), round(deciles[8])


def cpu_split(user_s: float, sys_s: float, calls: int) -> dict:
    """user_ns_per_call, sys_ns_per_call and their sum cpu_ns_per_call, to 0.1 ns,
    from the CPU seconds a loop of `calls` timed operations used (C11)."""
    user, sys_ = user_s * 1e9 / calls, sys_s * 1e9 / calls
    return {"user_ns_per_call": round(user, 1), "sys_ns_per_call": round(sys_, 1),
            "cpu_ns_per_call": round(user + sys_, 1)}


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
