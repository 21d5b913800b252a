"""python -m loadgen.calibrate: what the load generator costs per message.

One worker drives the `epoll` server over 100 active connections (closed
loop, 64-byte messages), server and worker pinned to different CPUs when
the machine has two. In the same window, the server's CPU comes from its
SIGUSR1 snapshots (start and end of the window) and the worker's from its
own getrusage; both are divided by the window's echoed messages. The goal:
the load generator costs at most 0.8x the server per message (so with one
core each the server saturates first); its user (Python) time at most the
server's. A benchmark, not a test: it prints, it asserts nothing.

User+sys per process is exact (the scheduler's runtime), but on a kernel
with tick-based CPU accounting (CONFIG_TICK_CPU_ACCOUNTING, HZ=250 on the
machine this was written on) the split into user and sys is sampled at
each tick: over a few seconds the user share of one process is known to
about +-10%, so the user ratio of one repetition can be off by +-20%.
Hence several repetitions and the median, and, where `perf` can sample the
whole machine, a second user ratio from 4 kHz cpu-clock samples over the
whole run: both processes see the same messages, so the ratio of their
user-space samples is the ratio of their user time per message.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from .run import run
from .spec import LoadSpec, check

GOAL_TOTAL = 0.8
GOAL_USER = 1.0
PERF_HZ = 4000


def _server(mechanism: str, tmp: str) -> tuple[subprocess.Popen, int, int, str]:
    snaps = os.path.join(tmp, "snapshots.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "servers", mechanism, "--port", "0",
                             "--snapshots", snaps, "--stats", os.path.join(tmp, "stats.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(10):
            proc.kill()
            raise SystemExit("calibrate: the server printed no READY line within 10 s")
    _word, _host, port, pid = proc.stdout.readline().split()
    return proc, int(port), int(pid), snaps


def _perf_start(tmp: str) -> tuple[subprocess.Popen, str] | None:
    perf = shutil.which("perf")
    if perf is None:
        return None
    data = os.path.join(tmp, "perf.data")
    proc = subprocess.Popen([perf, "record", "-q", "-e", "cpu-clock", "-F", str(PERF_HZ), "-a",
                             "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)                                  # perf is sampling by now, or has failed
    if proc.poll() is not None:
        return None
    return proc, data


def _perf_user_samples(perf: tuple[subprocess.Popen, str] | None, pids: list[int]) -> list[int] | None:
    """Stop perf; user-space samples of each pid (None when perf is unusable)."""
    if perf is None:
        return None
    proc, data = perf
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
        out = subprocess.run(["perf", "report", "-i", data, "--sort", "pid,dso", "--stdio",
                              "-F", "sample,pid,dso"], capture_output=True, text=True,
                             timeout=60).stdout
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        return None
    user = dict.fromkeys(pids, 0)
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or line.startswith("#") or "[kernel" in parts[2]:
            continue
        pid = int(parts[1].split(":")[0]) if parts[1].split(":")[0].isdigit() else None
        if pid in user:
            user[pid] += int(parts[0])
    return [user[p] for p in pids] if all(user.values()) else None


def measure_once(mechanism: str, connections: int, duration_s: float, msg_size: int,
                 use_perf: bool) -> dict:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, loadgen_cpus = (cpus[0], (cpus[1],)) if len(cpus) > 1 else (cpus[0], None)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, pid, snaps = _server(mechanism, tmp)
        perf = None
        try:
            os.sched_setaffinity(pid, {server_cpu})
            spec = check(LoadSpec(host="127.0.0.1", port=port, connections=connections,
                                  active_ratio=1.0, msg_size=msg_size, duration_s=duration_s,
                                  warmup_s=0.5, procs=1, cpus=loadgen_cpus, signal_pid=pid))
            perf = _perf_start(tmp) if use_perf else None
            doc = run(spec, ("127.0.0.1", port), socket.AF_INET)
            samples = _perf_user_samples(perf, [doc["workers"][0]["pid"], pid])
            perf = None
            time.sleep(0.2)                          # let the second snapshot land
            with open(snaps) as f:
                lines = [json.loads(x) for x in f]
        finally:
            if perf is not None:
                perf[0].kill()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if len(lines) != 2 or doc["failed"] or not doc["messages"]:
        raise SystemExit(f"calibrate: the run failed: {doc['failure'] or 'no snapshots'}")
    m = doc["messages"]
    w = doc["workers"][0]
    a, b = lines
    r = {
        "throughput_msgs_s": doc["throughput_msgs_s"],
        "server_user_us": (b["cpu_user_s"] - a["cpu_user_s"]) / m * 1e6,
        "server_sys_us": (b["cpu_sys_s"] - a["cpu_sys_s"]) / m * 1e6,
        "loadgen_user_us": w["cpu_user_s"] / m * 1e6,
        "loadgen_sys_us": w["cpu_sys_s"] / m * 1e6,
        "loadgen_cpu_util": w["cpu_util"],
        "perf_user_ratio": samples[0] / samples[1] if samples else None,
    }
    r["user_ratio"] = r["loadgen_user_us"] / r["server_user_us"]
    r["total_ratio"] = ((r["loadgen_user_us"] + r["loadgen_sys_us"])
                        / (r["server_user_us"] + r["server_sys_us"]))
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.calibrate",
                                description=__doc__.split("\n")[0])
    p.add_argument("--mechanism", default="epoll", help="server to compare with (default epoll)")
    p.add_argument("--connections", type=int, default=100, help="active connections (default 100)")
    p.add_argument("--duration", type=float, default=4.0, help="window per repetition, s (default 4)")
    p.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    p.add_argument("--msg-size", type=int, default=64, help="bytes (default 64)")
    p.add_argument("--no-perf", action="store_true", help="skip the perf-sampled user ratio")
    args = p.parse_args(argv)

    print(f"calibrate: {args.mechanism} server vs 1 loadgen worker, {args.connections} active "
          f"connections, closed loop, {args.msg_size}-byte messages, {args.reps} x "
          f"{args.duration:g} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'rep':>3} {'msg/s':>9} {'server user':>11} {'sys':>6} {'loadgen user':>12} "
          f"{'sys':>6} {'lg util':>7} | {'user ratio':>10} {'(perf)':>6} {'total ratio':>11}")
    rows = []
    for rep in range(args.reps):
        r = measure_once(args.mechanism, args.connections, args.duration, args.msg_size,
                         not args.no_perf)
        rows.append(r)
        perf = f"{r['perf_user_ratio']:.2f}" if r["perf_user_ratio"] else "-"
        print(f"{rep + 1:>3} {r['throughput_msgs_s']:>9,.0f} {r['server_user_us']:>11.2f} "
              f"{r['server_sys_us']:>6.2f} {r['loadgen_user_us']:>12.2f} {r['loadgen_sys_us']:>6.2f}"
              f" {r['loadgen_cpu_util']:>7.2f} | {r['user_ratio']:>10.2f} {perf:>6}"
              f" {r['total_ratio']:>11.2f}")
    print("(µs of CPU per echoed message; ratios are loadgen / server)")
    user = statistics.median(r["user_ratio"] for r in rows)
    total = statistics.median(r["total_ratio"] for r in rows)
    perf_ratios = [r["perf_user_ratio"] for r in rows if r["perf_user_ratio"]]
    line = (f"median: user {user:.2f} from tick-sampled rusage")
    if perf_ratios:
        user = statistics.median(perf_ratios)
        line += f", {user:.2f} from perf samples (the better estimate)"
    print(f"{line}; goal <= {GOAL_USER:.1f}: {'met' if user <= GOAL_USER else 'NOT met'}")
    print(f"median: user+sys {total:.2f} (exact); goal <= {GOAL_TOTAL:.1f}: "
          f"{'met' if total <= GOAL_TOTAL else 'NOT met'}"
          + ("" if total <= GOAL_TOTAL else
             ": both ends make the same syscalls per message (one read, one write, a share "
             "of epoll_wait; on loopback each also runs the other's TCP receive), so kernel "
             "time, ~3/4 of the total, is the same on both sides"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
