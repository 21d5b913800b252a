"""Test helpers: start a real server process, talk to it, stop it and read its stats."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT_S = 10


class ServerProc:
    """`python -m servers MECHANISM` in its own process group, stats to a file.

    `prelude` is Python run first in the child, e.g. to shrink a loop's ring.
    """

    def __init__(self, mechanism: str, tmp_path: Path, *extra: str, prelude: str | None = None):
        self.mechanism = mechanism
        self.stats_path = tmp_path / f"stats-{mechanism}-{time.monotonic_ns()}.json"
        self.proc = subprocess.Popen(
            [*server_command(prelude), mechanism, "--port", "0",
             "--stats", str(self.stats_path), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        line = _readline_with_deadline(self.proc, READY_TIMEOUT_S)
        word, host, port, pid = line.split()
        assert word == "READY", line
        self.host, self.port, self.pid = host, int(port), int(pid)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def connect(self, timeout: float = 10) -> socket.socket:
        s = socket.create_connection(self.address, timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self, timeout: float = 20) -> dict:
        """SIGTERM, wait for exit 0, return the statistics JSON."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return json.loads(self.stats_path.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def server_command(prelude: str | None = None) -> list[str]:
    """argv that starts `python -m servers`, after `prelude` if given."""
    if prelude is None:
        return [sys.executable, "-m", "servers"]
    return [sys.executable, "-c",
            f"{prelude}\nimport sys\nfrom servers.__main__ import main\nsys.exit(main(sys.argv[1:]))"]


def _readline_with_deadline(proc: subprocess.Popen, timeout: float) -> str:
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"no READY line within {timeout} s: {proc.stderr.read()}")
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read()}")
    return line


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise AssertionError(f"EOF after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def raise_fd_limit() -> int:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
