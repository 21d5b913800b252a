"""The resource figures: the FD_SETSIZE wall (fdlimit points), system calls and memory per connection."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.analysis import stats as an
from bench.analysis.claims.c8_memory import complete_kernel
from bench.analysis.claims.rules import ABOUT_FACTOR, CLAIMED_CONNS_PER_GB, GB
from bench.report.plots.common import (_axes, _legend, _lines, _log_if_decades, _no_data, _nonempty, color, label,
                                       mechanisms_in)
from servers.sysutil import FD_SETSIZE

MIN_CALLS_PER_MSG = 0.001      # syscalls figure: rarer calls are not part of the loop


def plot_fdlimit(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv fdlimit: connections echoing vs connections attempted; the FD_SETSIZE wall (C1, C4)."""
    ax = _axes(ax)
    rows = an.experiment(an.classify(df), "fdlimit")
    if rows.empty:
        return _no_data(ax, "fdlimit points")
    ok = rows[~rows["failed"]]
    coverage = _lines(ax, ok, "connections", "echoing") if len(ok) else math.nan
    for i, line in enumerate(ax.get_lines()):   # concentric markers: overlapping lines stay visible
        line.set(marker="o^sDvP<>"[i % 8], ms=max(9 - 1.8 * i, 3), lw=max(3 - 0.6 * i, 1))
    failed = rows[rows["failed"]]
    extra = []
    if len(failed):
        for mech in mechanisms_in(failed):
            f = failed[failed["mechanism"] == mech]
            ax.scatter(f["connections"], np.zeros(len(f)), marker="x", color=color(mech), zorder=3)
        extra.append((Line2D([], [], marker="x", ls="", color="grey"), "x: point not run (error)"))
    xs = pd.to_numeric(rows["connections"], errors="coerce")
    ax.plot([xs.min(), xs.max()], [xs.min(), xs.max()], color="grey", lw=0.8, ls=":")
    extra.append((Line2D([], [], color="grey", lw=0.8, ls=":"), "every connection echoing"))
    ax.axhline(FD_SETSIZE, color="grey", lw=0.8, ls="--")
    extra.append((Line2D([], [], color="grey", lw=0.8, ls="--"), f"FD_SETSIZE = {FD_SETSIZE}"))
    ax.set_xlabel("connections attempted (count)")
    ax.set_ylabel("connections echoing (count)")
    ax.set_title("The FD_SETSIZE wall", fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend(ax, rows, coverage, extra)
    return ax


def plot_syscalls(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """syscalls.csv: calls per message of the busiest syscalls, per mechanism (C6)."""
    ax = _axes(ax)
    rows = _nonempty("syscalls", "calls_per_msg").select(df)
    if rows.empty:
        return _no_data(ax, "syscall profile")
    rows = rows.assign(calls_per_msg=pd.to_numeric(rows["calls_per_msg"], errors="coerce"))
    table = rows.pivot_table(index="syscall", columns="mechanism", values="calls_per_msg", aggfunc="median")
    # below one call per 1000 messages is the measurement's own snapshot handler, not the loop
    table = table[table.max(axis=1) >= MIN_CALLS_PER_MSG]
    if table.empty:
        return _no_data(ax, f"syscalls at {MIN_CALLS_PER_MSG:g} per message or more")
    table = table.loc[table.max(axis=1).sort_values(ascending=False).index[:10]]
    mechs = mechanisms_in(rows)
    height = 0.8 / max(len(mechs), 1)
    ys = np.arange(len(table))
    for i, mech in enumerate(mechs):
        ax.barh(ys + i * height, table.get(mech, pd.Series(0, index=table.index)).fillna(0),
                height=height, color=color(mech), label=label(mech))
    ax.set_yticks(ys + 0.4 - height / 2, table.index)
    ax.invert_yaxis()
    _log_if_decades(ax, "x", table.values)
    ax.set_xlabel("calls per message echoed (count)")
    ax.set_title(f"System calls per message (those ≥ {MIN_CALLS_PER_MSG:g} per message)", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    return ax


def plot_memory(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """memory.csv: memory per connection at the largest N, per mechanism: every slab cache that grows
    with the connections (against the bare-socket control) plus process RSS, the four named caches
    marked, and the claim's 100k per GB (10,000 B) with its 2x band (C8)."""
    ax = _axes(ax)
    rows = _nonempty("memory", "per_conn_kernel_bytes").select(df)
    if rows.empty:
        return _no_data(ax, "memory measurements")
    rows = rows.copy()
    source = complete_kernel(rows)
    col, what = source if source else ("per_conn_kernel_bytes", "the four named caches")
    for c in ("connections", "per_conn_kernel_bytes", "per_conn_rss_bytes", col):
        rows[c] = pd.to_numeric(rows[c], errors="coerce")
    mechs = mechanisms_in(rows)
    for i, mech in enumerate(mechs):
        g = rows[rows["mechanism"] == mech]
        top = g[g["connections"] == g["connections"].max()]
        kernel = (top[col] / top["connections"] if source else top[col]).median()
        rss = top["per_conn_rss_bytes"].fillna(0).median()
        ax.bar(i, kernel, color=color(mech))
        ax.bar(i, rss, bottom=kernel, color=color(mech), alpha=0.45, hatch="//")
        ax.plot([i - 0.4, i + 0.4], [top["per_conn_kernel_bytes"].median()] * 2, color="black", lw=1, ls=":")
        ax.annotate(f"{kernel + rss:,.0f} B\n@{top['connections'].max():,.0f}", (i, kernel + rss),
                    ha="center", va="bottom", fontsize=7)
    claim_b = GB / CLAIMED_CONNS_PER_GB
    top_b = max(ax.get_ylim()[1], claim_b) * 1.15              # room for the labels above the bars
    ax.axhspan(claim_b / ABOUT_FACTOR, min(claim_b * ABOUT_FACTOR, top_b), color="grey", alpha=0.12, lw=0)
    ax.axhline(claim_b, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, top_b)
    ax.set_xticks(range(len(mechs)), [label(m) for m in mechs], fontsize=8)
    ax.set_ylabel("memory per connection (bytes)")
    ax.set_title(f"Memory per connection: kernel, {what} (solid) + RSS (hatched)", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend([Line2D([], [], color="black", lw=1, ls=":"), Line2D([], [], color="grey", lw=0.8, ls="--"),
               Patch(color="grey", alpha=0.2)],
              ["dotted: the four named caches alone", f"claim: {CLAIMED_CONNS_PER_GB:,} per GB = "
               f"{claim_b:,.0f} B", f"within {ABOUT_FACTOR:g}× of the claim"], fontsize=7, frameon=False,
              loc="upper left")
    return ax
