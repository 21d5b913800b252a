"""One point's raw outputs -> one tidy row of points.csv (pure functions)."""

from __future__ import annotations

from bench.rundir.schema import POINT_COLUMNS, REFERENCES, SERVER_SATURATED_SHARE

# Per-window counters the server snapshots on SIGUSR1 (start and end of the window).
# A reference server without a wait call of ours (threads, asyncio, uvloop)
# reports the wait counters as null; ctl_calls is epoll-toggle's own counter.
WINDOW_COUNTERS = ("cpu_user_s", "cpu_sys_s", "wait_calls", "wait_ns_total", "events_total",
                   "ctl_calls", "ctx_voluntary", "ctx_involuntary")
# Experiments whose point is to find where connections stop being served:
# connections the server refused by design (select past FD_SETSIZE) are their
# measure, not a failure; anything else the load generator saw still fails the point.
DROPS_ARE_MEASURED = ("fdlimit",)
# loadgen error kinds (loadgen/run.py): a connection closed after it opened ...
LOST_KINDS = ("reset", "closed_by_server", "short_read")
# ... and everything else that fails a point, whatever the experiment
NEVER_EXCUSED = ("refused", "addr_not_available", "connect_timeout", "no_fds", "connect_other",
                 "other", "timeout", "corrupt")
# ready: the start snapshot's SIGUSR1 wakes the waiting server once inside the window,
# one wait call that returns one event (the signal socket); the end snapshot is taken
# inside a wait call that has not returned yet. Removed, so a burst's calls are exact.
SNAPSHOT_WAKEUP_CALLS = 1
# Cumulative CPU seconds in the orchestrator's samples that count as machine noise.
NOISE_KEYS = ("others_s", "steal_s")


def to_row(point: dict, loadgen: dict | None, server: dict | None,
           snapshots: list[dict] | None, cpu: dict | None, error: str | None = None) -> dict:
    """The points.csv row of one point, every POINT_COLUMNS key present (None = empty cell).

    point     the Point as a dict (its axes, rep, noise threshold, refusal)
    loadgen   the load generator's JSON (window totals, latency, workers, flags)
    server    the server's final statistics (lifetime counters, e.g. rejected_fd_setsize)
    snapshots the server's SIGUSR1 lines; the first and last bracket the measured window
    cpu       {"samples": [{t, others_s, steal_s, server_s, ...}]} taken by the orchestrator
    error     what went wrong running the point, if anything

    Window measures come from differences, never lifetime totals:
    server_cpu_*_s = end - start snapshot of getrusage; server_cpu_us_per_msg
    = (user + sys) / loadgen window messages; wait_ns_per_call and
    events_per_call = their snapshot deltas / the delta of wait_calls.
    server_saturated = the server's CPU delta over the snapshots' own window
    seconds (the loadgen's window when they carry no clock) >= 90% of a core.
    ctx_switches_per_msg = the server's voluntary + involuntary context
    switches (getrusage, every thread) in the window / window messages.
    noise_cpu_pct = CPU used by other processes during the window, in % of
    one CPU (samples interpolated at the loadgen's window bounds); noisy
    when above the point's noise_threshold_pct. duration_s is the measured
    window. In fdlimit, connections the server drops are the measure
    (established/echoing), not a failure of the point.
    """
    row = dict.fromkeys(POINT_COLUMNS)
    row.update(point_id=point["id"], experiment=point["experiment"],
               mechanism=point["mechanism"], connections=point["connections"],
               active=point["active"], msg_size=point["msg_size"], rate=point["rate"],
               rep=point["rep"], reference=point["mechanism"] in REFERENCES)
    if point.get("refused"):
        row["error"] = point["refused"]
        return row
    problems = [error] if error else []

    lg = loadgen or {}
    messages = lg.get("messages")
    if lg:
        lat = lg.get("latency_us") or {}
        conns = lg.get("connections") or {}
        workers = lg.get("workers") or []
        row.update(
            throughput_msgs_s=lg.get("throughput_msgs_s"),
            p50_us=lat.get("p50"), p90_us=lat.get("p90"), p99_us=lat.get("p99"),
            p999_us=lat.get("p999"), max_us=lat.get("max"),
            loadgen_cpu_max=max((w.get("cpu_util") or 0 for w in workers), default=None),
            saturated=bool(lg.get("saturated")),
            errors=sum((lg.get("errors") or {}).values()),
            corrupt=lg.get("corrupt"),
            duration_s=lg.get("window_s"),
            established=conns.get("established"), echoing=conns.get("echoing"),
            idle_open_at_end=conns.get("idle_open_at_end"),
            rate_achieved_msgs_s=(lg.get("rate") or {}).get("achieved"),
            connect_s=lg.get("connect_s"),
        )
        if messages and workers:
            user = sum(w.get("cpu_user_s") or 0 for w in workers)
            row["loadgen_cpu_user_us_per_msg"] = _round(user / messages * 1e6)
        drops_measured = point["experiment"] in DROPS_ARE_MEASURED and \
            refused_by_design(lg, server)
        if lg.get("failed") and not drops_measured:
            problems.append(f"loadgen failed: {lg.get('failure') or 'no reason given'}")
        if lg.get("corrupt"):
            problems.append(f"{lg['corrupt']} corrupt echoes")
    if server:
        row["rejected_fd_setsize"] = server.get("rejected_fd_setsize")

    delta = window_delta(snapshots)
    if delta and point["experiment"] == "ready":
        delta = without_snapshot_wakeup(delta)
    if delta:
        row["server_cpu_user_s"] = _round(delta["cpu_user_s"])
        row["server_cpu_sys_s"] = _round(delta["cpu_sys_s"])
        row["server_saturated"] = server_saturated(delta, lg.get("window_s"))
        row["wait_calls"] = delta["wait_calls"]
        if delta["wait_calls"]:
            row["wait_ns_per_call"] = _round(delta["wait_ns_total"] / delta["wait_calls"])
            row["events_per_call"] = _round(delta["events_total"] / delta["wait_calls"])
        if messages:
            row["server_cpu_us_per_msg"] = _round(
                (delta["cpu_user_s"] + delta["cpu_sys_s"]) / messages * 1e6)
            row["server_cpu_user_us_per_msg"] = _round(delta["cpu_user_s"] / messages * 1e6)
            row["server_cpu_sys_us_per_msg"] = _round(delta["cpu_sys_s"] / messages * 1e6)
            if delta["ctl_calls"] is not None:
                row["ctl_calls_per_msg"] = _round(delta["ctl_calls"] / messages)
            if delta["ctx_voluntary"] is not None and delta["ctx_involuntary"] is not None:
                row["ctx_switches_per_msg"] = _round(
                    (delta["ctx_voluntary"] + delta["ctx_involuntary"]) / messages)
    elif lg and not problems:
        problems.append("no window snapshots from the server: server measures missing")
    if point["experiment"] == "ready":
        row.update(ready_measures(point, lg, delta))

    start, end = lg.get("window_start_monotonic_s"), lg.get("window_end_monotonic_s")
    noise = noise_cpu_pct((cpu or {}).get("samples") or [], start, end)
    if noise is not None:
        row["noise_cpu_pct"] = _round(noise, 1)
        row["noisy"] = noise > point.get("noise_threshold_pct", 10.0)

    if problems:
        row["error"] = "; ".join(problems)
    return row


def ready_measures(point: dict, loadgen: dict, delta: dict | None) -> dict:
    """The ready experiment's own columns: bursts, ready_fraction and per-burst costs.

    ready_fraction = events per wait call / connections, from the server's
    counters: a burst of K split over several calls (epoll's MAXEVENTS, or a
    server that wakes before the burst is whole) shows below K/N. The
    listener and the signal socket are registered too but never ready in a
    burst, so the denominator is the N connections. The load generator's
    speed sets none of these, so the row is never flagged saturated, and a
    burst is fixed work, not a rate the server could cap: nor server_saturated.
    """
    bursts = (loadgen.get("bursts") or {}) if loadgen else {}
    count = bursts.get("completed") or None
    drain = bursts.get("drain_us") or {}
    # nor for the server's: a burst is fixed work, not an offered rate it could cap
    out = {"saturated": False, "server_saturated": False, "bursts": bursts.get("count"),
           "drain_p50_us": drain.get("p50"), "drain_p99_us": drain.get("p99")}
    if delta and count:
        out["server_cpu_us_per_burst"] = _round((delta["cpu_user_s"] + delta["cpu_sys_s"])
                                                / count * 1e6)
        if delta["wait_calls"] is not None:
            out["wait_calls_per_burst"] = _round(delta["wait_calls"] / count)
    if delta and delta["wait_calls"] and delta["events_total"] is not None and point["connections"]:
        out["ready_fraction"] = round(delta["events_total"] / delta["wait_calls"]
                                      / point["connections"], 9)
    return out


def without_snapshot_wakeup(delta: dict) -> dict:
    """The window counters less the start snapshot's own wake-up (SNAPSHOT_WAKEUP_CALLS)."""
    out = dict(delta)
    if out["wait_calls"] is not None and out["wait_calls"] >= SNAPSHOT_WAKEUP_CALLS:
        out["wait_calls"] -= SNAPSHOT_WAKEUP_CALLS
        if out["events_total"] is not None:
            out["events_total"] -= SNAPSHOT_WAKEUP_CALLS
        if out["wait_ns_total"] is not None:      # its time is not known apart: keep the mean
            out["wait_ns_total"] *= out["wait_calls"] / (out["wait_calls"] + SNAPSHOT_WAKEUP_CALLS)
    return out


def refused_by_design(loadgen: dict, server: dict | None) -> bool:
    """True when every connection the load generator lost is one the server refused by design.

    The server's rejected_fd_setsize counts the connections select closed at
    accept; the load generator must have lost no more than those, and seen
    nothing else wrong: no connection that failed to open, no timeout, no
    corrupt echo, no worker that failed to report, no dropped backlog, and
    at least one message through.
    """
    errors = loadgen.get("errors") or {}
    lost = sum(errors.get(k) or 0 for k in LOST_KINDS)
    refused = (server or {}).get("rejected_fd_setsize") or 0
    return (bool(loadgen.get("messages")) and lost <= refused
            and not any(errors.get(k) for k in NEVER_EXCUSED) and not loadgen.get("corrupt")
            and not loadgen.get("backlog_overflow_msgs")
            and all(w.get("measured", True) for w in loadgen.get("workers") or []))


def server_saturated(delta: dict, loadgen_window_s: float | None) -> bool | None:
    """Whether the server used >= SERVER_SATURATED_SHARE of one core over the window; None unknown."""
    window_s = delta.get("window_s") or loadgen_window_s
    if not window_s or window_s <= 0:
        return None
    return (delta["cpu_user_s"] + delta["cpu_sys_s"]) / window_s >= SERVER_SATURATED_SHARE


def window_delta(snapshots: list[dict] | None) -> dict | None:
    """End minus start of the window counters, from the first and last snapshot line."""
    if not snapshots or len(snapshots) < 2:
        return None
    first, last = snapshots[0], snapshots[-1]
    number = (int, float)
    delta = {k: last[k] - first[k] if isinstance(first.get(k), number)
             and isinstance(last.get(k), number) else None for k in WINDOW_COUNTERS}
    if delta["cpu_user_s"] is None or delta["cpu_sys_s"] is None:
        return None                                   # CPU is the one counter every server has
    delta["window_s"] = last.get("monotonic_s", 0) - first.get("monotonic_s", 0)
    return delta


def noise_cpu_pct(samples: list[dict], start: float | None, end: float | None) -> float | None:
    """CPU used by other processes (and stolen by the hypervisor) in [start, end], % of one CPU.

    Each sample holds cumulative CPU seconds; `others_s` is every user-space
    process but the server, the load generator and the orchestrator.
    """
    if start is None or end is None or end <= start or len(samples) < 2:
        return None
    if samples[0]["t"] > start or samples[-1]["t"] < end:
        return None                                   # the samples do not cover the window

    def at(t: float, key: str) -> float:
        for a, b in zip(samples, samples[1:]):
            if a["t"] <= t <= b["t"]:
                if b["t"] == a["t"]:
                    return a[key]
                return a[key] + (b[key] - a[key]) * (t - a["t"]) / (b["t"] - a["t"])
        return samples[-1][key]

    others = sum(at(end, k) - at(start, k) for k in NOISE_KEYS)
    return max(0.0, others) / (end - start) * 100


def _round(x: float, digits: int = 3) -> float:
    return round(x, digits)
