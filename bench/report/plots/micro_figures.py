"""The micro-benchmark figures (micro.csv): one wait call's cost (mode wait) or one bench.c
iteration (mode drain) vs registered descriptors, with fits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.analysis import stats as an
from bench.analysis.claims.rules import shape
from bench.report.plots.common import (_axes, _fd_setsize_line, _legend, _log_if_decades, _no_data, color,
                                       label, mechanisms_in)


def _micro_figure(df, ax, ready: str, title: str, mode: str = "wait") -> Axes:
    ax = _axes(ax)
    rows = an.micro_wait(df, ready, mode=mode) if df is not None else pd.DataFrame()
    if rows.empty:
        return _no_data(ax, f"micro-benchmark rows (mode {mode})")
    fits = an.micro_fits(df, ready, mode=mode)
    extra = []
    for mech in mechanisms_in(rows):
        g = rows[rows["mechanism"] == mech].groupby("registered").median(numeric_only=True).reset_index()
        c = color(mech)
        f = an.fit_row(fits, mech)
        name = label(mech) + (f": {f['slope']:.3g} ns/fd, {shape(f).kind}" if f else "")
        ax.plot(g["registered"], g["ns_median"], marker="o", ms=4, lw=1.8, color=c, label=name)
        ax.fill_between(g["registered"], g["ns_p10"], g["ns_p90"], color=c, alpha=0.15, lw=0)
        capped = rows[(rows["mechanism"] == mech) & rows["capped"]]
        if len(capped):        # epoll returned MAXEVENTS of more ready: out of the per-event fit
            ax.scatter(capped["registered"], capped["ns_median"], s=60, facecolors="none", edgecolors=c,
                       linewidths=1.2, zorder=3)
            extra = [(Line2D([], [], marker="o", ls="", mfc="none", mec="grey", ms=8),
                      "ringed: fewer events returned than ready (MAXEVENTS), not fitted")]
        if f:
            xs = np.geomspace(max(f["x_min"], 1), f["x_max"], 200)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=c, lw=0.9, ls=":")
    _log_if_decades(ax, "x", rows["registered"])
    _log_if_decades(ax, "y", rows[["ns_p10", "ns_median", "ns_p90"]])
    _fd_setsize_line(ax, rows["registered"])
    ax.set_xlabel("registered descriptors, socketpairs (count)")
    ax.set_ylabel("one wait call, timeout 0 (ns)" if mode == "wait" else
                  "one iteration: wait (timeout 0), read each ready, write the next (ns)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, rows, math.nan, [(Patch(color="grey", alpha=0.25), "band: p10–p90 of the samples"),
                                 (Line2D([], [], color="grey", ls=":"), "dotted: linear fit")] + extra)
    return ax


def plot_micro_wait_0_ready(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv: wait-call cost vs registered descriptors with none ready, timeout 0 (C2 decides here)."""
    return _micro_figure(df, ax, "0", "Wait-call cost, nothing ready, timeout 0")


def plot_micro_wait_1_ready(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv: wait-call cost vs registered descriptors with 1 ready, fitted lines (C2, C3, C7)."""
    return _micro_figure(df, ax, "1", "Wait-call cost, 1 descriptor ready")


def plot_micro_wait_all_ready(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv: wait-call cost vs registered descriptors, all ready, fitted lines (C6)."""
    return _micro_figure(df, ax, "all", "Wait-call cost, every descriptor ready")


def plot_micro_drain_1_ready(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv mode drain (libevent bench.c): one iteration vs registered descriptors, 1 ready."""
    return _micro_figure(df, ax, "1", "bench.c drain loop, 1 descriptor ready", mode="drain")


def plot_micro_drain_all_ready(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv mode drain: one iteration with every descriptor ready, read and rewritten (C7)."""
    return _micro_figure(df, ax, "all", "bench.c drain loop, every descriptor ready", mode="drain")


def micro_split_rows(df: pd.DataFrame | None) -> pd.DataFrame:
    """micro.csv rows with 1 ready and a user/system split (C11): select, poll and epoll."""
    rows = an.micro_wait(df, "1") if df is not None else pd.DataFrame()
    if rows.empty or "user_ns_per_call" not in rows:
        return pd.DataFrame()
    return rows[rows["user_ns_per_call"].notna() & rows["mechanism"].isin(["select", "poll", "epoll"])]


def plot_micro_cpu_split(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv: CPU per wait call, user (solid) and system (dashed), vs registered descriptors (C11)."""
    ax = _axes(ax)
    rows = micro_split_rows(df)
    if rows.empty:
        return _no_data(ax, "user/system split in micro.csv")
    for mech in mechanisms_in(rows):
        g = rows[rows["mechanism"] == mech].groupby("registered").median(numeric_only=True).reset_index()
        ax.plot(g["registered"], g["user_ns_per_call"], marker="o", ms=4, lw=1.8, color=color(mech),
                label=label(mech))
        ax.plot(g["registered"], g["sys_ns_per_call"], marker="s", ms=3, lw=1.2, ls="--", color=color(mech))
    _log_if_decades(ax, "x", rows["registered"])
    _log_if_decades(ax, "y", rows[["user_ns_per_call", "sys_ns_per_call"]].where(lambda v: v > 0))
    _fd_setsize_line(ax, rows["registered"])
    ax.set_xlabel("registered descriptors, socketpairs (count)")
    ax.set_ylabel("CPU per wait call, timeout 0, 1 ready (ns)")
    ax.set_title("Who checks every socket: user vs system CPU per wait call", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, rows, math.nan, [(Line2D([], [], color="grey"), "solid: user (CPython)"),
                                 (Line2D([], [], color="grey", ls="--"), "dashed: system (kernel)")])
    return ax
