"""Hosts for the cluster tests: Linux network namespaces on one private segment.

One "server" namespace holds a bridge with SERVER_IP; each client namespace
holds one end of a veth pair whose other end is a port of that bridge. The
addresses (10.123.0.0/24) exist only inside these namespaces: nothing is
routed out and no interface of the root namespace is created or touched
(each veth is created inside its client namespace, its peer inside the
server namespace). Everything is deleted by close(), processes first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SUBNET = "10.123.0"
SERVER_IP = f"{SUBNET}.1"
SCHEDULER_PORT = 8786
VENV_BIN = Path(sys.executable).parent
READY_S = 40.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def can_create() -> str | None:
    """None if namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"iomux-probe-{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot create a network namespace: {e}"
    _ip("netns", "del", name)
    return None


class Hosts:
    """A server namespace and `clients` client namespaces, with a Dask scheduler and workers."""

    def __init__(self, clients: int, workdir: Path):
        tag = f"iomux{os.getpid() % 100000}"
        self.server = f"{tag}-srv"
        self.clients = [f"{tag}-c{k}" for k in range(1, clients + 1)]
        self.client_ips = [f"{SUBNET}.{k + 1}" for k in range(1, clients + 1)]
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.made: list[str] = []

    @property
    def scheduler(self) -> str:
        return f"tcp://{SERVER_IP}:{SCHEDULER_PORT}"

    def build(self) -> None:
        for ns in [self.server, *self.clients]:
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.server, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.server, "addr", "add", f"{SERVER_IP}/24", "dev", "br0")
        _ip("-n", self.server, "link", "set", "br0", "up")
        for k, (ns, addr) in enumerate(zip(self.clients, self.client_ips)):
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{k}",
                "netns", self.server)
            _ip("-n", self.server, "link", "set", f"p{k}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def spawn(self, ns: str, argv: list[str], log: str) -> subprocess.Popen:
        """argv inside namespace ns, in its own session, output to workdir/log."""
        out = open(self.workdir / log, "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=self.workdir)
        out.close()
        self.procs.append(p)
        return p

    def start_dask(self) -> None:
        self.spawn(self.server, [str(VENV_BIN / "dask"), "scheduler", "--host", SERVER_IP,
                                 "--port", str(SCHEDULER_PORT), "--no-dashboard"], "scheduler.log")
        self._wait_log("scheduler.log", "Scheduler at:")
        for ns, addr in zip(self.clients, self.client_ips):
            self.start_worker(ns, addr)
        for ns in self.clients:
            self._wait_log(f"worker-{ns}.log", "Registered to:")

    def start_worker(self, ns: str, addr: str) -> None:
        # --no-nanny: the worker is the process we start, so killing it kills the worker
        self.workers[ns] = self.spawn(ns, [
            str(VENV_BIN / "dask"), "worker", self.scheduler, "--nthreads", "1", "--no-nanny",
            "--host", addr, "--no-dashboard", "--name", ns,
            "--local-directory", str(self.workdir / f"dask-{ns}")], f"worker-{ns}.log")

    def _wait_log(self, log: str, needle: str) -> None:
        path = self.workdir / log
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if needle in path.read_text():
                return
            time.sleep(0.1)
        tail = path.read_text()[-2000:]
        raise AssertionError(f"{log}: no {needle!r} within {READY_S} s:\n{tail}")

    def run(self, ns: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=self.workdir)

    def pids(self, ns: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                             timeout=10).stdout
        return [int(p) for p in out.split()]

    def cmdlines(self) -> dict[str, list[str]]:
        """{namespace: [command line of every process in it]}."""
        found = {}
        for ns in self.made:
            lines = []
            for pid in self.pids(ns):
                try:
                    lines.append(Path(f"/proc/{pid}/cmdline").read_bytes()
                                 .replace(b"\0", b" ").decode())
                except OSError:
                    pass
            found[ns] = lines
        return found

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.made:           # anything still inside a namespace we made is ours
            for pid in self.pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.made.clear()
