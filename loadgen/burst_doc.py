"""The burst mode's JSON document: the load generator's format 1 (loadgen/run.py) plus `bursts`.

`mode` "bursts"; `bursts`: {count, size, warmup, completed, drain_us (p50,
p90, p99, p999, max, mean), drain_hdr, write_us and stop_us ({p50, max}:
writing one burst, SIGSTOP until stopped)}. `saturated` is always false:
here the load generator's speed sets no measure. `latency_us` is each
message's time from SIGCONT to its verified echo; `timeline` is empty.
"""

from __future__ import annotations

import os
from array import array

from servers.sysutil import utc_now

from . import latency

FORMAT = 1


def document(run, started: str, window: dict | None, failure: str | None) -> dict:
    """The burst mode's JSON document from a finished `Bursts` run (see loadgen/burst.py)."""
    spec = run.spec
    hist = latency.new_histogram()
    latency.record_ns(hist, run.lat)
    drain = latency.new_histogram()
    latency.record_ns(drain, run.drain)
    w = window or {"start": None, "end": None, "tx": 0, "rx": 0, "user_s": 0.0, "sys_s": 0.0}
    window_s = (w["end"] - w["start"]) if window else 0.0
    messages = spec.bursts * spec.burst_size if window else 0
    per_s = (lambda x: round(x / window_s, 3) if window_s > 0 else None)
    echoing = sum(1 for c in run.conns if c.echoed)
    open_ = len(run.conns) if failure is None else 0
    return {
        "format": FORMAT, "mode": "bursts",
        "target": f"{spec.host}:{spec.port}", "config": spec.to_config(),
        "started_at": started, "ended_at": utc_now("milliseconds"),
        "window_s": round(window_s, 6),
        "window_start_monotonic_s": w["start"], "window_end_monotonic_s": w["end"],
        "signals": run.signals,
        "messages": messages, "bytes_sent": w["tx"], "bytes_received": w["rx"],
        "bytes_sent_total": run.tx, "bytes_received_total": run.rx,
        "throughput_msgs_s": per_s(messages),
        "latency_us": latency.summary(hist), "latency_samples": hist.get_total_count(),
        "latency_hdr": latency.encode(hist),
        "rate": {"target": None, "arrivals": None, "achieved": per_s(messages),
                 "written": per_s(messages), "scheduled": None},
        "connections": {"requested": spec.connections, "established": len(run.conns),
                        "active": spec.burst_size, "idle": spec.connections - spec.burst_size,
                        "active_established": min(spec.burst_size, len(run.conns)),
                        "idle_established": max(0, len(run.conns) - spec.burst_size),
                        "idle_open_at_end": max(0, open_ - spec.burst_size),
                        "active_open_at_end": min(open_, spec.burst_size),
                        "echoing": echoing, "retries": 0},
        "connect_s": round(run.connect_s, 6),
        "errors": dict(run.errors), "corrupt": run.errors["corrupt"],
        "unanswered_msgs": sum(1 for c in run.conns if c.expect is not None),
        "backlog_overflow_msgs": 0,
        "workers": [{"index": 0, "pid": os.getpid(), "cpu": spec.cpu,
                     "connections": spec.connections, "established": len(run.conns),
                     "messages": messages, "cpu_user_s": round(w["user_s"], 6),
                     "cpu_sys_s": round(w["sys_s"], 6),
                     "cpu_util": round((w["user_s"] + w["sys_s"]) / window_s, 4)
                     if window_s > 0 else None,
                     "window_s": round(window_s, 6), "measured": window is not None}],
        "saturated": False,
        "failed": failure is not None, "failure": failure,
        "timeline": [],
        "bursts": {"count": spec.bursts, "size": spec.burst_size,
                   "warmup": spec.warmup_bursts, "completed": len(run.stop_ns),
                   "drain_us": latency.summary(drain), "drain_hdr": latency.encode(drain),
                   "write_us": _us(run.write_ns), "stop_us": _us(run.stop_ns)},
    }


def _us(values_ns: array) -> dict:
    """{p50, max} in µs of a few nanosecond durations; None without any."""
    if not values_ns:
        return {"p50": None, "max": None}
    s = sorted(values_ns)
    return {"p50": round(s[len(s) // 2] / 1000, 3), "max": round(s[-1] / 1000, 3)}
