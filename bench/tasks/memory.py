"""Memory per idle connection (C8): server RSS and kernel slab growth while it holds N connections.

For each N and mechanism a server starts, the machine is read (slab caches,
/proc/meminfo, the server's VmRSS and descriptors), a plain client opens N
connections and holds them idle (`python -m bench.tasks.memory hold`: blocking
sockets, no multiplexer, so it adds no epoll objects of its own), the
machine is read again once the server holds them all, and the client resets
every connection (SO_LINGER 0: no TIME_WAIT left for the next measurement).

Both ends of a loopback connection live in the same slab caches, so every
delta counts two sockets. A control per N, the same client against a bare
holder that only accepts (`python -m bench.tasks.memory bare`: no multiplexer),
measures the bare pair. A server's share of a cache is its delta minus the
client's part of the control's delta:

    TCP, sock_inode_cache, Slab:   delta(server) - delta(control) / 2
    eventpoll_epi, eventpoll_pwq:  delta(server) - delta(control)

that is half the bare pair (its own socket) plus everything its multiplexer
adds (epoll: an epitem and a wait-queue entry per watch; select and poll keep
nothing in the kernel between calls). The eventpoll lines need the second
form because SLUB merges caches of equal size and flags and /proc/slabinfo
shows a merged group under one name: here eventpoll_epi shares its line with
tcp_bind_bucket, which grows with the client's ports and not at all with the
bare holder. memory.json records each cache's line and aliases. Slab (every
cache) is halved like a socket cache, so the client's bind buckets are split
evenly there: an upper figure.

Every slab cache: each line of /proc/slabinfo (filp, dentry, kmalloc-*,
the named four and the rest) gets the same share as Slab, delta(server) -
delta(control) / 2; the lines whose share reaches GROWS_MIN_BYTES per
connection grow with the connections, and their sum is slab_growing_bytes
(memory.json lists them per row, largest first). Lines below that moved with
the machine, not with the connections. proc_inode_cache is left out: it holds
the inodes our own listing of /proc/<pid>/fd creates (the dentries that
listing adds stay in, halved like the sockets': a small upper part).

memory.csv (schema.MEMORY_COLUMNS): rss_bytes is the server's VmRSS while
holding; slab_bytes, eventpoll_epi, eventpoll_pwq, TCP, sock_inode_cache and
io_kiocb (io_uring's requests; counted like the eventpoll lines) are
the server's share in bytes (the formula above; slab_bytes from the Slab line
of /proc/meminfo, every cache); slab_growing_bytes is the sum over every
slabinfo line that grows with the connections; per_conn_rss_bytes is the VmRSS
growth per connection and per_conn_kernel_bytes the four caches' share per
connection (a lower figure: filp, dentry and the rest are not in it).
What threads cost (C10) is apart: threads is the server's Threads: while
holding, kernel_stack_bytes the growth of meminfo's KernelStack, task_bytes
that of the task_struct, vm_area_struct and pid caches (each minus the
control's), per_conn_thread_bytes their sum per connection: near 0 for a
multiplexing server, a kernel stack and a task per connection for threads.
Without /proc/slabinfo the cache columns are empty and memory.json says why.

    python -m bench.tasks.memory RUN_DIR [--connections 1000 5000] [--mechanisms ...]
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

from bench.tasks import procs
from bench.tasks.kernel_mem import (CACHES, OPTIONAL_CACHES, SETTLE_S, THREAD_CACHES, count_fds,
                                    limits, read_slabinfo, read_state, slab_lines, wait_quiet)
from bench.tasks.memory_child import bare, hold
from servers.sysutil import utc_now
from bench.rundir.schema import FORMAT, MEMORY_COLUMNS

CONTROL = "control"              # the bare holder's label in memory.json
FD_SLACK = 16                    # descriptors a server holds besides its connections
HOLD_TIMEOUT_S = 20.0            # plus 1 s per 1000 connections
TRIES = 3                        # measurements per (mechanism, N) while the machine moves
MAX_DRIFT = 0.05                 # ours: the TCP line back within 5% of its growth afterwards
# ours: a cache grows with the connections when the server's share is at least
# this many bytes per connection (the smallest slab object is 8 B: below 2 B per
# connection is fewer than one object per 4 connections, the machine's own churn)
GROWS_MIN_BYTES = 2.0
# caches the measuring itself fills: listing /proc/<pid>/fd (count_fds) makes a
# proc inode per descriptor, in the control's holder as well, but never in the client
MEASUREMENT_ARTIFACTS = ("proc_inode_cache",)


# ---------------------------------------------------------------- one measurement

def measure(mechanism: str, n: int, lines: dict | None, *, env=None, server_cpus=None,
            ready_timeout_s: float = 10.0) -> dict:
    """Hold n idle connections on one server; the readings before and while holding."""
    argv = ([sys.executable, "-m", "bench.tasks.memory", "bare"] if mechanism == CONTROL
            else [sys.executable, "-m", "servers", mechanism, "--port", "0",
                  "--stats", os.devnull])
    server = client = None
    out = {"mechanism": mechanism, "connections": n, "error": None}
    try:
        server = procs.Child("server", argv, cpus=server_cpus, env=env)
        host, port, pid = server.read_ready(ready_timeout_s)
        pid = int(pid)
        wait_quiet(lines)
        before = read_state(pid, lines)
        client = procs.Child("client", [sys.executable, "-m", "bench.tasks.memory", "hold", host, port,
                                        str(n)], env=env)
        held, failure, _ = client.read_ready(HOLD_TIMEOUT_S + n / 1000)
        if int(held) < n:
            raise procs.ChildError(f"the client opened {held} of {n} connections ({failure})")
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while count_fds(pid) < before["fds"] + n:
            if server.exited() is not None:
                raise procs.ChildError(f"server exited {server.exited()}: {server.stderr_tail()}")
            if time.monotonic() > deadline:
                raise procs.ChildError(f"the server held {count_fds(pid) - before['fds']} of {n} "
                                       f"connections after {HOLD_TIMEOUT_S:g} s")
            time.sleep(0.02)
        time.sleep(SETTLE_S)
        during = read_state(pid, lines)
        out.update(before=before, during=during)
    except procs.ChildError as e:
        out["error"] = str(e)
    finally:
        for child in (client, server):
            if child is not None:
                child.stop(signal.SIGTERM, 10)
                child.close()
    if out["error"] is None:
        wait_quiet(lines)
        out["after"] = read_state(-1, lines)
        out["drift"] = drift(out)
    return out


def drift(m: dict) -> float:
    """How far the machine moved on its own: |after - before| over the growth while holding.

    Every reading is machine-wide; another process opening or closing sockets
    meanwhile shows as a TCP line (or Slab total) that does not return to where
    it started once our connections are gone.
    """
    b, d, a = m["before"], m["during"], m["after"]
    if b["slab"] and b["slab"].get("TCP") is not None:
        grew, moved = d["slab"]["TCP"] - b["slab"]["TCP"], a["slab"]["TCP"] - b["slab"]["TCP"]
    else:
        grew = d["meminfo"]["Slab"] - b["meminfo"]["Slab"]
        moved = a["meminfo"]["Slab"] - b["meminfo"]["Slab"]
    return round(abs(moved) / grew, 4) if grew > 0 else 1.0


def measure_steady(mechanism: str, n: int, lines: dict | None, **kw) -> dict:
    """measure() until the machine stayed still (drift <= MAX_DRIFT), at most TRIES times; the stillest."""
    tries = []
    for _ in range(TRIES):
        m = measure(mechanism, n, lines, **kw)
        tries.append(m)
        if m["error"] is None and m["drift"] <= MAX_DRIFT:
            break
    ok = [m for m in tries if m["error"] is None]
    best = min(ok, key=lambda m: m["drift"]) if ok else tries[-1]
    best["tries"] = len(tries)
    return best


def _delta(m: dict, key: str, cache: str | None = None):
    b, d = m["before"], m["during"]
    if cache is None:
        return d["meminfo"][key] - b["meminfo"][key]
    if b["slab"] is None or b["slab"].get(cache) is None or d["slab"].get(cache) is None:
        return None
    return d["slab"][cache] - b["slab"][cache]


# the bare server's part of the control's growth: one of the pair's two sockets
# for the socket caches; none of the eventpoll lines, where the control grows
# only by what is merged with them (the client's bind buckets)
SERVER_PART_OF_CONTROL = {"TCP": 0.5, "sock_inode_cache": 0.5, "eventpoll_epi": 0.0,
                          "eventpoll_pwq": 0.0, "io_kiocb": 0.0, None: 0.5,
                          **dict.fromkeys(THREAD_CACHES, 0.0)}


def row(m: dict, control: dict | None) -> dict:
    """One memory.csv row from a measurement and the same N's control.

    A server's share of a cache = its delta minus the client's part of the
    control's delta: delta(server) - delta(control) x (1 - SERVER_PART_OF_CONTROL).
    Without a control: half the delta of the socket caches, the whole delta of the others.
    """
    n = m["connections"]

    def share(cache=None, key="Slab"):
        d = _delta(m, key, cache)
        if d is None:
            return None
        part = SERVER_PART_OF_CONTROL[cache] if key == "Slab" else 0.0   # KernelStack: all the client's
        if control is None or control.get("error"):
            return d * part if part else d
        c = _delta(control, key, cache)
        return None if c is None else d - c * (1 - part)

    caches = {c: share(c) for c in CACHES}
    known = [v for v in caches.values() if v is not None]
    complete = all(caches[c] is not None for c in CACHES if c not in OPTIONAL_CACHES)
    rss = m["during"]["rss_bytes"]
    grown = growing_caches(m, control)
    tasks = [share(c) for c in THREAD_CACHES]
    task_bytes = None if None in tasks else round(sum(tasks))
    stack = share(key="KernelStack") if "KernelStack" in m["during"]["meminfo"] else None
    return {
        "threads": m["during"].get("threads"), "kernel_stack_bytes": stack, "task_bytes": task_bytes,
        "per_conn_thread_bytes": None if None in (task_bytes, stack) else round((stack + task_bytes) / n, 1),
        "mechanism": m["mechanism"], "connections": n, "rss_bytes": rss,
        "slab_bytes": round(share()), **{c: None if v is None else round(v) for c, v in caches.items()},
        "per_conn_rss_bytes": round((rss - m["before"]["rss_bytes"]) / n, 1),
        "per_conn_kernel_bytes": round(sum(known) / n, 1) if complete else None,
        "slab_growing_bytes": None if grown is None else round(sum(grown.values())),
    }


def growing_caches(m: dict, control: dict | None) -> dict[str, int] | None:
    """Every slabinfo line whose server share (delta - control delta / 2) reaches
    GROWS_MIN_BYTES per connection, largest first; None without slabinfo readings."""
    b, d = m["before"].get("all"), m["during"].get("all")
    if not b or not d:
        return None
    cb, cd = ((control or {}).get("before") or {}).get("all"), ((control or {}).get("during") or {}).get("all")
    use_control = bool(cb and cd) and not (control or {}).get("error")
    out = {}
    for name in d:
        if name in MEASUREMENT_ARTIFACTS:
            continue
        delta = d[name] - b.get(name, 0)
        share = delta - (cd.get(name, 0) - cb.get(name, 0)) / 2 if use_control else delta / 2
        if share >= GROWS_MIN_BYTES * m["connections"]:
            out[name] = round(share)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------- the task

def run_memory(run_dir, mechanisms, connections, *, fd_limits=None, env=None, server_cpus=None,
               log=None) -> dict:
    """Measure every (N, mechanism) plus the control; append memory.csv, write memory.json."""
    from bench.rundir.store import append_row, write_json      # pandas: only in the orchestrator
    log = log or sys.stderr
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "started_at": utc_now(), "method": __doc__.split("\n\n", 1)[1],
           "limits": limits(), "measurements": [], "skipped": [], "reason": None,
           "capacity_probe": {"run": False, "note": "not run: the limit that stops a server "
                                                    "first is predicted instead (first_limits)"}}
    try:
        lines = slab_lines(read_slabinfo(), CACHES + THREAD_CACHES)
        doc["caches"] = lines
        missing = [c for c, l in lines.items() if l["line"] is None and c not in OPTIONAL_CACHES]
        if missing:
            doc["reason"] = f"/proc/slabinfo has no line for {', '.join(missing)}"
    except OSError as e:
        lines = None
        doc["reason"] = (f"/proc/slabinfo is not readable ({e.strerror}): kernel memory per "
                         "connection not measured; run as root or make slabinfo readable")
        print(f"memory: {doc['reason']}", file=log, flush=True)
    hard = doc["limits"]["rlimit_nofile"]["hard"]
    for n in sorted(connections):
        if hard != resource.RLIM_INFINITY and n + FD_SLACK > hard:
            doc["skipped"].append({"connections": n, "reason": f"RLIMIT_NOFILE hard limit {hard} "
                                                              f"< {n} connections + {FD_SLACK}"})
            continue
        control = measure_steady(CONTROL, n, lines, env=env, server_cpus=server_cpus)
        doc["measurements"].append(control)
        if control["error"]:
            print(f"memory control c={n}: FAILED: {control['error']}", file=log, flush=True)
        else:
            doc.setdefault("control", []).append(row(control, control))   # bare side: no epoll objects
        for mech in mechanisms:
            limit = (fd_limits or {}).get(mech)
            if limit is not None and n + FD_SLACK > limit:
                doc["skipped"].append({"mechanism": mech, "connections": n,
                                       "reason": f"{mech} serves at most {limit} descriptors"})
                continue
            m = measure_steady(mech, n, lines, env=env, server_cpus=server_cpus)
            doc["measurements"].append(m)
            if m["error"]:
                print(f"memory {mech} c={n}: FAILED: {m['error']}", file=log, flush=True)
                continue
            r = row(m, None if control["error"] else control)
            append_row(run_dir / "memory.csv", r, MEMORY_COLUMNS)
            doc.setdefault("rows", []).append({**r, "grown_caches": growing_caches(m, control)})
            kernel = r["per_conn_kernel_bytes"]
            print(f"memory {mech:<8} c={n:<6} drift {m['drift']:.0%} RSS {r['per_conn_rss_bytes']:>8,.0f} B/conn  kernel "
                  f"{'-' if kernel is None else format(kernel, ',.0f'):>6} B/conn  all slab "
                  f"{r['slab_bytes'] / n:>6,.0f} B/conn", file=log, flush=True)
    for m in doc["measurements"]:         # every line's reading served the rows; the rows keep the growth
        for when in ("before", "during", "after"):
            (m.get(when) or {}).pop("all", None)
    doc["first_limits"] = first_limits(doc)
    doc["ended_at"] = utc_now()
    write_json(run_dir / "memory.json", doc)
    return doc


# limit -> the errno a server meets when it runs out (accept, epoll_ctl, any allocation)
LIMIT_ERRNO = {"RLIMIT_NOFILE": "EMFILE", "fs.nr_open": "EMFILE", "fs.file-max": "ENFILE",
               "fs.epoll.max_user_watches": "ENOSPC", "memory": "ENOMEM"}


def first_limits(doc: dict) -> list[dict]:
    """Each limit as a count of one epoll server's connections, smallest first (predicted, not probed).

    memory: MemTotal over the measured kernel (every growing slab cache, else
    the four named ones) + RSS bytes of an epoll connection at the largest N
    (the machine holds nothing else: an upper bound).
    """
    lim = doc["limits"]
    counts = {k: v for k, v in lim["values"].items() if v}
    rows = [r for r in doc.get("rows", []) if r["mechanism"] == "epoll" and r["per_conn_kernel_bytes"]]
    if rows and lim["mem_total_bytes"]:
        top = max(rows, key=lambda r: r["connections"])
        kernel = (top["slab_growing_bytes"] / top["connections"] if top.get("slab_growing_bytes")
                  else top["per_conn_kernel_bytes"])
        counts["memory"] = int(lim["mem_total_bytes"] / (kernel + max(top["per_conn_rss_bytes"], 0)))
    return [{"limit": k, "connections": v, "errno": LIMIT_ERRNO[k]}
            for k, v in sorted(counts.items(), key=lambda kv: kv[1])]


def read_memory_json(run_dir) -> dict:
    """memory.json as written by run_memory; {} when absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / "memory.json").read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["hold"]:
        return hold(argv[1], int(argv[2]), int(argv[3]))
    if argv[:1] == ["bare"]:
        return bare()
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench.tasks.memory",
                                description="Memory per idle connection; appends RUN_DIR/memory.csv.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--connections", nargs="+", type=int, default=[1000])
    p.add_argument("--mechanisms", nargs="+", default=["select", "poll", "epoll", "epoll-et"])
    args = p.parse_args(argv)
    from servers.sysutil import raise_nofile_limit
    raise_nofile_limit()
    run_memory(args.run_dir, args.mechanisms, args.connections, fd_limits={"select": 1024})
    print(Path(args.run_dir) / "memory.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
