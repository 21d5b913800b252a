"""The burst mode's gate: SIGSTOP and SIGCONT on the server, each confirmed from /proc.

kill() returns before the target has stopped: a server woken by SIGSTOP in
its wait call could still return from it with the first message of a burst
written meanwhile. So `Gate.stop` waits until /proc shows every thread of
the server stopped, `Gate.settle` until every thread sleeps again (the
server has finished what it had to do), both with a deadline; `Gate.cont`
is safe on any exit path, so the server is never left stopped.
"""

from __future__ import annotations

import os
import signal
import time

STOP_DEADLINE_S = 2.0          # SIGSTOP until every server thread is seen stopped
SETTLE_DEADLINE_S = 5.0        # until every server thread sleeps again
POLL_S = 20e-6                 # between two reads of /proc while waiting for a state
_STOPPED, _SLEEPING = frozenset("Tt"), frozenset("S")


class Failed(Exception):
    """A phase that could not finish: the message says which and why."""


def thread_states(pid: int) -> str:
    """One state letter per thread of pid (/proc/PID/task/*/stat); Failed if it is gone."""
    states = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    states.append(chr(f.read().rpartition(b")")[2][1]))
            except (FileNotFoundError, ProcessLookupError):
                continue                                   # a thread that just exited
    except FileNotFoundError:
        raise Failed(f"server {pid} is gone") from None
    if not states or states[0] in "ZX":
        raise Failed(f"server {pid} has exited")
    return "".join(states)


class Gate:
    """SIGSTOP/SIGCONT on the server, each confirmed from /proc with a deadline."""

    def __init__(self, pid: int):
        self.pid = pid
        self.stopped = False

    def _until(self, ok: frozenset, what: str, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while True:
            states = thread_states(self.pid)
            if all(s in ok for s in states):
                return
            if time.monotonic() > end:
                raise Failed(f"server {self.pid} not {what} within {deadline_s:g} s "
                             f"(thread states {states[:20]!r})")
            time.sleep(POLL_S)

    def stop(self) -> None:
        self._kill(signal.SIGSTOP)
        self.stopped = True
        self._until(_STOPPED, "stopped", STOP_DEADLINE_S)

    def cont(self) -> None:
        """SIGCONT if we stopped it; safe to call on any exit path."""
        if self.stopped:
            self.stopped = False
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def settle(self) -> None:
        """Wait until every server thread sleeps: the server has done what it had to do."""
        self._until(_SLEEPING, "idle (every thread sleeping)", SETTLE_DEADLINE_S)

    def _kill(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            raise Failed(f"server {self.pid} is gone") from None
