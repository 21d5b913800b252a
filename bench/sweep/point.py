"""One point: the server pinned to its CPU, READY, the load generator on the others, a raw dict.

    run_point(point, ctx) -> raw dict (raw/<id>.json): the point, the load
    generator's and the server's JSON, the window snapshots, CPU samples,
    exit codes, stderr tails and the error, if any. Never raises for a
    point that fails; Ctrl-C kills the children and propagates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.rundir.meta import rlimit_nofile
from bench.rundir.schema import FORMAT
from bench.sweep import plan
from bench.sweep.profile import Profile
from bench.sweep.sampler import SAMPLE_EVERY_S, sample
from bench.tasks import procs
from servers.sysutil import utc_now

STOP_TIMEOUT_S = 10              # SIGTERM -> exit and stats written


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
    cluster: dict | None = None    # {scheduler, server_host, hosts}: the load runs on a Dask cluster


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
        server = procs.Child("server", server_argv(point, stats_path, snaps_path,
                                                   ctx.cluster and ctx.cluster["server_host"]),
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
        if point.bursts is not None:
            _continue(server)                  # a load generator killed mid-burst left it stopped
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


def server_argv(point: plan.Point, stats: Path, snapshots: Path,
                host: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "servers", point.mechanism, "--port", "0",
            "--stats", str(stats), "--snapshots", str(snapshots)]
    if host is not None:            # a cluster run: reachable from the client hosts
        argv += ["--host", host]
    if point.server_max_fds is not None:
        argv += ["--max-fds", str(point.server_max_fds)]
    return argv


def loadgen_argv(point: plan.Point, target: str, server_pid: int, out: Path,
                 ctx: Context) -> list[str]:
    if point.bursts is not None:                # ready: one process, the server gated
        return [sys.executable, "-m", "loadgen", "--target", target,
                "--connections", str(point.connections), "--burst-size", str(point.active),
                "--bursts", str(point.bursts), "--msg-size", str(point.msg_size),
                "--cpus", cpulist(ctx.loadgen_cpus[:1]), "--out", str(out),
                "--signal-pid", str(server_pid)]
    argv = [sys.executable, "-m", "loadgen", "--target", target,
            "--connections", str(point.connections),
            "--active-ratio", repr(point.active / point.connections),
            "--msg-size", str(point.msg_size),
            "--duration", repr(point.window_s), "--warmup", repr(point.warmup_s),
            "--out", str(out), "--signal-pid", str(server_pid)]
    if ctx.cluster is None:
        argv += ["--procs", str(ctx.procs), "--cpus", cpulist(ctx.loadgen_cpus)]
    else:                           # default: one worker per Dask worker thread
        argv += ["--cluster", ctx.cluster["scheduler"]]
        if ctx.profile.procs is not None:
            argv += ["--procs", str(ctx.profile.procs)]
        if ctx.cluster["hosts"] is not None:
            argv += ["--hosts", str(ctx.cluster["hosts"])]
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
        samples.append(sample(server.pid, loadgen.pid))
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


def _continue(server: procs.Child) -> None:
    """SIGCONT: a server stopped by a burst must answer the SIGTERM that follows."""
    try:
        os.kill(server.pid, signal.SIGCONT)
    except OSError:
        pass


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


def cpulist(cpus: list[int]) -> str:
    """[0, 2, 3] -> "0,2,3" (taskset and --cpus syntax)."""
    return ",".join(str(c) for c in cpus)
