"""The sweep-point figures (points.csv scan, msgsize): medians with CI bands vs one swept variable."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from bench.analysis import stats as an
from bench.report.plots.common import _axes, _fd_setsize_line, _legend, _lines, _log_if_decades, _min, _no_data


def _points_figure(df, ax, experiment, y, ylabel, title, *, x="connections", xlabel=None,
                   fits=None, unit="", second: tuple[str, str] | None = None) -> Axes:
    ax = _axes(ax)
    rows = an.experiment(an.classify(df), experiment)
    rows = rows[~rows["failed"]]
    if rows.empty:
        return _no_data(ax, f"{experiment} points")
    coverage = _lines(ax, rows, x, y, fits=fits, unit=unit)
    extra = []
    if second:
        y2, style_label = second
        cov2 = _lines(ax, rows, x, y2, linestyle="--", with_label=False)
        coverage = _min(coverage, cov2)
        extra.append((Line2D([], [], color="black", lw=1.2), style_label.split("|")[0]))
        extra.append((Line2D([], [], color="black", lw=1.2, ls="--"), style_label.split("|")[1]))
    values = rows[[y] + ([second[0]] if second else [])]
    _log_if_decades(ax, "x", rows[x])
    _log_if_decades(ax, "y", values)
    if x == "connections":
        _fd_setsize_line(ax, rows[x])
    ax.set_xlabel(xlabel or "total connections = registered descriptors (count)")
    ax.set_ylabel(ylabel)
    actives = sorted(pd.to_numeric(rows["active"], errors="coerce").dropna().unique()) if "active" in rows else []
    ax.set_title(title.replace("{active}", "/".join(f"{a:g}" for a in actives) or "?"), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, rows, coverage, extra, y_cpu=y)
    return ax


def plot_scan_wait(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv scan: the servers' own time per wait call vs total connections, with fits (C3, C7)."""
    fits = an.scan_fits(df) if not df.empty else None
    return _points_figure(df, ax, "scan", "wait_ns_per_call",
                          "wall time in one wait call, sleep included (ns)",
                          "Servers' wait-call time, {active} active, idle connections growing",
                          fits=fits, unit="ns/conn")


def plot_scan_throughput(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv scan: throughput vs total connections at a fixed active count (C3)."""
    return _points_figure(df, ax, "scan", "throughput_msgs_s", "throughput (messages/s)",
                          "Throughput, {active} active, idle connections growing")


def plot_scan_latency(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv scan: p50 (solid) and p99 (dashed) latency vs total connections."""
    return _points_figure(df, ax, "scan", "p50_us", "round-trip latency (µs)",
                          "Latency, {active} active, idle connections growing",
                          second=("p99_us", "p50|p99"))


def plot_scan_cpu(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv scan: server CPU per message, user (solid) and system (dashed) time."""
    return _points_figure(df, ax, "scan", "server_cpu_user_us_per_msg", "server CPU per message (µs)",
                          "Server CPU per message, {active} active, idle connections growing",
                          second=("server_cpu_sys_us_per_msg", "user time|system time"))


def plot_capacity(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv: server capacity per core derived as 10⁶ / (server CPU µs per message) from the
    unsaturated fixed-rate points (scan-rate), one line per mechanism, beside the closed loop's
    measured throughput (scan, dashed, hollow where the load generator saturated)."""
    ax = _axes(ax)
    points = an.classify(df) if df is not None and not df.empty else pd.DataFrame()
    fixed = an.experiment(points, "scan-rate") if len(points) else points
    closed = an.experiment(points, "scan") if len(points) else points
    fixed = fixed[fixed["cpu_usable"]].copy() if len(fixed) else fixed
    closed = closed[~closed["failed"]] if len(closed) else closed
    if fixed.empty and closed.empty:
        return _no_data(ax, "scan-rate or scan points")
    coverage = math.nan
    if len(fixed):
        fixed["capacity_msgs_s"] = 1e6 / pd.to_numeric(fixed["server_cpu_us_per_msg"], errors="coerce")
        coverage = _lines(ax, fixed, "connections", "capacity_msgs_s")
    if len(closed):
        coverage = _min(coverage, _lines(ax, closed, "connections", "throughput_msgs_s", linestyle="--",
                                         with_label=fixed.empty))
    both = pd.concat([fixed.get("capacity_msgs_s", pd.Series(dtype=float)),
                      pd.to_numeric(closed.get("throughput_msgs_s", pd.Series(dtype=float)), errors="coerce")])
    _log_if_decades(ax, "x", pd.concat([fixed.get("connections", pd.Series(dtype=float)),
                                        closed.get("connections", pd.Series(dtype=float))]))
    _log_if_decades(ax, "y", both)
    ax.set_xlabel("total connections = registered descriptors (count)")
    ax.set_ylabel("messages per second per server core (msg/s)")
    ax.set_title("Capacity: derived from CPU per message (solid) vs measured closed loop (dashed)",
                 fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, pd.concat([fixed, closed]), coverage,
            [(Line2D([], [], color="black", lw=1.2), "solid: 10⁶ / CPU µs per message, derived from CPU "
                                                     "per message (scan-rate, server unsaturated)"),
             (Line2D([], [], color="black", lw=1.2, ls="--"), "dashed: measured closed-loop throughput (scan)")])
    return ax


def plot_msgsize(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv msgsize: throughput vs message size at a fixed active count."""
    return _points_figure(df, ax, "msgsize", "throughput_msgs_s", "throughput (messages/s)",
                          "Message size effect, {active} active", x="msg_size", xlabel="message size (bytes)")
