"""Child processes of a run: own process group, pinned, READY with a deadline, always killed.

Every child starts in a new session (so it has its own process group, and
a Ctrl-C on the terminal reaches only the orchestrator) and is remembered
until its whole group is gone. kill_all() SIGKILLs every remembered group;
it runs at interpreter exit (atexit) and from the run's error and signal
paths, so no server or load-generator worker outlives a run.
"""

from __future__ import annotations

import atexit
import os
import selectors
import signal
import subprocess
import tempfile
import time
from functools import partial

from servers.sysutil import die_with_parent

_LIVE: dict[int, "Child"] = {}     # pid (= pgid) -> Child not yet known dead


class ChildError(RuntimeError):
    """A child that did not start or answer as it should; the text says which and why."""


class Child:
    """One child process in its own session, stdout piped, stderr to a temp file."""

    def __init__(self, name: str, argv: list[str], *, cpus: list[int] | None = None,
                 env: dict | None = None):
        self.name = name
        self.argv = argv
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env, start_new_session=True,
                                     preexec_fn=partial(die_with_parent, os.getpid()))
        self.pid = self.proc.pid
        _LIVE[self.pid] = self
        if cpus:
            try:
                os.sched_setaffinity(self.pid, cpus)
            except ProcessLookupError:
                pass                       # already gone: read_ready/wait will say why

    def read_ready(self, timeout_s: float) -> list[str]:
        """Wait for the `READY host port pid` line; its words after READY."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise ChildError(f"{self.name}: no READY within {timeout_s:g} s")
        line = self.proc.stdout.readline().decode(errors="replace")   # our servers flush whole lines
        if not line:
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                raise ChildError(f"{self.name} closed stdout without READY and kept running") from None
            raise ChildError(f"{self.name} exited {code} at start-up: {self.stderr_tail()}")
        words = line.split()
        if not words or words[0] != "READY":
            raise ChildError(f"{self.name}: expected a READY line, got {line.strip()!r}")
        return words[1:]

    def exited(self) -> int | None:
        """The exit code if the process has ended, without reaping it (its /proc stays)."""
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.returncode
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def stop(self, sig: int, timeout_s: float) -> int | None:
        """Send sig to the process (not its group); wait up to timeout_s; its exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group (workers included); return once it is gone."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        _wait_group_gone(self.pid)
        _LIVE.pop(self.pid, None)

    def stderr_tail(self, lines: int = 3, chars: int = 400) -> str:
        self._err.seek(0)
        text = self._err.read().decode(errors="replace").strip()
        tail = " | ".join(text.splitlines()[-lines:])
        return tail[-chars:] if tail else "(no output on stderr)"

    def stderr_text(self, chars: int = 20000) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")[-chars:]

    def close(self) -> None:
        """Kill what is left of the group and release the pipes."""
        self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()


def kill_all() -> int:
    """SIGKILL every child group still remembered; how many there were."""
    children = list(_LIVE.values())
    for child in children:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for child in children:
        try:
            child.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        _wait_group_gone(child.pid)
        _LIVE.pop(child.pid, None)
    return len(children)


def _wait_group_gone(pgid: int, timeout_s: float = 5.0) -> bool:
    """Wait until no process of the group is alive (zombies do not count).

    SIGKILL is not instant: a loaded machine may take a moment to tear down
    a load-generator worker, and a caller about to report "all children
    killed" must not race it.
    """
    deadline = time.monotonic() + timeout_s
    while _group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def proc_stats():
    """(pid, fields of /proc/<pid>/stat after the command name) for every live process."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                yield int(name), f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue                                   # exited meanwhile


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid, from /proc."""
    members = []
    for pid, fields in proc_stats():
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(pid)
    return members


atexit.register(kill_all)
