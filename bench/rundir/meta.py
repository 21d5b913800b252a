"""meta.json: the machine, software and limits a run worked under."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from servers.sysutil import package_versions
from pathlib import Path

from bench.rundir.schema import FORMAT

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("iomux-bench", "numpy", "pandas", "matplotlib", "psutil", "hdrhistogram", "uvloop",
            "pytest")
SYSCTLS = ("fs/file-max", "fs/nr_open", "fs/epoll/max_user_watches",
           "net/ipv4/ip_local_port_range", "net/core/somaxconn", "net/ipv4/tcp_tw_reuse")


def collect_meta() -> dict:
    """Everything about this machine and this checkout that a result depends on.

    Unreadable items (a container without cpufreq, a tree without git) are
    recorded as null, never guessed.
    """
    return {
        "format": FORMAT,
        "kernel": {"release": platform.release(), "version": platform.version(),
                   "machine": platform.machine()},
        "cpu": {"model": _cpu_model(), "count": os.cpu_count(),
                "affinity": sorted(os.sched_getaffinity(0)), "governors": _governors()},
        "memory": {"mem_total_bytes": _mem_total()},
        "limits": {"rlimit_nofile": {"orchestrator": rlimit_nofile()},
                   **{name.replace("/", "."): _read_sysctl(name) for name in SYSCTLS}},
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": package_versions(PACKAGES),
        "git": _git(),
    }


def rlimit_nofile(pid: int | None = None) -> dict | None:
    """{"soft", "hard"} of RLIMIT_NOFILE for this process or another (from /proc)."""
    if pid is None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return {"soft": soft, "hard": hard}
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return {"soft": _num(soft), "hard": _num(hard)}
    except OSError:
        return None
    return None


def _num(text: str):
    return -1 if text == "unlimited" else int(text)


def _read_sysctl(name: str):
    try:
        text = Path("/proc/sys", name).read_text().split()
    except OSError:
        return None
    values = [int(v) if v.lstrip("-").isdigit() else v for v in text]
    return values[0] if len(values) == 1 else values


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _governors() -> dict:
    """cpu -> cpufreq scaling governor, for the CPUs that expose one."""
    out = {}
    for path in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")):
        try:
            out[path.parent.parent.name] = path.read_text().strip()
        except OSError:
            pass
    return out


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git() -> dict:
    def git(*args):
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None
    try:
        rev = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {"rev": None, "dirty": None}
    return {"rev": rev, "dirty": None if status is None else bool(status)}


# meta.json fields whose difference makes two runs (or two halves of one) incomparable
COMPARABLE = {
    "kernel": lambda m: (m.get("kernel") or {}).get("release"),
    "cpu": lambda m: {k: v for k, v in (m.get("cpu") or {}).items() if k in ("model", "count")},
    "python": lambda m: (m.get("python") or {}).get("version"),
    "packages": lambda m: m.get("packages"),
    "git": lambda m: {k: v for k, v in (m.get("git") or {}).items() if k in ("rev", "dirty")},
}


def differences(meta_a: dict, meta_b: dict) -> dict[str, tuple]:
    """{field: (value in a, value in b)} for each COMPARABLE field that differs."""
    out = {}
    for name, get in COMPARABLE.items():
        a, b = get(meta_a), get(meta_b)
        if a != b:
            out[name] = (a, b)
    return out


class ClusterUnavailable(RuntimeError):
    """The Dask scheduler cannot be reached or has no workers: one line, exit 1."""


def client_hosts(scheduler: str, want_hosts: int | None = None) -> list[dict]:
    """Each client host of a Dask cluster as one of its Dask workers sees it.

    [{host, hostname, kernel, cpu_count, cpus_allowed, python, packages,
    nofile_hard, dask_worker_threads}] of the first want_hosts hosts (all
    when None), in the order `python -m loadgen --hosts N` picks them.
    Raises ClusterUnavailable. Imports distributed only when called.
    """
    from loadgen import cluster
    try:
        client = cluster.connect(scheduler)
    except cluster.ClusterError as e:
        raise ClusterUnavailable(str(e)) from None
    try:
        by_host = cluster.workers_by_host(client)
        if not by_host:
            raise ClusterUnavailable(f"the Dask scheduler at {scheduler} has no workers: start "
                                     f"`dask worker {scheduler} --nthreads 1` on each client host")
        if want_hosts is not None and want_hosts > len(by_host):
            raise ClusterUnavailable(f"hosts = {want_hosts}: the cluster at {scheduler} has "
                                     f"{len(by_host)} client host(s): lower hosts or start "
                                     "dask worker on more hosts")
        hosts = cluster.describe(client, list(by_host)[:want_hosts or len(by_host)])
    finally:
        client.close()
    for facts in hosts:
        facts["dask_worker_threads"] = sum(t for _, t in by_host[facts["host"]])
    return hosts
