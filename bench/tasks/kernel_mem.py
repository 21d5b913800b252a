"""/proc readings for the memory task: slab caches, meminfo, a process's RSS and descriptors, limits."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

CACHES = ("eventpoll_epi", "eventpoll_pwq", "TCP", "sock_inode_cache", "io_kiocb")
# io_kiocb: io_uring's request, one per armed multishot poll (its wait-queue entry
# is inside it); a kernel without io_uring has no such line, so it counts where present
OPTIONAL_CACHES = ("io_kiocb",)
# C10: what a thread costs the kernel besides its stack pages (meminfo KernelStack):
# its task_struct, its mappings (stack, guard, CPython's frame chunk) and its pid
THREAD_CACHES = ("task_struct", "vm_area_struct", "pid")
MEMINFO = ("Slab", "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "MemAvailable")
GIB = 2 ** 30
SETTLE_S = 0.2                   # after the last accept: registrations finish
QUIET_TIMEOUT_S = 3.0            # waiting for freed sockets to leave the slab


def read_slabinfo(path: str = "/proc/slabinfo") -> dict[str, dict]:
    """{line name: {active_objs, num_objs, objsize}}; OSError when unreadable."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            w = line.split()
            out[w[0]] = {"active_objs": int(w[1]), "num_objs": int(w[2]), "objsize": int(w[3])}
    return out


def slab_lines(slab: dict[str, dict], caches=CACHES, sys_slab: Path = Path("/sys/kernel/slab")) -> dict:
    """cache -> {"line": the slabinfo line that counts it, "aliases": caches merged with it}.

    SLUB lists a merged group once, under the name of its first cache;
    /sys/kernel/slab/<cache> links every alias to the group (":A-0000064").
    """
    groups: dict[str, list[str]] = {}
    if sys_slab.is_dir():
        for entry in sys_slab.iterdir():
            groups.setdefault(os.path.realpath(entry), []).append(entry.name)
    out = {}
    for cache in caches:
        real = os.path.realpath(sys_slab / cache) if (sys_slab / cache).exists() else None
        aliases = sorted(n for n in groups.get(real, []) if not n.startswith(":")) if real else []
        line = cache if cache in slab else next((n for n in aliases if n in slab), None)
        out[cache] = {"line": line, "aliases": aliases,
                      "objsize": slab[line]["objsize"] if line else None}
    return out


def read_meminfo() -> dict[str, int]:
    """The MEMINFO fields of /proc/meminfo, in bytes."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in MEMINFO + ("MemTotal",):
                out[key] = int(rest.split()[0]) * 1024
    return out


def read_rss(pid: int) -> int | None:
    return _status_field(pid, "VmRSS", 1024)


def read_threads(pid: int) -> int | None:
    """Threads: of /proc/<pid>/status (the thread server holds one per connection)."""
    return _status_field(pid, "Threads", 1)


def _status_field(pid: int, key: str, scale: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * scale
    except OSError:
        pass
    return None


def count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def shared_maps(pid: int) -> dict[str, int]:
    """Bytes of each shared (rw-s) anonymous-inode mapping in /proc/PID/maps, by name.

    io_uring's SQ and CQ rings and its SQE array are mmap-ed from the ring fd
    and show as anon_inode:[io_uring]; an epoll set maps nothing (C6).
    """
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith("anon_inode:") and fields[1][3] == "s":
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    out[fields[5]] = out.get(fields[5], 0) + hi - lo
    except OSError:
        pass
    return out


def read_state(pid: int, lines: dict | None) -> dict:
    """One reading: the named caches' lines and every slabinfo line ("all"), in bytes
    (active_objs x objsize), meminfo, the server's RSS, fds and shared anonymous-inode mappings."""
    state = {"t": time.monotonic(), "meminfo": read_meminfo(), "rss_bytes": read_rss(pid),
             "fds": count_fds(pid), "threads": read_threads(pid), "slab": None,
             "shared_maps": shared_maps(pid), "all": None}
    if lines is not None:
        slab = read_slabinfo()
        state["slab"] = {c: (slab[l["line"]]["active_objs"] * slab[l["line"]]["objsize"]
                             if l["line"] in slab else None) for c, l in lines.items()}
        state["all"] = {name: v["active_objs"] * v["objsize"] for name, v in slab.items()}
    return state


def wait_quiet(lines: dict | None) -> None:
    """Let sockets freed by the previous measurement leave the TCP slab (freeing is deferred)."""
    if lines is None or lines["TCP"]["line"] is None:
        time.sleep(SETTLE_S)
        return
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        now = read_slabinfo()[lines["TCP"]["line"]]["active_objs"]
        if now == last:
            return
        last = now
        time.sleep(0.1)



def limits() -> dict:
    """The limits on how many connections this machine holds, and the connections per GiB each implies."""
    def sysctl(name):
        try:
            return int(Path("/proc/sys", name.replace(".", "/")).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    mem = read_meminfo().get("MemTotal")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    values = {"fs.file-max": sysctl("fs.file-max"), "fs.nr_open": sysctl("fs.nr_open"),
              "fs.epoll.max_user_watches": sysctl("fs.epoll.max_user_watches"),
              "RLIMIT_NOFILE": hard if hard != resource.RLIM_INFINITY else None}
    gib = mem / GIB if mem else None
    return {
        "mem_total_bytes": mem, "values": values, "rlimit_nofile": {"soft": soft, "hard": hard},
        "per_gib": {k: round(v / gib) for k, v in values.items() if v and gib},
        "meaning": {
            "fs.file-max": "open files system-wide; each server connection is one (default ~10% of "
                           "memory at ~1 KiB per file)",
            "fs.nr_open": "the most descriptors one process may ever open (a fixed count, not "
                          "scaled by memory)",
            "fs.epoll.max_user_watches": "epoll watches per user (default 4% of low memory over "
                                         "the per-watch cost); one per connection",
            "RLIMIT_NOFILE": "this process's hard descriptor limit: one server process holds "
                             "at most this many",
        },
    }
