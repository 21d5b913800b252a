"""The host side of a cluster run: one Dask task runs one of our worker processes.

`task` runs in a thread of a Dask worker on a client host. It starts
`python -m loadgen.remote FD` as a child process (the same loadgen.worker:
epoll loop, verification, HdrHistogram), talks to it over a socketpair with
the worker's usual protocol, and relays to the parent through Dask:

1. the child's ("connected", {...}) goes on the run's distributed.Queue;
2. the task waits on the run's distributed.Event; the parent has put the
   start instant T (wall clock, ns) in a distributed.Variable first. T is
   turned into this host's CLOCK_MONOTONIC once and handed to the child as
   its t0: from then on the child measures on its own monotonic clock;
3. the child's result is the task's return value, its window converted to
   this host's wall clock (`window_start_ns`, `window_end_ns`) so the
   parent can intersect the hosts' windows and measure their start skew.

The run's state Variable says "connect", "go" or "abort"; a task started
late (Dask reschedules the tasks of a worker that died) finds it past
"connect" and returns at once, and an "abort" stops the child. The child
dies with the Dask worker: PR_SET_PDEATHSIG and EOF on its socketpair.
This module imports distributed only inside the task.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

from servers.sysutil import package_versions, raise_nofile_limit

from . import worker
from .spec import LoadSpec

STATE_POLL_S = 0.25           # how often a running task looks for "abort"
STATE_TIMEOUT_S = 2.0         # the scheduler answers a Variable.get well within this
CHILD_EXIT_S = 5.0            # killed child: time to be reaped
PACKAGES = ("iomux-bench", "distributed", "dask", "hdrhistogram", "numpy", "psutil")


def names(run_id: str) -> dict:
    """The Dask names of one run's queue, event and variables."""
    return {k: f"iomux-{run_id}-{k}" for k in ("queue", "go", "t0", "state")}


def host_facts() -> dict:
    """What a client host runs: kernel, CPUs, Python and package versions."""
    versions = package_versions(PACKAGES)
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "packages": versions,
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def task(index: int, spec: LoadSpec, address: tuple, family: int, run_id: str,
         start_deadline_s: float, result_deadline_s: float) -> dict:
    """Run worker `index` on this host; return {"result": ...}, {"error": ...} or {"stale": ...}."""
    from distributed import Event, Queue, Variable, get_worker
    n = names(run_id)
    state = Variable(n["state"])
    if state.get(timeout=10) != "connect":
        return {"stale": "started after the point had begun"}
    host = get_worker().address
    queue = Queue(n["queue"])
    ours, theirs = socket.socketpair()
    child = subprocess.Popen([sys.executable, "-m", "loadgen.remote", str(theirs.fileno())],
                             pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
    theirs.close()
    ctrl = Connection(ours.detach())
    try:
        ctrl.send((index, spec, address, family, os.getpid()))
        if not ctrl.poll(start_deadline_s):
            return _report(queue, index, "error",
                           f"no connect phase within {start_deadline_s:.0f} s")
        kind, payload = _recv(ctrl)
        if kind != "connected":
            return _report(queue, index, kind, payload)
        payload["worker_address"] = host
        queue.put((index, "connected", payload))
        if not Event(n["go"]).wait(timeout=worker.GO_DEADLINE_S) or _state(state) != "go":
            ctrl.send(("abort",))
            return {"stale": "no start signal"}
        start_wall_ns = Variable(n["t0"]).get(timeout=STATE_TIMEOUT_S)
        t0 = time.monotonic_ns() + (start_wall_ns - time.time_ns())
        ctrl.send(("go", t0))
        deadline = time.monotonic() + result_deadline_s
        while not ctrl.poll(STATE_POLL_S):
            if time.monotonic() > deadline:
                return {"error": f"no result within {result_deadline_s:.0f} s of the start"}
            if _state(state) != "go":
                return {"stale": "aborted by the parent"}
        kind, payload = _recv(ctrl)
        if kind != "result":
            return {kind: payload}
        wall_minus_mono = time.time_ns() - time.monotonic_ns()
        for key in ("window_start_ns", "window_end_ns"):
            if payload[key] is not None:
                payload[key] += wall_minus_mono
        return {"result": payload}
    finally:
        ctrl.close()
        if child.poll() is None:
            child.kill()
        child.wait(CHILD_EXIT_S)


def _state(state) -> str:
    """The run's state; a Variable the parent deleted (it has left) reads as "abort"."""
    try:
        return state.get(timeout=STATE_TIMEOUT_S)
    except TimeoutError:
        return "abort"


def _recv(ctrl: Connection) -> tuple[str, object]:
    try:
        return ctrl.recv()
    except (EOFError, OSError):
        return "error", "the worker process exited without a word"


def _report(queue, index: int, kind: str, payload) -> dict:
    queue.put((index, kind, payload))
    return {kind: payload}


def child_main(fd: int) -> None:
    """`python -m loadgen.remote FD`: one loadgen worker fed over a socketpair."""
    ctrl = Connection(fd)
    index, spec, address, family, parent_pid = ctrl.recv()
    raise_nofile_limit()
    worker.main(index, spec, address, family, ctrl, parent_pid)


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
