"""The sweep: a profile's points, one server + load generator pair at a time, into a run directory.

    run(profile, out, resume, only)
      -> for each point in plan.points() order, not yet in points.csv:
           run_point(): server pinned to one CPU -> READY -> loadgen on the
           other CPUs, signalling the server at the window's start and end,
           CPU sampled every 0.1 s -> SIGTERM the server -> raw dict
           raw/<id>.json, then tidy.to_row() appended to points.csv at once
      -> tasks (micro, probes, syscalls, memory), meta.json (state, counts), the report

Every child is in its own process group and killed on any exit path
(bench.tasks.procs); Ctrl-C, SIGTERM and SIGHUP stop the run between writes, keep
every finished point and mark meta.json interrupted.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from servers.cli import UsageError

from bench.sweep import plan

from bench.tasks import procs

from bench.sweep import tidy
from bench.rundir.meta import collect_meta, rlimit_nofile
from servers.sysutil import raise_nofile_limit, utc_now
from bench.sweep.profile import Profile, fd_limit, load, parse
from bench.rundir.schema import FORMAT, POINT_COLUMNS
from bench.rundir.store import append_row, read_meta, write_json

RESULTS = Path("results")
SAMPLE_EVERY_S = 0.1             # orchestrator CPU samples while the load generator runs
STOP_TIMEOUT_S = 10              # SIGTERM -> exit and stats written
RUN_ENV = "IOMUX_BENCH_RUN_DIR"  # set in every child: finds strays by their environment


class RunError(RuntimeError):
    """The run cannot go on (unwritable directory, ...): one line, exit 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: finished points are kept, children killed."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclass
class Context:
    """What every point of one run shares."""

    run_dir: Path
    profile: Profile
    server_cpus: list[int]
    loadgen_cpus: list[int]
    procs: int
    env: dict
    limits: dict = field(default_factory=dict)   # role -> RLIMIT_NOFILE seen in a child


def run(profile: str | Path | None = None, out: str | Path | None = None,
        resume: str | Path | None = None, only: str | None = None,
        *, log=None) -> Path:
    """Run (or complete, with resume) a profile's sweep; return the run directory.

    profile is a bundled name or a TOML path (None: default; with resume,
    the profile stored in the run's meta.json).

    Raises ProfileError or UsageError for bad input (before anything is
    created), RunError when the directory cannot be written, Interrupted
    on Ctrl-C / SIGTERM / SIGHUP after the run is left resumable.
    """
    log = log or sys.stderr
    if resume is not None and out is not None:
        raise UsageError("give --out or --resume, not both: --resume continues the "
                         "directory it names")
    prof, seed, meta, all_points, selected = _plan_run(profile, resume, only)
    limits = raise_nofile_limit()
    now = collect_meta()
    if meta is None:
        run_dir = _create_run_dir(out, prof.name)
        meta = now | {
            "state": "running", "started_at": utc_now(), "ended_at": None,
            "profile": {"name": prof.name, "source": prof.source, "text": prof.text,
                        "seed": seed},
            "runs": [], "tasks": {},
        }
        meta["limits"]["rlimit_nofile"]["orchestrator"] = limits
        _link_latest(run_dir)
    else:
        run_dir = Path(resume)
    done = _done_ids(run_dir, meta)
    todo = [p for p in selected if p.id not in done]
    if resume is not None and not todo and meta.get("state") == "complete":
        print(f"{run_dir}: already complete, nothing to resume; left as it was", file=log)
        return run_dir                          # a finished run (results/reference) stays untouched

    ctx = _context(run_dir, prof)
    meta["pinning"] = {"server_cpus": ctx.server_cpus, "loadgen_cpus": ctx.loadgen_cpus,
                       "loadgen_procs": ctx.procs,
                       "shared": bool(set(ctx.server_cpus) & set(ctx.loadgen_cpus))}
    # one entry per invocation: the first run and each --resume
    this_run = {"started_at": utc_now(), "ended_at": None, "only": only,
                "resume": resume is not None, "git": now["git"], "points": len(todo)}
    meta["runs"].append(this_run)
    meta["state"] = "running"
    write_json(run_dir / "meta.json", meta)

    estimate = sum(plan.estimate_s(p) for p in todo)
    mechanisms = sorted({p.mechanism for p in todo if isinstance(p, plan.Point)})
    refused = sum(1 for p in todo if isinstance(p, plan.Point) and p.refused)
    tasks = [p.id for p in todo if isinstance(p, plan.Task)]
    print(f"bench run: profile {prof.name} (seed {seed}): {len(todo)} of {len(all_points)} "
          f"points to run ({refused} refused by FD_SETSIZE"
          f"{', tasks: ' + ', '.join(tasks) if tasks else ''}), mechanisms "
          f"{', '.join(mechanisms) or '-'}; server on CPU {_cpulist(ctx.server_cpus)}, "
          f"loadgen on CPU {_cpulist(ctx.loadgen_cpus)}; estimated {_hms(estimate)}",
          file=log, flush=True)

    progress = Progress(todo, log)
    rows: list[dict] = []
    state = "failed"
    with _Signals() as sigs:
        try:
            for p in todo:
                if isinstance(p, plan.Task):
                    result = run_task(p, run_dir, ctx)
                    with sigs.critical():
                        meta["tasks"][p.id] = result
                        write_json(run_dir / "meta.json", meta)
                    progress.task_done(p, result)
                    continue
                raw = run_point(p, ctx)
                row = tidy.to_row(raw["point"], raw["loadgen"], raw["server"],
                                  raw["snapshots"], raw["cpu"], raw["error"])
                with sigs.critical():
                    write_json(run_dir / "raw" / f"{p.id}.json", raw)
                    append_row(run_dir / "points.csv", row, POINT_COLUMNS)
                rows.append(row)
                progress.point_done(p, row)
            state = "complete"
        except KeyboardInterrupt:
            state = "interrupted"
            raise Interrupted(run_dir) from None
        finally:
            sigs.hold()                # a second Ctrl-C must not cut meta.json short
            procs.kill_all()
            shutil.rmtree(run_dir / ".work", ignore_errors=True)
            for role, lim in ctx.limits.items():
                meta["limits"]["rlimit_nofile"][role] = lim
            counts = _counts(run_dir, all_points, meta)
            if state == "complete" and (counts["failed"] or counts["tasks_failed"]):
                state = "failed"
            meta.update(state=state, ended_at=utc_now(), points=counts)
            this_run.update(ended_at=utc_now(), elapsed_s=round(progress.elapsed_s(), 1),
                            estimated_s=round(estimate, 1))
            write_json(run_dir / "meta.json", meta)
            if state == "interrupted":
                print(f"interrupted: {progress.done} of {len(todo)} points finished and kept; "
                      f"complete the run with: python -m bench run --resume {run_dir}",
                      file=log, flush=True)
    progress.close()
    print_summary(rows, progress, estimate, log)
    _write_report(run_dir, log)
    return run_dir


def _plan_run(profile, resume, only):
    """Check everything the user gave before anything is created.

    (profile, seed, meta of the resumed run or None, every point, the points --only keeps).
    """
    pattern = _compile(only)
    if resume is not None:
        meta = read_meta(resume)
        stored = meta.get("profile") or {}
        if not {"text", "seed", "name"} <= set(stored):
            raise UsageError(f"{resume} was not made by `python -m bench run` (its meta.json "
                             "has no profile): --resume completes bench run directories only")
        if profile is not None and profile != stored["name"]:
            raise UsageError(f"--resume uses the profile stored in {resume}/meta.json "
                             f"({stored['name']}); drop --profile {profile}")
        prof = parse(stored["text"], source=f"{resume}/meta.json profile", name=stored["name"])
        seed = stored["seed"]
    else:
        meta = None
        prof = load("default" if profile is None else profile)
        seed = prof.seed if prof.seed is not None else random.SystemRandom().randrange(2**31)
    all_points = plan.points(prof, seed)
    selected = [p for p in all_points if pattern is None or pattern.search(p.id)]
    if not selected:
        raise UsageError(f"--only {only!r} matches none of the {len(all_points)} points; "
                         f"ids look like {all_points[0].id}")
    return prof, seed, meta, all_points, selected


# -- one point ----------------------------------------------------------------

def run_point(point: plan.Point, ctx: Context) -> dict:
    """Measure one point with real processes; the raw dict kept as raw/<id>.json.

    Never raises for a point that fails: the reason goes into raw["error"]
    and the sweep goes on. KeyboardInterrupt kills the children and propagates.
    """
    raw = {"format": FORMAT, "point": point.to_dict(), "error": None, "loadgen": None,
           "server": None, "snapshots": [], "cpu": {"samples": []}, "stderr": {},
           "exit_codes": {}, "started_at": utc_now()}
    if point.refused:
        return raw
    work = ctx.run_dir / ".work" / point.id
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stats_path, snaps_path, lg_path = work / "server.json", work / "snapshots.jsonl", work / "loadgen.json"
    server = loadgen = None
    t0 = time.perf_counter()
    try:
        server = procs.Child("server", server_argv(point, stats_path, snaps_path),
                             cpus=ctx.server_cpus, env=ctx.env)
        host, port, pid = server.read_ready(ctx.profile.ready_timeout_s)
        ctx.limits.setdefault("server", rlimit_nofile(server.pid))
        loadgen = procs.Child("loadgen", loadgen_argv(point, f"{host}:{port}", int(pid),
                                                      lg_path, ctx),
                              cpus=ctx.loadgen_cpus, env=ctx.env)
        ctx.limits.setdefault("loadgen", rlimit_nofile(loadgen.pid))
        deadline = point.warmup_s + point.window_s + ctx.profile.point_timeout_s
        samples, problem = _watch(loadgen, server, deadline)
        raw["cpu"]["samples"] = samples
        lg_code = loadgen.proc.wait()
        raw["exit_codes"]["loadgen"] = lg_code
        raw["loadgen"] = _read_json(lg_path)
        if problem is None and raw["loadgen"] is None:
            problem = f"loadgen exited {lg_code} without its JSON: {loadgen.stderr_tail()}"
        sv_code = server.exited()
        if sv_code is not None:
            problem = problem or f"server exited {sv_code} during the load: {server.stderr_tail()}"
        else:
            sv_code = server.stop(signal.SIGTERM, STOP_TIMEOUT_S)
            if sv_code is None:
                problem = problem or f"server did not exit within {STOP_TIMEOUT_S} s of SIGTERM"
            elif sv_code != 0:
                problem = problem or f"server exited {sv_code} at SIGTERM: {server.stderr_tail()}"
        raw["exit_codes"]["server"] = sv_code
        raw["server"] = _read_json(stats_path)
        raw["snapshots"] = _read_lines(snaps_path)
        raw["error"] = problem
    except procs.ChildError as e:
        raw["error"] = str(e)
    finally:
        for child in (loadgen, server):
            if child is not None:
                child.kill()
                raw["stderr"][child.name] = child.stderr_text(4000)
                child.close()
        shutil.rmtree(work, ignore_errors=True)
    raw["wall_s"] = round(time.perf_counter() - t0, 3)
    return raw


def server_argv(point: plan.Point, stats: Path, snapshots: Path) -> list[str]:
    argv = [sys.executable, "-m", "servers", point.mechanism, "--port", "0",
            "--stats", str(stats), "--snapshots", str(snapshots)]
    if point.server_max_fds is not None:
        argv += ["--max-fds", str(point.server_max_fds)]
    return argv


def loadgen_argv(point: plan.Point, target: str, server_pid: int, out: Path,
                 ctx: Context) -> list[str]:
    argv = [sys.executable, "-m", "loadgen", "--target", target,
            "--connections", str(point.connections),
            "--active-ratio", repr(point.active / point.connections),
            "--msg-size", str(point.msg_size),
            "--duration", repr(point.window_s), "--warmup", repr(point.warmup_s),
            "--procs", str(ctx.procs), "--cpus", _cpulist(ctx.loadgen_cpus),
            "--out", str(out), "--signal-pid", str(server_pid)]
    if point.rate is not None:
        argv += ["--rate", repr(point.rate), "--arrivals", point.arrivals]
    if point.pipeline != 1:
        argv += ["--pipeline", str(point.pipeline)]
    return argv


def _watch(loadgen: procs.Child, server: procs.Child, timeout_s: float):
    """Sample CPU (see _sample) until the load generator exits; (samples, problem or None).

    The last sample is taken while the exited load generator is still a
    zombie, so its counters are still readable.
    """
    samples = []
    deadline = time.monotonic() + timeout_s
    problem = None
    while True:
        samples.append(_sample(server.pid, loadgen.pid))
        if loadgen.exited() is not None:
            break
        if server.exited() is not None:
            problem = (f"server exited {server.exited()} during the load: "
                       f"{server.stderr_tail()}")
            break
        if time.monotonic() > deadline:
            problem = f"loadgen did not finish within {timeout_s:g} s: killed"
            break
        time.sleep(SAMPLE_EVERY_S)
    if problem:
        loadgen.kill()
    return samples, problem


_TICK = os.sysconf("SC_CLK_TCK")
_PF_KTHREAD = 0x00200000


def _sample(server_pid: int, loadgen_pid: int) -> dict:
    """CPU seconds so far, by whom: one scan of /proc (about 1 ms for 100 processes).

    Each process counts utime + stime + cutime + cstime, so the sum over live
    processes also holds descendants already reaped. `others_s` is every
    user-space process but the server, the load generator's tree and this
    orchestrator (whose own sampling is recorded as `self_s`); kernel
    threads are `kernel_s`. Machine-wide irq/softirq time is not charged to
    processes consistently (loopback traffic is processed in softirq, partly
    on idle CPUs), so it is recorded apart and left out of the noise; steal
    (the hypervisor running someone else) is noise.
    """
    table = _proc_table()
    ours = {"server_s": _tree(table, server_pid), "loadgen_s": _tree(table, loadgen_pid)}
    me = os.getpid()
    skip = ours["server_s"] | ours["loadgen_s"] | {me}
    t = psutil.cpu_times()
    sample = {"t": time.monotonic()}
    sample.update({k: round(sum(table[p][2] for p in pids) / _TICK, 3) for k, pids in ours.items()})
    sample.update(
        others_s=round(sum(c for p, (_, fl, c) in table.items()
                           if p not in skip and not fl & _PF_KTHREAD) / _TICK, 3),
        kernel_s=round(sum(c for _, fl, c in table.values() if fl & _PF_KTHREAD) / _TICK, 3),
        self_s=round(table.get(me, (0, 0, 0))[2] / _TICK, 3),
        steal_s=t.steal, softirq_s=t.softirq + t.irq,
        machine_s=round(t.user + t.nice + t.system + t.irq + t.softirq + t.steal, 3),
    )
    return sample


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, flags, utime + stime + cutime + cstime in ticks) for every process."""
    table = {}
    for pid, fields in procs.proc_stats():
        table[pid] = (int(fields[1]), int(fields[6]), sum(map(int, fields[11:15])))
    return table


def _tree(table: dict, root: int) -> set[int]:
    """root and its descendants (zombies included: their counters still read)."""
    if root not in table:
        return set()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = set(), [root]
    while stack:
        pid = stack.pop()
        tree.add(pid)
        stack.extend(children.get(pid, ()))
    return tree


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_lines(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


# -- tasks ------------------------------------------------------------------------

def _run_micro(task: plan.Task, run_dir: Path, ctx: Context | None = None) -> str:
    from bench.tasks.micro import run_micro
    return str(run_micro(out=run_dir, quick=task.quick))


def _run_probes(task: plan.Task, run_dir: Path, ctx: Context | None = None) -> str:
    from bench.tasks.probes import run_probes
    doc = run_probes(run_dir)
    tested = sum(1 for e in doc["probes"].values() if e["status"] == "tested")
    return f"{run_dir / 'probes.json'} ({tested} of {len(doc['probes'])} probes tested)"


def _task_kwargs(task: plan.Task, ctx: Context | None) -> dict:
    kw = {"fd_limits": {m: fd_limit(m) for m in task.spec.mechanisms if fd_limit(m)}}
    if ctx is not None:
        kw.update(server_cpus=ctx.server_cpus, env=ctx.env)
    return kw


def _run_syscalls(task: plan.Task, run_dir: Path, ctx: Context | None = None) -> str:
    from bench.tasks.syscalls import run_syscalls
    e = task.spec
    kw = _task_kwargs(task, ctx)
    if ctx is not None:
        kw.update(loadgen_cpus=ctx.loadgen_cpus, loadgen_procs=ctx.procs)
    doc = run_syscalls(run_dir, e.mechanisms, e.points, warmup_s=e.warmup_s, window_s=e.window_s,
                       tracer=e.tracer, **kw)
    if doc["tracer"] is None:
        return f"not tested: {doc['reason']}"
    pts = doc["points"].values()
    failed = [p for p in pts if p.get("error") and not p["error"].startswith("refused:")]
    measured = sum(1 for p in pts if not p.get("error"))
    if failed and not measured:
        raise RuntimeError(f"every profiled point failed, first: {failed[0]['error']}")
    return (f"{run_dir / 'syscalls.csv'} ({doc['tracer']}: {measured} points"
            + (f", {len(failed)} failed: see syscalls.json" if failed else "") + ")")


def _run_memory(task: plan.Task, run_dir: Path, ctx: Context | None = None) -> str:
    from bench.tasks.memory import run_memory
    e = task.spec
    doc = run_memory(run_dir, e.mechanisms, e.connections, **_task_kwargs(task, ctx))
    ok = [m for m in doc["measurements"] if not m["error"] and m["mechanism"] != "control"]
    failed = [m for m in doc["measurements"] if m["error"]]
    if failed and not ok:
        raise RuntimeError(f"every memory measurement failed, first: {failed[0]['error']}")
    return (f"{run_dir / 'memory.csv'} ({len(ok)} rows"
            + (f", {len(failed)} failed: see memory.json" if failed else "")
            + (f"; kernel not measured: {doc['reason']}" if doc["reason"] else "") + ")")


TASK_RUNNERS = {  # kind -> (runner, module it needs)
    "micro": (_run_micro, "bench.tasks.micro"),
    "probes": (_run_probes, "bench.tasks.probes"),
    "syscalls": (_run_syscalls, "bench.tasks.syscalls"),
    "memory": (_run_memory, "bench.tasks.memory"),
}


def run_task(task: plan.Task, run_dir: Path, ctx: Context | None = None) -> dict:
    """Run a task once; its outcome for meta.json["tasks"] (never raises but for Ctrl-C)."""
    runner, module = TASK_RUNNERS[task.experiment]
    t0 = time.perf_counter()
    result = {"state": "failed", "error": None, "output": None, "quick": task.quick,
              "started_at": utc_now()}
    if importlib.util.find_spec(module) is None:
        result["error"] = f"{module} is not available yet"
    else:
        try:
            result.update(state="done", output=runner(task, run_dir, ctx))
        except SystemExit as e:
            result["error"] = f"{task.id} exited {e.code}"
        except Exception as e:
            result["error"] = f"{type(e).__name__}: {e}"
    result["duration_s"] = round(time.perf_counter() - t0, 1)
    return result


# -- the run directory -----------------------------------------------------------

def _create_run_dir(out, profile_name: str) -> Path:
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists():
            raise UsageError(f"--out {run_dir} already exists: choose a new directory, "
                             f"or complete that run with --resume {run_dir}")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run_dir = RESULTS / f"{stamp}-{profile_name}"
        n = 2
        while run_dir.exists():
            run_dir = RESULTS / f"{stamp}-{profile_name}-{n}"
            n += 1
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "raw").mkdir()
    except OSError as e:
        raise RunError(f"cannot create {run_dir}: {e.strerror}; choose a writable --out") from None
    return run_dir


def _link_latest(run_dir: Path) -> None:
    """results/latest -> the newest run, for runs made in a results/ directory only
    (an --out elsewhere, say /tmp/x, leaves its parent alone); never replaces a
    real file or directory."""
    if run_dir.resolve().parent.name != RESULTS.name:
        return
    latest = run_dir.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return
    tmp = run_dir.parent / f".latest.tmp{os.getpid()}"
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, latest)


def _done_ids(run_dir: Path, meta: dict) -> set[str]:
    """Ids already recorded: rows of points.csv and tasks that finished."""
    done = {t for t, r in meta.get("tasks", {}).items() if r.get("state") == "done"}
    path = run_dir / "points.csv"
    if path.exists():
        with open(path, newline="") as f:
            done |= {r["point_id"] for r in csv.DictReader(f) if r.get("point_id")}
    return done


def _counts(run_dir: Path, all_points, meta: dict) -> dict:
    planned = [p for p in all_points if isinstance(p, plan.Point)]
    rows = []
    path = run_dir / "points.csv"
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    recorded = {r["point_id"] for r in rows}
    refused = sum(1 for r in rows if r["error"].startswith("refused:"))
    failed = sum(1 for r in rows if r["error"] and not r["error"].startswith("refused:"))
    tasks = [p.id for p in all_points if isinstance(p, plan.Task)]
    states = {t: meta["tasks"].get(t, {}).get("state") for t in tasks}
    return {
        "planned": len(planned), "recorded": len(rows), "refused": refused, "failed": failed,
        "measured": len(rows) - refused - failed,
        "saturated": sum(1 for r in rows if r["saturated"] == "True"),
        "noisy": sum(1 for r in rows if r["noisy"] == "True"),
        "missing": sum(1 for p in planned if p.id not in recorded)
        + sum(1 for s in states.values() if s is None),
        "tasks_failed": sum(1 for s in states.values() if s == "failed"),
    }


def _context(run_dir: Path, prof: Profile) -> Context:
    """Pin the server to the last allowed CPU and the load generator to the others."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = cpus[-1:]
    loadgen_cpus = cpus[:-1] or cpus       # one CPU: they share it (meta says so)
    env = dict(os.environ, **{RUN_ENV: str(run_dir.resolve())})
    return Context(run_dir=run_dir, profile=prof, server_cpus=server_cpus,
                   loadgen_cpus=loadgen_cpus, procs=prof.procs or len(loadgen_cpus), env=env)


def _write_report(run_dir: Path, log) -> None:
    if importlib.util.find_spec("bench.report.render") is None:
        print("report: bench.report.render is not available yet; skipped", file=log, flush=True)
        return
    from bench.report.render import write_report
    try:
        path = write_report(run_dir)
    except Exception as e:
        print(f"report: failed ({type(e).__name__}: {e}); retry with "
              f"python -m bench report {run_dir}", file=log, flush=True)
        return
    print(path, flush=True)


def _compile(only: str | None):
    if only is None:
        return None
    try:
        return re.compile(only)
    except re.error as e:
        raise UsageError(f"--only {only!r} is not a regular expression ({e})") from None


class _Signals:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, but never inside critical()."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self._pending = None
        self._critical = False
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum, frame):
        if self._critical:
            self._pending = signum
        else:
            raise KeyboardInterrupt

    def hold(self):
        """Defer signals for good: the run is ending and must finish its writes."""
        self._critical = True

    @contextlib.contextmanager
    def critical(self):
        """Finish the writes inside before acting on a signal that arrives meanwhile."""
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self._pending is not None:
            raise KeyboardInterrupt


# -- progress -----------------------------------------------------------------------

class Progress:
    """One line per finished point on stderr, and a bar with done/total and ETA.

    The bar is redrawn in place on a terminal; elsewhere (logs, CI) each
    line carries the ETA instead. The ETA scales the estimate of the points
    left by how far the finished ones ran over or under theirs.
    """

    def __init__(self, todo, log):
        self.todo = todo
        self.total = len(todo)
        self.done = 0
        self.log = log
        self.tty = hasattr(log, "isatty") and log.isatty()
        self.t0 = time.perf_counter()
        self.est_done = 0.0
        self.est_left = sum(plan.estimate_s(p) for p in todo)
        if self.tty:
            self.log.write(self._bar())
            self.log.flush()

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0

    def eta_s(self) -> float:
        ratio = self.elapsed_s() / self.est_done if self.est_done > 5 else 1.0
        return self.est_left * ratio

    def _advance(self, p) -> None:
        self.done += 1
        est = plan.estimate_s(p)
        self.est_done += est
        self.est_left -= est

    def point_done(self, p: plan.Point, row: dict) -> None:
        self._advance(p)
        axes = f"c={p.connections:<5} a={p.active:<4} s={p.msg_size:<5}"
        if p.rate is not None:
            axes += f" rate={p.rate:g}"
        line = f"[{self.done:>{len(str(self.total))}}/{self.total}] {p.experiment:<9} {p.mechanism:<8} {axes} r={p.rep}"
        if row.get("throughput_msgs_s") is not None:
            p99 = row.get("p99_us")
            p99 = f"{p99:,.0f}" if p99 is not None else "-"
            line += f"  {row['throughput_msgs_s']:>9,.0f} msg/s  p99 {p99:>7} µs"
        if p.experiment == "fdlimit" and row.get("established") is not None:
            line += f"  established {row['established']} echoing {row.get('echoing')}"
        flags = []
        if row.get("saturated"):
            flags.append("SATURATED")
        if row.get("noisy"):
            flags.append(f"NOISY {row['noise_cpu_pct']:.0f}%")
        if row.get("error"):
            err = row["error"]
            flags.append(err if err.startswith("refused:")
                         else f"FAILED: {err} (raw/{p.id}.json)")
        if flags:
            line += "  " + "  ".join(flags)
        self._print(line)

    def task_done(self, t: plan.Task, result: dict) -> None:
        self._advance(t)
        what = (f"done in {result['duration_s']:.1f} s -> {result['output']}"
                if result["state"] == "done" else f"FAILED: {result['error']}")
        self._print(f"[{self.done}/{self.total}] {t.experiment:<9} "
                    f"{'quick' if t.quick else 'full':<8} {what}")

    def _print(self, line: str) -> None:
        if self.tty:
            self.log.write("\r\033[K" + line + "\n" + self._bar())
        else:
            self.log.write(f"{line}  (eta {_hms(self.eta_s())})\n")
        self.log.flush()

    def _bar(self, width: int = 30) -> str:
        filled = int(width * self.done / max(self.total, 1))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}  "
                f"elapsed {_hms(self.elapsed_s())}  eta {_hms(self.eta_s())}")

    def close(self) -> None:
        if self.tty:
            self.log.write("\r\033[K")
            self.log.flush()


def print_summary(rows: list[dict], progress: Progress, estimate: float, log) -> None:
    """A table per experiment and mechanism, then totals and what to do about problems."""
    if rows:
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["experiment"], r["mechanism"]), []).append(r)
        head = (f"{'experiment':<10} {'mechanism':<9} {'points':>6} {'refused':>7} "
                f"{'failed':>6} {'satur.':>6} {'noisy':>5} {'msg/s med':>10} "
                f"{'p99 µs med':>10} {'cpu µs/msg':>10}")
        print("\n" + head + "\n" + "-" * len(head), file=log)
        for (exp, mech), rs in sorted(groups.items()):
            ok = [r for r in rs if not r.get("error")]
            print(f"{exp:<10} {mech:<9} {len(rs):>6} "
                  f"{sum(1 for r in rs if (r.get('error') or '').startswith('refused:')):>7} "
                  f"{sum(1 for r in rs if r.get('error') and not r['error'].startswith('refused:')):>6} "
                  f"{sum(1 for r in rs if r.get('saturated')):>6} "
                  f"{sum(1 for r in rs if r.get('noisy')):>5} "
                  f"{_median(ok, 'throughput_msgs_s', '{:,.0f}'):>10} "
                  f"{_median(ok, 'p99_us', '{:,.0f}'):>10} "
                  f"{_median(ok, 'server_cpu_us_per_msg', '{:.1f}'):>10}", file=log)
    print(f"\n{progress.done} points in {_hms(progress.elapsed_s())} "
          f"(estimated {_hms(estimate)})", file=log)
    sat = sum(1 for r in rows if r.get("saturated"))
    noisy = sum(1 for r in rows if r.get("noisy"))
    failed = [r for r in rows if r.get("error") and not r["error"].startswith("refused:")]
    if sat:
        print(f"warning: the load generator was CPU-bound on {sat} points (SATURATED): they "
              "measure the load generator, not the server, and analysis sets them aside; "
              "a machine with more cores for the load generator avoids it", file=log)
    if noisy:
        print(f"warning: {noisy} points were noisy (other processes used more CPU than the "
              "threshold during the window): rerun on a quieter machine for firm numbers",
              file=log)
    if failed:
        print(f"warning: {len(failed)} points failed: see the error column of points.csv "
              f"and raw/<point-id>.json (first: {failed[0]['point_id']}: {failed[0]['error']})",
              file=log)
    log.flush()


def _median(rows, key, fmt) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return fmt.format(statistics.median(values)) if values else "-"


def _cpulist(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def _hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    m, s = divmod(seconds, 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
