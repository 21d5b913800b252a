"""Syscall profile (C2, C6, C7): system calls by name on a server, per echoed message.

For each mechanism and chosen point (connections, active, message size) one
server and one closed-loop load generator run, and the server is measured
twice in a row under the same load, apart from every timed window of the
sweep because tracing slows the server:

    load running -> warmup -> snapshot ... untraced interval ... snapshot
    -> tracer attached -> snapshot ... traced interval ... snapshot -> tracer detached

Snapshots are the server's own counters (SIGUSR1 -> --snapshots file), so
both intervals count echoed messages (bytes_out / msg_size), wait calls and
CPU the same way, and their throughputs give the tracer's perturbation. A
tracer cannot attach at an exact instant, so the trace runs a little longer
than the traced interval; the server's wait-call counter measures by how
much (`coverage` = traced wait syscalls / wait calls the server counted) and
messages are scaled by it (steady closed-loop load) before dividing, when
the server made enough wait calls for the ratio to mean something.

Tracers, tried at run time in TRACER_ORDER with a self-test on a busy child:
`strace -c -f -p PID` (ptrace, stops the server twice per call; `seconds`
is system CPU time) and `perf trace -s -p PID` (in-kernel tracepoints;
`seconds` is wall time inside each call, blocking included). Neither working: the
task writes syscalls.json with the reason and no rows, and the claims say
"not tested" with it.

Output: syscalls.csv (schema.SYSCALL_COLUMNS) and syscalls.json (tracer
detection, per point: intervals, throughput with and without tracing,
coverage, the wait syscall, the bytes one wait call passes).

    python -m bench.tasks.syscalls RUN_DIR [--mechanisms ...] [--point C:A[:S] ...]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from bench.tasks import procs
from bench.tasks.tracer import TRACER_ORDER, Trace, detect_tracer, safe_stop
from servers.sysutil import utc_now
from bench.rundir.schema import FORMAT, SYSCALL_COLUMNS

SNAPSHOT_TIMEOUT_S = 5.0
MIN_WAITS_FOR_COVERAGE = 200         # fewer wait calls in the interval: too coarse to scale by
LOAD_START_TIMEOUT_S = 30.0
FD_SLACK = 16                        # descriptors a server holds besides its connections

# the wait call each server family makes, as the kernel names it (x86-64 and arm64)
WAIT_SYSCALLS = {
    "select": ("select", "pselect6", "_newselect"),
    "poll": ("poll", "ppoll"),
    "epoll": ("epoll_wait", "epoll_pwait", "epoll_pwait2"),
    "io_uring": ("io_uring_enter",),          # submits and waits in one call
}
_EPOLL_FAMILY = ("asyncio", "uvloop")   # their loops wait in epoll_wait


def wait_family(mechanism: str) -> str | None:
    """select | poll | epoll | io_uring: the wait syscall the mechanism's loop makes (None: threads)."""
    if mechanism in ("select", "poll", "io_uring"):
        return mechanism
    if mechanism.startswith("epoll") or mechanism in _EPOLL_FAMILY:
        return "epoll"
    return None


# ---------------------------------------------------------------- one point

class Snapshots:
    """The server's counters on demand: SIGUSR1, then the line it appends."""

    def __init__(self, pid: int, path: Path):
        self.pid, self.path, self.seen = pid, path, 0

    def take(self) -> dict:
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                lines = self.path.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) > self.seen and lines[-1].endswith("}"):
                self.seen = len(lines)
                return json.loads(lines[-1])
            time.sleep(0.002)
        raise procs.ChildError(f"server {self.pid} wrote no snapshot within {SNAPSHOT_TIMEOUT_S:g} s")


def interval(a: dict, b: dict, msg_size: int) -> dict:
    """What the server did between two snapshots."""
    secs = b["monotonic_s"] - a["monotonic_s"]
    msgs = (b["bytes_out"] - a["bytes_out"]) / msg_size
    waits = b["wait_calls"] - a["wait_calls"]
    cpu = (b["cpu_user_s"] - a["cpu_user_s"]) + (b["cpu_sys_s"] - a["cpu_sys_s"])
    events = b["events_total"] - a["events_total"]
    out = {"seconds": round(secs, 6), "messages": round(msgs, 1),
           "throughput_msgs_s": round(msgs / secs, 1) if secs > 0 else None,
           "wait_calls": waits, "wait_calls_per_msg": round(waits / msgs, 4) if msgs else None,
           "events_per_wait": round(events / waits, 3) if waits else None,
           "server_cpu_us_per_msg": round(cpu / msgs * 1e6, 3) if msgs else None}
    if "enter_calls" in b:           # io_uring: every io_uring_enter, and the SQEs they carried
        enters, sqes = b["enter_calls"] - a["enter_calls"], b["sqes"] - a["sqes"]
        out.update(enter_calls=enters, sqes=sqes,
                   sqes_per_enter=round(sqes / enters, 4) if enters else None,
                   enter_calls_per_msg=round(enters / msgs, 4) if msgs else None)
    return out


def wait_bytes_per_call(family: str | None, nfds: int, events_per_wait: float | None) -> dict | None:
    """Bytes one wait call moves between user and kernel space (fs/select.c, fs/eventpoll.c).

    select: CPython passes all three fd_sets; the kernel copies FDS_BYTES(nfds)
    of each in and back out: 6 x 8 x ceil(nfds / 64). poll: 8 bytes per
    pollfd in, its 2-byte revents back. epoll_wait: nothing in, 12 bytes
    per ready event out (packed struct epoll_event on x86-64). io_uring_enter:
    nothing; SQEs and CQEs live in the ring the process mmap-ed, 64 bytes per
    SQE written and 16 per CQE read there without a copy (reported apart).
    """
    if family == "select":
        per_set = 8 * math.ceil(nfds / 64)
        return {"in": 3 * per_set, "out": 3 * per_set, "total": 6 * per_set, "nfds": nfds}
    if family == "poll":
        return {"in": 8 * nfds, "out": 2 * nfds, "total": 10 * nfds, "nfds": nfds}
    if family == "epoll" and events_per_wait is not None:
        out = round(12 * events_per_wait, 1)
        return {"in": 0, "out": out, "total": out, "events_per_wait": events_per_wait}
    if family == "io_uring" and events_per_wait is not None:
        return {"in": 0, "out": 0, "total": 0, "events_per_wait": events_per_wait,
                "shared_cqe_bytes": round(16 * events_per_wait, 1)}
    return None


def _max_fd(pid: int) -> int | None:
    try:
        return max(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None


def profile_point(mechanism: str, connections: int, active: int, msg_size: int, tracer: str,
                  work: Path, *, warmup_s: float, window_s: float, server_cpus=None,
                  loadgen_cpus=None, loadgen_procs: int = 1, env=None,
                  ready_timeout_s: float = 10.0) -> tuple[dict, dict]:
    """Measure one point untraced then traced; (summary for syscalls.json, {syscall: counts}).

    Raises procs.ChildError when a process did not behave; the caller records it.
    """
    work.mkdir(parents=True, exist_ok=True)
    snaps_path, stats_path = work / "snapshots.jsonl", work / "server.json"
    attach_allowance = 3.0 if tracer == "perf" else 1.0
    duration = warmup_s + 2 * window_s + attach_allowance + 5.0   # killed once traced
    server = loadgen = trace = None
    try:
        server = procs.Child("server", [sys.executable, "-m", "servers", mechanism, "--port", "0",
                                        "--stats", str(stats_path), "--snapshots", str(snaps_path)],
                             cpus=server_cpus, env=env)
        host, port, pid = server.read_ready(ready_timeout_s)
        pid = int(pid)
        snaps = Snapshots(pid, snaps_path)
        loadgen = procs.Child("loadgen", [
            sys.executable, "-m", "loadgen", "--target", f"{host}:{port}",
            "--connections", str(connections), "--active-ratio", repr(active / connections),
            "--msg-size", str(msg_size), "--duration", repr(duration), "--warmup", "0",
            "--procs", str(max(1, min(loadgen_procs, connections))),
            *(["--cpus", ",".join(map(str, loadgen_cpus))] if loadgen_cpus else []),
            "--out", str(work / "loadgen.json")], cpus=loadgen_cpus, env=env)
        _wait_for_load(snaps, server, loadgen)
        time.sleep(warmup_s)
        u0 = snaps.take()
        time.sleep(window_s)
        u1 = snaps.take()
        trace = Trace(tracer, pid, work / "trace.txt", env=env)
        trace.wait_attached()
        t0 = snaps.take()
        time.sleep(window_s)
        t1 = snaps.take()
        nfds = (_max_fd(pid) or 0) + 1
        counts, trace = trace.stop(), None
        if server.exited() is not None or loadgen.exited() is not None:
            who = "server" if server.exited() is not None else "loadgen"
            child = server if who == "server" else loadgen
            raise procs.ChildError(f"{who} exited {child.exited()} during the profile: "
                                   f"{child.stderr_tail()}")
    finally:
        if trace is not None:
            safe_stop(trace)
        for child in (loadgen, server):
            if child is not None:
                child.close()
    untraced, traced = interval(u0, u1, msg_size), interval(t0, t1, msg_size)
    family = wait_family(mechanism)
    names = WAIT_SYSCALLS.get(family, ())
    wait_traced = sum(counts.get(n, {}).get("calls", 0) for n in names)
    # the trace ran from attach to detach, a little longer than [t0, t1]: scale
    # the messages by how many more wait calls it saw than the server counted
    coverage = (wait_traced / traced["wait_calls"]
                if wait_traced and traced["wait_calls"] >= MIN_WAITS_FOR_COVERAGE else None)
    messages = traced["messages"] * (coverage or 1.0)
    perturbation = (traced["throughput_msgs_s"] / untraced["throughput_msgs_s"]
                    if traced["throughput_msgs_s"] and untraced["throughput_msgs_s"] else None)
    summary = {
        "mechanism": mechanism, "connections": connections, "active": active,
        "msg_size": msg_size, "tracer": tracer, "untraced": untraced, "traced": traced,
        "throughput_untraced_msgs_s": untraced["throughput_msgs_s"],
        "throughput_traced_msgs_s": traced["throughput_msgs_s"],
        "traced_over_untraced": round(perturbation, 4) if perturbation else None,
        "wait_syscall": next((n for n in names if n in counts), names[0] if names else None),
        "wait_syscall_calls": wait_traced, "coverage": round(coverage, 4) if coverage else None,
        "messages_normalised": round(messages, 1), "nfds": nfds,
        "registered": t1.get("peak_registered"),
        "wait_bytes_per_call": wait_bytes_per_call(family, nfds, untraced["events_per_wait"]),
        "error": None,
    }
    return summary, counts


def _wait_for_load(snaps: Snapshots, server: procs.Child, loadgen: procs.Child) -> None:
    """Return once the server echoes: the load generator connected everything and started."""
    deadline = time.monotonic() + LOAD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        for child in (server, loadgen):
            if child.exited() is not None:
                raise procs.ChildError(f"{child.name} exited {child.exited()} before the load "
                                       f"started: {child.stderr_tail()}")
        if snaps.take()["bytes_out"] > 0:
            return
        time.sleep(0.05)
    raise procs.ChildError(f"no echo within {LOAD_START_TIMEOUT_S:g} s of starting the load generator")


# ---------------------------------------------------------------- the task

def point_label(mechanism: str, connections: int, active: int, msg_size: int) -> str:
    return f"syscalls-{mechanism}-c{connections}-a{active}-s{msg_size}"


def run_syscalls(run_dir, mechanisms, points, *, warmup_s: float = 0.5, window_s: float = 1.0,
                 tracer: str = "auto", server_cpus=None, loadgen_cpus=None,
                 loadgen_procs: int | None = None, env=None, fd_limits=None, log=None) -> dict:
    """Profile every (point, mechanism); append syscalls.csv, write syscalls.json; return the json.

    points: [(connections, active, msg_size)]. fd_limits: {mechanism: most
    descriptor value it serves} (select: FD_SETSIZE); points past it are skipped.
    """
    from bench.rundir.store import append_row, write_json      # pandas: only in the orchestrator
    log = log or sys.stderr
    run_dir = Path(run_dir)
    work = run_dir / ".work" / "syscalls"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if server_cpus is None:
        cpus = sorted(os.sched_getaffinity(0))
        server_cpus, loadgen_cpus = cpus[-1:], cpus[:-1] or cpus
    loadgen_procs = loadgen_procs or len(loadgen_cpus or [1])
    doc = {"format": FORMAT, "started_at": utc_now(), "warmup_s": warmup_s, "window_s": window_s,
           "method": __doc__.split("\n\n")[1].replace("\n", " "),
           "seconds_meaning": {"strace": "system CPU time inside the call (strace -c default)",
                               "perf": "wall time from entry to exit, blocking included"},
           "points": {}}
    doc["detection"] = detect_tracer(work, tracer)
    chosen = doc["tracer"] = doc["detection"]["tracer"]
    doc["reason"] = doc["detection"]["reason"]
    if chosen is None:
        print(f"syscalls: not tested: {doc['reason']}", file=log, flush=True)
    for connections, active, msg_size in (points if chosen else ()):
        for mech in mechanisms:
            pid = point_label(mech, connections, active, msg_size)
            limit = (fd_limits or {}).get(mech)
            if limit is not None and connections + FD_SLACK > limit:
                doc["points"][pid] = {"mechanism": mech, "connections": connections,
                                      "error": f"refused: {mech} serves at most {limit} descriptors"}
                continue
            try:
                summary, counts = profile_point(
                    mech, connections, active, msg_size, chosen, work / pid, warmup_s=warmup_s,
                    window_s=window_s, server_cpus=server_cpus, loadgen_cpus=loadgen_cpus,
                    loadgen_procs=loadgen_procs, env=env)
            except (procs.ChildError, OSError, ValueError, KeyError) as e:
                doc["points"][pid] = {"mechanism": mech, "connections": connections,
                                      "active": active, "msg_size": msg_size, "tracer": chosen,
                                      "error": f"{type(e).__name__}: {e}"}
                print(f"syscalls {pid}: FAILED: {e}", file=log, flush=True)
                continue
            doc["points"][pid] = summary
            messages = summary["messages_normalised"]
            for name, c in sorted(counts.items(), key=lambda kv: -kv[1]["calls"]):
                append_row(run_dir / "syscalls.csv", {
                    "point_id": pid, "mechanism": mech, "syscall": name, "calls": c["calls"],
                    "seconds": round(c["seconds"], 6), "errors": c["errors"],
                    "calls_per_msg": round(c["calls"] / messages, 6) if messages else None,
                    "tracer": chosen}, SYSCALL_COLUMNS)
            top = ", ".join(f"{n} {c['calls'] / messages:.2f}" for n, c in
                            sorted(counts.items(), key=lambda kv: -kv[1]["calls"])[:4]) if messages else "-"
            print(f"syscalls {pid}: {chosen}: {summary['throughput_untraced_msgs_s']:,.0f} msg/s "
                  f"untraced, {summary['throughput_traced_msgs_s']:,.0f} traced; per msg: {top}",
                  file=log, flush=True)
    doc["ended_at"] = utc_now()
    write_json(run_dir / "syscalls.json", doc)
    shutil.rmtree(work, ignore_errors=True)
    return doc


def read_syscalls_json(run_dir) -> dict:
    """syscalls.json as written by run_syscalls; {} when absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / "syscalls.json").read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench.tasks.syscalls",
                                description="Syscall profile of each server; appends RUN_DIR/syscalls.csv.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--mechanisms", nargs="+", default=["select", "poll", "epoll", "epoll-et"])
    p.add_argument("--point", action="append", metavar="C:A[:S]",
                   help="connections:active[:msg_size] (default 100:10)")
    p.add_argument("--tracer", choices=("auto",) + TRACER_ORDER, default="auto")
    p.add_argument("--window", type=float, default=1.0, help="seconds per interval (default 1)")
    args = p.parse_args(argv)
    points = []
    for text in args.point or ["100:10"]:
        parts = [int(x) for x in text.split(":")]
        points.append((parts[0], parts[1], parts[2] if len(parts) > 2 else 64))
    from servers.sysutil import raise_nofile_limit
    raise_nofile_limit()
    run_syscalls(args.run_dir, args.mechanisms, points, tracer=args.tracer, window_s=args.window,
                 fd_limits={"select": 1024})
    print(Path(args.run_dir) / "syscalls.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
