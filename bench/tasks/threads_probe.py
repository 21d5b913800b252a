"""C10's probes: how many threads this process can really start, and what a capped thread server does.

probe_c10 runs in its own spawned child (bench.tasks.probes) and returns both:

- thread_limit: every limit on starting a thread that this machine shows
  (RLIMIT_NPROC against the tasks of our real uid, kernel.threads-max and
  kernel.pid_max against the tasks on the machine, each pids cgroup's
  pids.max, vm.max_map_count against our mappings, RLIMIT_AS, MemAvailable),
  then threads started one by one (each blocked on one Event, with the
  threads server's stack size) until Thread.start fails or a cap: THREAD_CAP,
  lowered so that every machine-wide limit keeps a quarter of its headroom
  for the other processes here. On a failure every limit is read again, and
  the one with no headroom left is named; at the cap, the count is a floor.
  Root is exempt from RLIMIT_NPROC (kernel/fork.c: INIT_USER, or
  CAP_SYS_ADMIN/CAP_SYS_RESOURCE): `uid` runs it as another user to see it.
- capped_server: `python -m servers threads --max-threads T`, T clients that
  each get an echo, then client T + 1: connected? echoed, closed, or no
  answer within CAPPED_WAIT_S (blocked)? Then one of the T leaves, and we
  see whether the waiting client is served, or a new one is.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from servers.threads_server import STACK_BYTES

THREAD_CAP = 10_000          # never more threads than this (10k start in ~5 s here, 20k in ~30 s)
RESERVE = 0.25               # of a machine-wide limit's headroom, left to the others
CAPPED_THREADS = 4           # T for the capped server
CAPPED_WAIT_S = 2.0          # how long client T + 1 waits for its echo before we call it blocked
MSG = b"ping"


# ------------------------------------------------------------------ limits

def read_limits() -> dict:
    """Every limit on starting one more thread, with its current use (None where unreadable)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    as_soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    status = _status(Path("/proc/self/status"))
    return {
        "RLIMIT_NPROC": {"limit": _lim(soft), "hard": _lim(hard), "used": _uid_tasks(os.getuid()),
                         "enforced": os.geteuid() != 0 and os.getuid() != 0},
        "kernel.threads-max": {"limit": _int_file("/proc/sys/kernel/threads-max"), "used": _nr_threads()},
        "kernel.pid_max": {"limit": _int_file("/proc/sys/kernel/pid_max"), "used": _nr_threads()},
        "pids.max": _pids_cgroups(),
        "vm.max_map_count": {"limit": _int_file("/proc/sys/vm/max_map_count"),
                             "used": len(Path("/proc/self/maps").read_text().splitlines())},
        "RLIMIT_AS": {"limit": _lim(as_soft), "used": status.get("VmSize", 0) * 1024},
        "MemAvailable": {"bytes": _meminfo("MemAvailable"),
                         "overcommit_memory": _int_file("/proc/sys/vm/overcommit_memory")},
        "process": {"threads": status.get("Threads"), "rss_bytes": status.get("VmRSS", 0) * 1024},
    }


def headroom(lim: dict, stack_bytes: int, maps_per_thread: float = 3.0,
             rss_per_thread: float | None = None) -> dict[str, int | None]:
    """Threads each limit still allows (None: no such limit, or not enforced here)."""
    def left(entry):
        return None if not entry or entry.get("limit") is None or entry.get("used") is None \
            else entry["limit"] - entry["used"]
    out = {"RLIMIT_NPROC": left(lim["RLIMIT_NPROC"]) if lim["RLIMIT_NPROC"]["enforced"] else None,
           "kernel.threads-max": left(lim["kernel.threads-max"]),
           "kernel.pid_max": left(lim["kernel.pid_max"])}
    cg = [left(c) for c in lim["pids.max"]]
    out["pids.max"] = min((c for c in cg if c is not None), default=None)
    maps = left(lim["vm.max_map_count"])
    out["vm.max_map_count"] = None if maps is None else int(maps / maps_per_thread)
    room = left(lim["RLIMIT_AS"])
    out["RLIMIT_AS"] = None if room is None else room // (stack_bytes + 4096)
    mem = lim["MemAvailable"]["bytes"]
    out["MemAvailable"] = None if not (mem and rss_per_thread) else int(mem / rss_per_thread)
    return out


SHARED = ("kernel.threads-max", "kernel.pid_max", "pids.max", "MemAvailable")  # other processes need them too


# ------------------------------------------------------------------ thread_limit

def thread_limit(cap: int = THREAD_CAP, nproc: int | None = None, uid: int | None = None) -> dict:
    """Child: start blocked threads until one fails or the cap; which limit stopped it."""
    if uid is not None:
        os.setgid(uid)
        os.setuid(uid)
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    threading.stack_size(STACK_BYTES)
    before = read_limits()
    room = headroom(before, STACK_BYTES)
    shared = [int(v * (1 - RESERVE)) for k, v in room.items() if k in SHARED and v is not None]
    use_cap = min([cap, *shared])
    go, threads, error = threading.Event(), [], None
    t0 = time.monotonic()
    try:
        while len(threads) < use_cap:
            t = threading.Thread(target=go.wait, daemon=True)
            t.start()
            threads.append(t)
    except (RuntimeError, MemoryError) as e:
        error = f"{type(e).__name__}: {e}"
    start_s = time.monotonic() - t0
    at_end = read_limits()
    started = len(threads)     # never released nor joined: 10k threads waking for the GIL take
    del threads                # seconds (20k: half a minute); the child's exit ends them at once
    maps_per = (at_end["vm.max_map_count"]["used"] - before["vm.max_map_count"]["used"]) / max(started, 1)
    rss_per = (at_end["process"]["rss_bytes"] - before["process"]["rss_bytes"]) / max(started, 1)
    room_end = headroom(at_end, STACK_BYTES, max(maps_per, 1.0), rss_per or None)
    stopped_by = None
    if error:
        exhausted = [k for k, v in room_end.items() if v is not None and v <= 1]
        stopped_by = exhausted[0] if exhausted else "unknown (no limit read here is exhausted)"
    elif started >= use_cap:
        stopped_by = "our cap" if use_cap == cap else "our reserve for other processes"
    return {"cap": cap, "cap_used": use_cap, "started": started, "at_least": error is None,
            "error": error, "stopped_by": stopped_by, "start_s": round(start_s, 3),
            "stack_bytes": STACK_BYTES, "maps_per_thread": round(maps_per, 2),
            "rss_per_thread_bytes": round(rss_per), "uid": os.getuid(),
            "limits_before": before, "limits_at_end": at_end,
            "headroom_before": headroom(before, STACK_BYTES, max(maps_per, 1.0), rss_per or None),
            "headroom_at_end": room_end}


# ------------------------------------------------------------------ capped_server

def capped_server(max_threads: int = CAPPED_THREADS, wait_s: float = CAPPED_WAIT_S) -> dict:
    """The threads server capped at T threads, T + 1 clients: what happens to the last one."""
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "stats.json"
        proc = subprocess.Popen([sys.executable, "-m", "servers", "threads", "--port", "0",
                                 "--max-threads", str(max_threads), "--stats", str(stats_path)],
                                stdout=subprocess.PIPE, text=True)
        clients = []
        try:
            _, host, port, _ = proc.stdout.readline().split()
            addr = (host, int(port))
            for _ in range(max_threads):
                c = socket.create_connection(addr, timeout=5)
                c.sendall(MSG)
                clients.append(c)
            served = sum(_answer(c, 5.0)[0] == "echoed" for c in clients)
            extra = socket.create_connection(addr, timeout=5)       # the handshake is the kernel's
            clients.append(extra)
            extra.sendall(MSG)
            outcome, waited = _answer(extra, wait_s)
            doc = {"max_threads": max_threads, "served_first": served, "extra_connected": True,
                   "extra_outcome": outcome, "extra_waited_s": round(waited, 4), "wait_limit_s": wait_s}
            clients[0].close()                                      # one thread frees
            if outcome == "no answer":
                doc["extra_after_a_thread_freed"], doc["extra_after_s"] = _answer(extra, wait_s)
            else:
                late = socket.create_connection(addr, timeout=5)
                clients.append(late)
                late.sendall(MSG)
                doc["new_client_after_a_thread_freed"] = _retry_answer(addr, late, wait_s)
        finally:
            for c in clients:
                c.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    doc.update(rejected_threads=stats.get("rejected_threads"),
               rejected_threads_reason=stats.get("rejected_threads_reason"))
    return doc


def _answer(sock: socket.socket, wait_s: float) -> tuple[str, float]:
    """("echoed" | "closed" | "reset" | "no answer", seconds waited) for one message sent."""
    sock.settimeout(wait_s)
    t0 = time.monotonic()
    try:
        data = sock.recv(len(MSG))
    except socket.timeout:
        return "no answer", time.monotonic() - t0
    except ConnectionResetError:
        return "reset", time.monotonic() - t0
    return ("echoed" if data else "closed"), time.monotonic() - t0


def _retry_answer(addr, sock: socket.socket, wait_s: float) -> str:
    # the freed thread's close races the new accept: one retry, after it is surely gone
    got, _ = _answer(sock, wait_s)
    if got == "echoed":
        return got
    sock.close()
    time.sleep(0.2)
    with socket.create_connection(addr, timeout=5) as again:
        again.sendall(MSG)
        return _answer(again, wait_s)[0] + " (second try)"


def probe_c10() -> dict:
    """Child: both C10 probes."""
    return {"thread_limit": thread_limit(), "capped_server": capped_server()}


# ------------------------------------------------------------------ helpers

def _lim(v: int) -> int | None:
    return None if v == resource.RLIM_INFINITY else v


def _int_file(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _meminfo(key: str) -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def _status(path: Path) -> dict[str, int]:
    out = {}
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("Threads", "VmSize", "VmRSS"):
                out[k] = int(v.split()[0])
            elif k == "Uid":
                out["uid"] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _nr_threads() -> int | None:
    # /proc/loadavg's 4th field is running/total scheduling entities: every thread on the machine
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None


def _uid_tasks(uid: int) -> int:
    """Tasks (threads) whose real uid is `uid`: what RLIMIT_NPROC counts."""
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _status(d / "status")
            if st.get("uid") == uid:
                n += st.get("Threads", 0)
    return n


def _pids_cgroups() -> list[dict]:
    """pids.max and pids.current of our pids cgroup and each ancestor that has them (v1 or v2)."""
    out = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if ctrls == "pids":
            roots = [Path("/sys/fs/cgroup/pids")]
        elif ctrls == "":
            roots = [Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")]
        else:
            continue
        for root in roots:
            d = root / path.lstrip("/")
            while True:
                mx, cur = d / "pids.max", d / "pids.current"
                if mx.exists() and cur.exists():
                    text = mx.read_text().strip()
                    out.append({"cgroup": str(d), "limit": None if text == "max" else int(text),
                                "used": _int_file(str(cur))})
                if d == root or d.parent == d:
                    break
                d = d.parent
    return out
