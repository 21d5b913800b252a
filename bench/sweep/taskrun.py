"""The tasks of a run (micro, probes, syscalls, memory): each run once, its outcome for meta.json."""

from __future__ import annotations

import time
from pathlib import Path

from bench.sweep import plan
from bench.sweep.point import Context
from bench.sweep.profile import fd_limit
from servers.sysutil import utc_now


def _run_micro(task: plan.Task, run_dir: Path, ctx: Context | None = None) -> str:
    from bench.analysis.micro_summary import print_summary
    from bench.tasks.micro import run_micro
    done = str(run_micro(out=run_dir, quick=task.quick))
    print_summary(run_dir)                      # the per-fd slopes, on stderr
    return done


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


TASK_RUNNERS = {"micro": _run_micro, "probes": _run_probes, "syscalls": _run_syscalls,
                "memory": _run_memory}


def run_task(task: plan.Task, run_dir: Path, ctx: Context | None = None) -> dict:
    """Run a task once; its outcome for meta.json["tasks"] (never raises but for Ctrl-C)."""
    runner = TASK_RUNNERS[task.experiment]
    t0 = time.perf_counter()
    result = {"state": "failed", "error": None, "output": None, "quick": task.quick,
              "started_at": utc_now()}
    try:
        result.update(state="done", output=runner(task, run_dir, ctx))
    except SystemExit as e:
        result["error"] = f"{task.id} exited {e.code}"
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    result["duration_s"] = round(time.perf_counter() - t0, 1)
    return result


