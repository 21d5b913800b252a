"""The ready experiment's figures (points.csv ready): cost against the measured ready fraction.

One line per mechanism, its median over repetitions with the CI band; x
is the measured ready fraction (events per wait call / connections), or
K/N for the references that have no wait call of ours (threads, asyncio,
uvloop), drawn dashed and labelled so.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from bench.analysis import stats as an
from bench.report.plots.common import _axes, _legend, _min, _no_data, color, label, mechanisms_in

MAXEVENTS = 1024           # servers/epoll_loop.py: epoll returns at most this many per call


def _ready_agg(df: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Usable ready rows with K > 0, aggregated per (mechanism, N, K); x = measured ready fraction."""
    rows = an.experiment(an.classify(df), "ready")
    rows = rows[rows["usable"]]
    if rows.empty:
        return pd.DataFrame()
    a = an.aggregate(rows, measures=[measure, "ready_fraction"],
                     by=["mechanism", "connections", "active"])
    for c in ("connections", "active"):
        a[c] = pd.to_numeric(a[c], errors="coerce")
    a = a[(a["n"] > 0) & (a["active"] > 0)].copy()
    a["nominal"] = a["ready_fraction"].isna()
    a["x"] = a["ready_fraction"].fillna(a["active"] / a["connections"])
    return a.sort_values(["mechanism", "connections", "active"])


def _draw(ax: Axes, a: pd.DataFrame, x: str, y: str, *, dashed_n=None) -> float:
    coverage = math.nan
    for mech in mechanisms_in(a):
        for n, g in a[a["mechanism"] == mech].groupby("connections"):
            nominal = bool(g["nominal"].all())
            ls = ":" if nominal else "--" if dashed_n is not None and n == dashed_n else "-"
            name = label(mech) + (" (x = K/N: no wait counter)" if nominal else "")
            if dashed_n is not None and n == dashed_n:
                name = None                  # the second N shares the mechanism's legend entry
            ax.plot(g[x], g[y], ls=ls, marker="o", ms=3.5, lw=1.5, color=color(mech), label=name)
            band = g[g[f"{y}_lo"].notna()]
            if len(band):
                ax.fill_between(band[x], band[f"{y}_lo"], band[f"{y}_hi"], color=color(mech),
                                alpha=0.15, lw=0)
                coverage = _min(coverage, band["coverage"].min())
    return coverage


def _cpu_at(df: pd.DataFrame, ax: Axes | None, largest: bool) -> Axes:
    ax = _axes(ax)
    a = _ready_agg(df, "server_cpu_us_per_msg")
    if a.empty:
        return _no_data(ax, "ready points")
    n = a["connections"].max() if largest else a["connections"].min()
    a = a[a["connections"] == n]
    coverage = _draw(ax, a, "x", "server_cpu_us_per_msg")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured ready fraction (events per wait call / connections)")
    ax.set_ylabel("server CPU per message, user + system (µs)")
    ax.set_title(f"Server CPU per message vs ready fraction, N = {n:,.0f}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, a.assign(saturated=False, noisy=False), coverage)
    return ax


def plot_ready_cpu(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv ready: server CPU per message vs measured ready fraction, smallest N (C7, C3)."""
    return _cpu_at(df, ax, largest=False)


def plot_ready_cpu_large_n(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv ready: the same at the largest N of the run (select cannot serve it)."""
    return _cpu_at(df, ax, largest=True)


def _by_k(df, ax, y, ylabel, title, ideal: bool) -> Axes:
    ax = _axes(ax)
    a = _ready_agg(df, y)
    if a.empty or a[y].notna().sum() == 0:
        return _no_data(ax, "ready points")
    a = a[a[y].notna()]
    ns = sorted(a["connections"].unique())
    coverage = _draw(ax, a, "active", y, dashed_n=ns[-1] if len(ns) > 1 else None)
    extra = []
    if len(ns) > 1:
        extra = [(Line2D([], [], color="black", lw=1.5), f"N = {ns[0]:,.0f}"),
                 (Line2D([], [], color="black", lw=1.5, ls="--"), f"N = {ns[-1]:,.0f}")]
    if ideal:
        ks = sorted(a["active"].unique())
        ax.plot(ks, ks, color="grey", lw=0.8, ls=":")
        extra.append((Line2D([], [], color="grey", lw=0.8, ls=":"), "K (the whole burst in one call)"))
        if max(ks) > MAXEVENTS:
            ax.axhline(MAXEVENTS, color="grey", lw=0.8, ls="--")
            extra.append((Line2D([], [], color="grey", lw=0.8, ls="--"), "epoll's MAXEVENTS"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("burst size K (connections written per burst)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, a.assign(saturated=False, noisy=False), coverage, extra)
    return ax


def plot_ready_events(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv ready: events per wait call vs burst size (follows K up to MAXEVENTS)."""
    return _by_k(df, ax, "events_per_call", "events per wait call (count)",
                 "Events per wait call vs burst size", ideal=True)


def plot_ready_drain(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv ready: drain time per burst (SIGCONT to last echo verified, median) vs K."""
    return _by_k(df, ax, "drain_p50_us", "drain time per burst, median (µs)",
                 "Drain time per burst vs burst size", ideal=False)
