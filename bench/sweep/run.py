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
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

from bench.rundir.lock import LockedError, RunLock, holder
from bench.rundir.meta import ClusterUnavailable, collect_meta, differences
from bench.rundir.schema import POINT_COLUMNS
from bench.rundir.store import append_row, check_out_dir, read_meta, write_json
from bench.sweep import cluster as sweep_cluster
from bench.sweep import ledger, plan, tidy
from bench.sweep.point import Context, cpulist, run_point
from bench.sweep.profile import Profile, load, parse
from bench.sweep.progress import Progress, hms, print_summary
from bench.sweep.signals import Signals
from bench.sweep.taskrun import run_task
from bench.tasks import procs
from servers.cli import UsageError
from servers.sysutil import OutputPathError, raise_nofile_limit, utc_now

RESULTS = Path("results")
RUN_ENV = "IOMUX_BENCH_RUN_DIR"  # set in every child: finds strays by their environment
MAX_ESTIMATE_S = 24 * 3600       # a longer sweep needs --force


class RunError(RuntimeError):
    """The run cannot go on (unwritable directory, ...): one line, exit 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: finished points are kept, children killed."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def run(profile: str | Path | None = None, out: str | Path | None = None,
        resume: str | Path | None = None, only: str | None = None,
        *, force: bool = False, cluster: str | None = None, log=None) -> Path:
    """Run (or complete, with resume) a profile's sweep; return the run directory.

    profile is a bundled name or a TOML path (None: default; with resume,
    the profile stored in the run's meta.json). Resuming retries the points
    that failed (their rows and raw JSON are kept in retried.csv and
    raw/retried/) and refuses a machine or software that differs from the
    run's meta.json unless force.

    Raises ProfileError or UsageError for bad input (before anything is
    created), RunError when the directory cannot be written, Interrupted
    on Ctrl-C / SIGTERM / SIGHUP after the run is left resumable.
    cluster: a Dask scheduler for the load (bench.sweep.cluster.resolve).
    """
    log = log or sys.stderr
    if resume is not None and out is not None:
        raise UsageError("give --out or --resume, not both: --resume continues the "
                         "directory it names")
    prof, seed, meta, all_points, selected = _plan_run(profile, resume, only)
    _check_duration(selected, force)
    try:
        on_cluster = sweep_cluster.resolve(cluster, prof, meta)
    except ClusterUnavailable as e:
        raise RunError(str(e)) from None
    limits = raise_nofile_limit()
    now = collect_meta()
    if meta is not None:
        _check_same_setup(resume, meta, now, force)
    if meta is None:
        run_dir = _create_run_dir(out, prof.name)
        lock = _lock(run_dir)
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
        lock = _lock(run_dir)
    try:
        if resume is not None:
            meta = _prepare_resume(run_dir, selected, log)
        return _sweep(run_dir, prof, seed, meta, now, all_points, selected, only,
                      resume is not None, on_cluster, log)
    finally:
        lock.release()


def _lock(run_dir: Path) -> RunLock:
    """The run directory's one-writer lock, or RunError naming who holds it."""
    try:
        return RunLock(run_dir).acquire()
    except LockedError as e:
        raise RunError(str(e)) from None
    except OSError as e:
        raise RunError(f"cannot lock {run_dir}: {e.strerror}; resume it as a user who "
                       "may write it") from None


def _prepare_resume(run_dir: Path, selected, log) -> dict:
    """Under the lock: meta.json as it is now, the torn and the failed rows moved aside."""
    meta = read_meta(run_dir)
    if meta.get("state") == "running":
        print(f"resume: {run_dir} was left running by an orchestrator that is gone (its "
              "lock was free); resuming it", file=log, flush=True)
    ledger.set_torn_aside_and_say(run_dir, log)
    retried = ledger.set_failed_aside(run_dir, {p.id for p in selected})
    if retried:
        print(f"resume: retrying {len(retried)} failed point(s) ({', '.join(retried[:3])}"
              f"{', ...' if len(retried) > 3 else ''}); their rows are kept in "
              f"{run_dir / 'retried.csv'}", file=log, flush=True)
    return meta


def _sweep(run_dir: Path, prof: Profile, seed: int, meta: dict, now: dict, all_points,
           selected, only, resume: bool, on_cluster, log) -> Path:
    """Run the points not yet recorded, holding the run directory's lock."""
    done = ledger.done_ids(run_dir, meta)
    todo = [p for p in selected if p.id not in done]
    if resume and not todo and meta.get("state") == "complete":
        print(f"{run_dir}: already complete, nothing to resume; left as it was", file=log)
        return run_dir                          # a finished run (results/reference) stays untouched

    ctx = _context(run_dir, prof)
    if ctx.procs > len(ctx.loadgen_cpus):
        print(f"bench run: warning: procs = {ctx.procs} load-generator workers on "
              f"{len(ctx.loadgen_cpus)} CPU(s): they share them and may saturate first; give "
              "at most one per CPU", file=log, flush=True)
    meta["pinning"] = {"server_cpus": ctx.server_cpus, "loadgen_cpus": ctx.loadgen_cpus,
                       "loadgen_procs": ctx.procs,
                       "shared": bool(set(ctx.server_cpus) & set(ctx.loadgen_cpus))}
    sweep_cluster.record(on_cluster, ctx, meta)
    # one entry per invocation: the first run and each --resume
    this_run = {"started_at": utc_now(), "ended_at": None, "only": only,
                "resume": resume, "git": now["git"], "points": len(todo)}
    meta["runs"].append(this_run)
    meta["state"] = "running"
    write_json(run_dir / "meta.json", meta)

    estimate = sum(plan.estimate_s(p) for p in todo)
    mechanisms = sorted({p.mechanism for p in todo if isinstance(p, plan.Point)})
    refused = sum(1 for p in todo if isinstance(p, plan.Point) and p.refused)
    tasks = [p.id for p in todo if isinstance(p, plan.Task)]
    print(f"bench run: profile {prof.name} (seed {seed}): {len(todo)} of {len(all_points)} "
          f"points to run ({refused} refused: FD_SETSIZE or not available here"
          f"{', tasks: ' + ', '.join(tasks) if tasks else ''}), mechanisms "
          f"{', '.join(mechanisms) or '-'}; server on CPU {cpulist(ctx.server_cpus)}, "
          f"loadgen on {sweep_cluster.where(ctx, meta)}; estimated {hms(estimate)}",
          file=log, flush=True)

    progress = Progress(todo, log)
    rows: list[dict] = []
    state = "failed"
    with Signals() as sigs:
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
            counts = ledger.counts(run_dir, all_points, meta)
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


# -- the run directory -----------------------------------------------------------

def _create_run_dir(out, profile_name: str) -> Path:
    if out is not None:
        run_dir = Path(out)
        held_by = holder(run_dir) if run_dir.is_dir() else None
        if held_by:
            raise RunError(f"--out {run_dir} is being written by process {held_by}: choose a "
                           "new directory, or wait for that run to end")
        _check_out(run_dir)
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
    _check_out(run_dir)
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "raw").mkdir()
    except OSError as e:
        raise RunError(f"cannot create {run_dir}: {e.strerror}; choose a writable --out") from None
    return run_dir


def _check_out(run_dir: Path) -> None:
    try:
        check_out_dir(run_dir)
    except OutputPathError as e:
        raise (UsageError if e.exit_code == 2 else RunError)(str(e)) from None


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


def _check_duration(selected, force: bool) -> None:
    """A sweep estimated past MAX_ESTIMATE_S is a mistake unless --force says otherwise."""
    estimate = sum(plan.estimate_s(p) for p in selected)
    if estimate > MAX_ESTIMATE_S and not force:
        raise UsageError(f"the sweep is estimated at {hms(estimate)}, above the limit "
                         f"{hms(MAX_ESTIMATE_S)}: narrow it with --only or a smaller profile, "
                         "or add --force")


def _check_same_setup(resume, meta: dict, now: dict, force: bool) -> None:
    """Refuse to mix two machines or two software versions in one run, unless forced."""
    diffs = differences(meta, now)
    if diffs and not force:
        what = "; ".join(f"{k} {_short(a)} then, {_short(b)} now" for k, (a, b) in diffs.items())
        raise RunError(f"{resume} was measured on another machine or software ({what}): "
                       "resuming would mix them in one run; start a new run, or add --force")


def _short(v) -> str:
    text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _context(run_dir: Path, prof: Profile) -> Context:
    """Pin the server to the last allowed CPU and the load generator to the others."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = cpus[-1:]
    loadgen_cpus = cpus[:-1] or cpus       # one CPU: they share it (meta says so)
    env = dict(os.environ, **{RUN_ENV: str(run_dir.resolve())})
    return Context(run_dir=run_dir, profile=prof, server_cpus=server_cpus,
                   loadgen_cpus=loadgen_cpus, procs=prof.procs or len(loadgen_cpus), env=env)


def _compile(only: str | None):
    if only is None:
        return None
    try:
        return re.compile(only)
    except re.error as e:
        raise UsageError(f"--only {only!r} is not a regular expression ({e})") from None
