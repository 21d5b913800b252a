"""Syscall tracers: strace or perf attached to a process, their summaries parsed, a self-test.

bench.tasks.syscalls profiles the servers with whichever tracer
detect_tracer finds working here; its module docstring says what each counts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from bench.tasks import procs

# strace first: its attach is confirmed exactly (TracerPid), so the trace and the
# counted interval match; perf gives no such signal, and on this project's
# 2-core VM it slowed the servers as much as strace did
TRACER_ORDER = ("strace", "perf")
ATTACH_TIMEOUT_S = 10.0
PERF_SETTLE_S = 0.1                  # perf says nothing when its events go live: wait this long
DETACH_TIMEOUT_S = 15.0


def tracer_argv(tracer: str, pid: int, out: Path) -> list[str]:
    """The command that attaches `tracer` to pid and writes its summary to out."""
    if tracer == "strace":
        return [shutil.which("strace") or "strace", "-c", "-f", "-p", str(pid), "-o", str(out)]
    # -v: perf says "mmap size" once its ring buffers are set up, just before enabling
    return [shutil.which("perf") or "perf", "trace", "-v", "-s", "-p", str(pid), "-o", str(out)]


def parse_strace(text: str) -> dict[str, dict]:
    """strace -c summary -> {syscall: {calls, seconds, errors}} (the total line dropped)."""
    out = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 5 or words[-1] == "total" or not re.fullmatch(r"[\d.]+", words[0]):
            continue
        try:
            nums = [float(w) for w in words[:-1]]
        except ValueError:
            continue
        # % time, seconds, usecs/call, calls[, errors]
        out[words[-1]] = {"calls": int(nums[3]), "seconds": nums[1],
                          "errors": int(nums[4]) if len(nums) > 4 else 0}
    return out


def parse_perf(text: str) -> dict[str, dict]:
    """perf trace -s summary (one table per thread) -> {syscall: {calls, seconds, errors}} summed."""
    out: dict[str, dict] = {}
    has_errors = True
    for line in text.splitlines():
        words = line.split()
        if words[:3] == ["syscall", "calls", "errors"]:
            has_errors = True
            continue
        if words[:3] == ["syscall", "calls", "total"]:
            has_errors = False              # perf before 5.x: no errors column
            continue
        if len(words) < 4 or not re.fullmatch(r"[a-z_0-9]+", words[0]) or not words[1].isdigit():
            continue
        try:
            calls = int(words[1])
            errors = int(words[2]) if has_errors else 0
            msec = float(words[3] if has_errors else words[2])
        except ValueError:
            continue
        e = out.setdefault(words[0], {"calls": 0, "seconds": 0.0, "errors": 0})
        e["calls"] += calls
        e["errors"] += errors
        e["seconds"] += msec / 1000
    return out


PARSERS = {"strace": parse_strace, "perf": parse_perf}


class Trace:
    """One tracer attached to one process: start(), then stop() -> {syscall: counts}."""

    def __init__(self, tracer: str, pid: int, out: Path, env: dict | None = None):
        self.tracer, self.pid, self.out = tracer, pid, out
        self.child = procs.Child(f"tracer {tracer}", tracer_argv(tracer, pid, out), env=env)

    def wait_attached(self, timeout_s: float = ATTACH_TIMEOUT_S) -> None:
        """Return once the tracer sees the process; ChildError if it gave up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.child.exited()
            if code is not None:
                raise procs.ChildError(f"{self.tracer} exited {code} before attaching: "
                                       f"{self.child.stderr_tail()}")
            if self.tracer == "strace" and _traced_by(self.pid, self.child.pid):
                return
            if self.tracer == "perf" and "mmap size" in self.child.stderr_text():
                time.sleep(PERF_SETTLE_S)
                return
            time.sleep(0.005)
        raise procs.ChildError(f"{self.tracer} did not attach within {timeout_s:g} s: "
                               f"{self.child.stderr_tail()}")

    def stop(self) -> dict[str, dict]:
        """SIGINT the tracer (it detaches and writes its summary); the parsed summary."""
        try:
            code = self.child.stop(signal.SIGINT, DETACH_TIMEOUT_S)
            if code is None:
                raise procs.ChildError(f"{self.tracer} did not exit within {DETACH_TIMEOUT_S:g} s "
                                       "of SIGINT")
            try:
                text = self.out.read_text()
            except OSError:
                text = ""
            counts = PARSERS[self.tracer](text)
            if not counts:
                raise procs.ChildError(f"{self.tracer} exited {code} with no summary: "
                                       f"{self.child.stderr_tail()}")
            return counts
        finally:
            self.child.close()


def _traced_by(pid: int, tracer_pid: int) -> bool:
    """Every thread of pid has tracer_pid as its TracerPid (strace -f attaches them all)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^TracerPid:\s+(\d+)", status, re.M)
        if not m or int(m.group(1)) != tracer_pid:
            return False
    return True


_BUSY_CHILD = "import os\nprint('READY', flush=True)\nwhile True:\n    os.getppid()\n"


def self_test(tracer: str, work: Path) -> dict:
    """Trace a child that calls getppid() in a loop for a moment: does the tracer count it?"""
    entry = {"path": shutil.which("strace" if tracer == "strace" else "perf"), "works": False,
             "reason": None}
    if entry["path"] is None:
        entry["reason"] = f"{tracer} is not installed (no {tracer} on PATH)"
        return entry
    busy = procs.Child("tracer self-test", [sys.executable, "-c", _BUSY_CHILD])
    try:
        busy.read_ready(10.0)
        trace = Trace(tracer, busy.pid, work / f"selftest-{tracer}.txt")
        try:
            trace.wait_attached(5.0)
            time.sleep(0.2)
        finally:
            counts = safe_stop(trace)
        calls = (counts or {}).get("getppid", {}).get("calls", 0)
        entry["works"] = calls > 0
        entry["getppid_calls"] = calls
        if not entry["works"]:
            entry["reason"] = (f"{tracer} attached but counted no getppid calls of a busy child "
                               f"({'no summary' if not counts else 'saw ' + ', '.join(sorted(counts))})")
    except procs.ChildError as e:
        entry["reason"] = f"{tracer} does not work here: {e}"
    finally:
        busy.close()
    return entry


def safe_stop(trace: Trace) -> dict | None:
    """trace.stop(), or None when the tracer misbehaved (a cleanup path)."""
    try:
        return trace.stop()
    except procs.ChildError:
        return None


def detect_tracer(work: Path, want: str = "auto") -> dict:
    """{"tracer": name or None, "reason": why none, "tried": {name: self-test}}."""
    order = TRACER_ORDER if want == "auto" else (want,)
    tried = {}
    for name in order:
        tried[name] = self_test(name, work)
        if tried[name]["works"]:
            return {"tracer": name, "reason": None, "tried": tried, "wanted": want}
    reason = "; ".join(t["reason"] for t in tried.values())
    return {"tracer": None, "reason": f"no working tracer: {reason} "
                                      "(install strace, or perf with kernel syscall tracepoints, "
                                      "and run with permission to trace)",
            "tried": tried, "wanted": want}
