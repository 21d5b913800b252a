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
Hence several repetitions and the median.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _server(mechanism: str, tmp: str) -> tuple[subprocess.Popen, int, int, str]:
    snaps = os.path.join(tmp, "snapshots.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "servers", mechanism, "--port", "0",
                             "--snapshots", snaps, "--stats", os.path.join(tmp, "stats.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(10):
            proc.kill()
            raise SystemExit("calibrate: the server printed no READY line within 10 s")
    word, _host, port, pid = proc.stdout.readline().split()
    return proc, int(port), int(pid), snaps


def measure_once(mechanism: str, connections: int, duration_s: float, msg_size: int) -> dict:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, loadgen_cpus = (cpus[0], (cpus[1],)) if len(cpus) > 1 else (cpus[0], None)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, pid, snaps = _server(mechanism, tmp)
        try:
            os.sched_setaffinity(pid, {server_cpu})
            spec = check(LoadSpec(host="127.0.0.1", port=port, connections=connections,
                                  active_ratio=1.0, msg_size=msg_size, duration_s=duration_s,
                                  warmup_s=0.5, procs=1, cpus=loadgen_cpus, signal_pid=pid))
            doc = run(spec, ("127.0.0.1", port), socket.AF_INET)
            time.sleep(0.2)                          # let the second snapshot land
            lines = [json.loads(x) for x in open(snaps)]
        finally:
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
    return {
        "messages": m,
        "throughput_msgs_s": doc["throughput_msgs_s"],
        "server_user_us": (b["cpu_user_s"] - a["cpu_user_s"]) / m * 1e6,
        "server_sys_us": (b["cpu_sys_s"] - a["cpu_sys_s"]) / m * 1e6,
        "loadgen_user_us": w["cpu_user_s"] / m * 1e6,
        "loadgen_sys_us": w["cpu_sys_s"] / m * 1e6,
        "loadgen_cpu_util": w["cpu_util"],
        "saturated": doc["saturated"],
        "p50_us": doc["latency_us"]["p50"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--mechanism", default="epoll", help="server to compare with (default epoll)")
    p.add_argument("--connections", type=int, default=100, help="active connections (default 100)")
    p.add_argument("--duration", type=float, default=4.0, help="window per repetition, s (default 4)")
    p.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    p.add_argument("--msg-size", type=int, default=64, help="bytes (default 64)")
    args = p.parse_args(argv)

    print(f"calibrate: {args.mechanism} server vs 1 loadgen worker, {args.connections} active "
          f"connections, closed loop, {args.msg_size}-byte messages, {args.reps} x "
          f"{args.duration:g} s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'rep':>3} {'msg/s':>9} {'server user':>11} {'sys':>6} {'loadgen user':>12} {'sys':>6}"
          f" {'user ratio':>10} {'total ratio':>11} {'lg util':>7}   (µs per message)")
    rows = []
    for rep in range(args.reps):
        r = measure_once(args.mechanism, args.connections, args.duration, args.msg_size)
        r["user_ratio"] = r["loadgen_user_us"] / r["server_user_us"]
        r["total_ratio"] = ((r["loadgen_user_us"] + r["loadgen_sys_us"])
                            / (r["server_user_us"] + r["server_sys_us"]))
        rows.append(r)
        print(f"{rep + 1:>3} {r['throughput_msgs_s']:>9,.0f} {r['server_user_us']:>11.2f} "
              f"{r['server_sys_us']:>6.2f} {r['loadgen_user_us']:>12.2f} {r['loadgen_sys_us']:>6.2f}"
              f" {r['user_ratio']:>10.2f} {r['total_ratio']:>11.2f} {r['loadgen_cpu_util']:>7.2f}")
    user = statistics.median(r["user_ratio"] for r in rows)
    total = statistics.median(r["total_ratio"] for r in rows)
    print(f"median: loadgen/server CPU per message: user {user:.2f} "
          f"(goal <= {GOAL_USER:.1f}: {'met' if user <= GOAL_USER else 'NOT met'}), "
          f"user+sys {total:.2f} (goal <= {GOAL_TOTAL:.1f}: "
          f"{'met' if total <= GOAL_TOTAL else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
