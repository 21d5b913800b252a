"""C10's figures: the thread-per-connection server next to epoll, CPU per message and memory per connection."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from bench.analysis import stats as an
from bench.report.plots.common import (_axes, _legend, _lines, _log_if_decades, _no_data, color, label,
                                       mechanisms_in)

PAIR = ("epoll", "threads")


def threads_cpu_rows(df: pd.DataFrame | None) -> pd.DataFrame:
    """scan-rate rows of epoll and threads, when threads took part (failed rows dropped)."""
    if df is None or df.empty:
        return pd.DataFrame()
    rows = an.experiment(an.classify(df), "scan-rate")
    rows = rows[rows["mechanism"].isin(PAIR) & ~rows["failed"]]
    return rows if (rows["mechanism"] == "threads").any() else pd.DataFrame()


def threads_memory_rows(df: pd.DataFrame | None) -> pd.DataFrame:
    """memory.csv rows of epoll and threads with bytes per connection in total (RSS + kernel + threads)."""
    if df is None or df.empty or "per_conn_thread_bytes" not in df:
        return pd.DataFrame()
    m = df[df["mechanism"].isin(PAIR)].copy()
    for c in ("connections", "per_conn_rss_bytes", "per_conn_kernel_bytes", "per_conn_thread_bytes"):
        m[c] = pd.to_numeric(m[c], errors="coerce")
    m = m[m["per_conn_kernel_bytes"].notna()]
    if not (m["mechanism"] == "threads").any():
        return pd.DataFrame()
    m["per_conn_total_bytes"] = m[["per_conn_rss_bytes", "per_conn_kernel_bytes",
                                   "per_conn_thread_bytes"]].fillna(0).sum(axis=1)
    return m


def plot_threads_cpu(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv scan-rate: server CPU per message vs connections, threads vs epoll (C10)."""
    ax = _axes(ax)
    rows = threads_cpu_rows(df)
    if rows.empty:
        return _no_data(ax, "threads points in scan-rate")
    coverage = _lines(ax, rows, "connections", "server_cpu_us_per_msg")
    _log_if_decades(ax, "x", rows["connections"])
    ax.set_xlabel("connections held, one thread each for threads (count)")
    ax.set_ylabel("server CPU per message (µs)")
    ax.set_title("Thread per connection vs epoll, fixed rate, one server CPU", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, rows, coverage)
    return ax


def plot_threads_memory(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """memory.csv: bytes per connection (solid: all; dashed: threads' kernel stacks and tasks), threads vs epoll (C10)."""
    ax = _axes(ax)
    rows = threads_memory_rows(df)
    if rows.empty:
        return _no_data(ax, "threads rows in memory.csv")
    for mech in mechanisms_in(rows):
        g = rows[rows["mechanism"] == mech].groupby("connections").median(numeric_only=True).reset_index()
        ax.plot(g["connections"], g["per_conn_total_bytes"], marker="o", ms=4, lw=1.8, color=color(mech),
                label=label(mech))
        ax.plot(g["connections"], g["per_conn_thread_bytes"].clip(lower=0), marker="s", ms=3, lw=1.2,
                ls="--", color=color(mech))
    _log_if_decades(ax, "x", rows["connections"])
    ax.set_xlabel("idle connections held (count)")
    ax.set_ylabel("memory per connection (bytes)")
    ax.set_title("Memory per connection: thread per connection vs epoll", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, rows, math.nan, [(Line2D([], [], color="grey"), "solid: RSS + socket caches + threads"),
                                 (Line2D([], [], color="grey", ls="--"), "dashed: kernel stacks and tasks")])
    return ax
