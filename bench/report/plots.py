"""The report's figures: one plot_<name>(df, ax=None) -> Axes each, saved by save_all.

Every figure follows the same conventions, so a reader learns them once:
one fixed colour per mechanism (references included, labelled "(reference)"),
units on every axis, log axes where the values span decades, the median over
repetitions as a line with its CI as a band (bench.analysis.stats), saturated or
noisy repetitions drawn as hollow markers and left out of lines and fits.

`df` is the run's table the figure reads (points, micro, syscalls or memory,
see FIGURES); a figure whose data are absent draws a "no data" note.
save_all draws on matplotlib Figures directly (Agg canvas, no pyplot state),
so it is safe to call from servers, tests and notebooks alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.analysis import stats as an
from bench.rundir.schema import MECHANISMS, REFERENCES
from servers.sysutil import FD_SETSIZE

matplotlib.rcParams["svg.hashsalt"] = "iomux-bench"   # same figure, same SVG bytes

MIN_CALLS_PER_MSG = 0.001      # syscalls figure: rarer calls are not part of the loop

# one colour per mechanism, in every figure (tab10 order)
COLORS = {
    "select": "#1f77b4", "poll": "#ff7f0e", "epoll": "#2ca02c", "epoll-et": "#d62728",
    "epoll-toggle": "#9467bd", "threads": "#8c564b", "asyncio": "#e377c2", "uvloop": "#7f7f7f",
}
_SPARE = ["#bcbd22", "#17becf", "#393b79", "#637939"]
ORDER = list(MECHANISMS) + list(REFERENCES)


def color(mechanism: str) -> str:
    """The mechanism's colour; unknown names get a spare colour, stable by name."""
    return COLORS.get(mechanism) or _SPARE[sum(map(ord, mechanism)) % len(_SPARE)]


def label(mechanism: str) -> str:
    return f"{mechanism} (reference)" if mechanism in REFERENCES else mechanism


def mechanisms_in(df: pd.DataFrame) -> list[str]:
    """The mechanisms present in df: the servers, then the references, then any other."""
    present = list(dict.fromkeys(df["mechanism"].astype(str))) if "mechanism" in df else []
    return [m for m in ORDER if m in present] + sorted(m for m in present if m not in ORDER)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt   # only for interactive use (the notebook)
    return plt.subplots(figsize=(6.4, 4.2))[1]


def _no_data(ax: Axes, what: str) -> Axes:
    ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _log_if_decades(ax: Axes, axis: str, values) -> None:
    """Log scale when the positive values span more than ~1.5 decades."""
    v = pd.to_numeric(pd.Series(np.ravel(values)), errors="coerce").dropna()
    v = v[v > 0]
    if len(v) and v.max() / v.min() >= 30:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


# ---------------------------------------------------------------- selections

class Selection(NamedTuple):
    table: str                                    # attribute of bench.rundir.store.Run
    select: Callable[[pd.DataFrame], pd.DataFrame]


def _exp(name: str) -> Selection:
    return Selection("points", lambda df: an.experiment(an.classify(df), name))


def _micro(ready: str) -> Selection:
    return Selection("micro", lambda df: an.micro_wait(df, ready))


def _nonempty(table: str, col: str) -> Selection:
    def select(df):
        if df is None or df.empty or col not in df:
            return pd.DataFrame()
        return df[pd.to_numeric(df[col], errors="coerce").notna()]
    return Selection(table, select)


# ---------------------------------------------------------------- drawing helpers

def _lines(ax: Axes, rows: pd.DataFrame, x: str, y: str, *, linestyle="-", with_label=True,
           fits: pd.DataFrame | None = None, unit: str = "") -> float:
    """Median line with CI band per mechanism, hollow flagged repetitions, optional fit lines.

    Returns the smallest CI coverage drawn (NaN if no band).
    """
    agg = an.aggregate(rows, measures=[y], by=["mechanism", x])
    coverage = math.nan
    for mech in mechanisms_in(rows):
        c = color(mech)
        a = agg[(agg["mechanism"] == mech) & (agg["n"] > 0)].sort_values(x)
        lw = 1.2 if mech in REFERENCES else 1.8
        marker = "s" if mech in REFERENCES else "o"
        name = label(mech) if with_label else None
        f = an.fit_row(fits, mech) if fits is not None else None
        if f and name:
            name += f": {f['slope']:.3g} {unit}, R² {f['r2']:.2f}"
        # a mechanism with only hollow points still gets its legend entry
        ax.plot(a[x], a[y], linestyle=linestyle, marker=marker, ms=4, lw=lw, color=c, label=name)
        band = a[a[f"{y}_lo"].notna()]
        if len(band):
            ax.fill_between(band[x], band[f"{y}_lo"], band[f"{y}_hi"], color=c, alpha=0.15, lw=0)
            coverage = _min(coverage, band["coverage"].min())
        bad = rows[(rows["mechanism"] == mech) & (rows["saturated"] | rows["noisy"])]
        if len(bad):
            ax.scatter(bad[x], bad[y], s=30, facecolors="none", edgecolors=c, linewidths=1.2, zorder=3)
        if f:
            xs = np.linspace(f["x_min"], f["x_max"], 200)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=c, lw=0.9, ls=":", alpha=0.9)
    return coverage


def _min(a: float, b: float) -> float:
    """The smaller of two numbers, ignoring NaN."""
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _legend(ax: Axes, rows: pd.DataFrame, coverage: float, extra: list | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if not math.isnan(coverage):
        handles.append(Patch(color="grey", alpha=0.25))
        labels.append(f"band: CI of the median ({coverage:.0%} coverage)")
    if {"saturated", "noisy"} <= set(rows.columns) and (rows["saturated"] | rows["noisy"]).any():
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="grey"))
        labels.append("hollow: saturated/noisy, not used")
    for h, lab in extra or []:
        handles.append(h)
        labels.append(lab)
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="best", frameon=False)


def _fd_setsize_line(ax: Axes, xs) -> None:
    xs = pd.to_numeric(pd.Series(np.ravel(xs)), errors="coerce").dropna()
    if len(xs) and xs.min() < FD_SETSIZE < xs.max():
        ax.axvline(FD_SETSIZE, color="grey", lw=0.8, ls="--")
        ax.annotate("FD_SETSIZE", (FD_SETSIZE, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -10), textcoords="offset points", fontsize=7, color="grey")


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
    _legend(ax, rows, coverage, extra)
    return ax


def _micro_figure(df, ax, ready: str, title: str) -> Axes:
    ax = _axes(ax)
    rows = an.micro_wait(df, ready) if df is not None else pd.DataFrame()
    if rows.empty:
        return _no_data(ax, "micro-benchmark rows")
    fits = an.micro_fits(df, ready)
    for mech in mechanisms_in(rows):
        g = rows[rows["mechanism"] == mech].groupby("registered").median(numeric_only=True).reset_index()
        c = color(mech)
        f = an.fit_row(fits, mech)
        name = label(mech) + (f": {f['slope']:.3g} ns/fd, R² {f['r2']:.2f}" if f else "")
        ax.plot(g["registered"], g["ns_median"], marker="o", ms=4, lw=1.8, color=c, label=name)
        ax.fill_between(g["registered"], g["ns_p10"], g["ns_p90"], color=c, alpha=0.15, lw=0)
        if f:
            xs = np.geomspace(max(f["x_min"], 1), f["x_max"], 200)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=c, lw=0.9, ls=":")
    _log_if_decades(ax, "x", rows["registered"])
    _log_if_decades(ax, "y", rows[["ns_p10", "ns_median", "ns_p90"]])
    _fd_setsize_line(ax, rows["registered"])
    ax.set_xlabel("registered descriptors, socketpairs (count)")
    ax.set_ylabel("one wait call, timeout 0 (ns)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, rows, math.nan, [(Patch(color="grey", alpha=0.25), "band: p10–p90 of the samples"),
                                 (Line2D([], [], color="grey", ls=":"), "dotted: linear fit")])
    return ax


# ---------------------------------------------------------------- the figures

def plot_micro_wait_1_ready(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv: wait-call cost vs registered descriptors with 1 ready, fitted lines (C2, C3, C7)."""
    return _micro_figure(df, ax, "1", "Wait-call cost, 1 descriptor ready")


def plot_micro_wait_all_ready(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """micro.csv: wait-call cost vs registered descriptors, all ready, fitted lines (C6)."""
    return _micro_figure(df, ax, "all", "Wait-call cost, every descriptor ready")


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


def plot_activity_throughput(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv activity: throughput vs active ratio at fixed connections (C7)."""
    return _points_figure(df, ax, "activity", "throughput_msgs_s", "throughput (messages/s)",
                          "Throughput vs share of active connections", x="active_ratio",
                          xlabel="active ratio (active / total connections)")


def plot_activity_cpu(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv activity: server CPU per message vs active ratio (C7)."""
    return _points_figure(df, ax, "activity", "server_cpu_us_per_msg", "server CPU per message (µs)",
                          "Server CPU per message vs share of active connections", x="active_ratio",
                          xlabel="active ratio (active / total connections)")


def plot_msgsize(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv msgsize: throughput vs message size at a fixed active count."""
    return _points_figure(df, ax, "msgsize", "throughput_msgs_s", "throughput (messages/s)",
                          "Message size effect, {active} active", x="msg_size", xlabel="message size (bytes)")


def plot_events_per_call(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """points.csv activity: events returned per wait call vs active ratio (C5: epoll vs epoll-et)."""
    return _points_figure(df, ax, "activity", "events_per_call", "events per wait call (count)",
                          "Events per wait call vs share of active connections", x="active_ratio",
                          xlabel="active ratio (active / total connections)")


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
    """memory.csv: kernel and process memory per connection at the largest N, per mechanism (C8)."""
    ax = _axes(ax)
    rows = _nonempty("memory", "per_conn_kernel_bytes").select(df)
    if rows.empty:
        return _no_data(ax, "memory measurements")
    rows = rows.copy()
    for c in ("connections", "per_conn_kernel_bytes", "per_conn_rss_bytes"):
        rows[c] = pd.to_numeric(rows[c], errors="coerce")
    mechs = mechanisms_in(rows)
    for i, mech in enumerate(mechs):
        g = rows[rows["mechanism"] == mech]
        top = g[g["connections"] == g["connections"].max()]
        kernel = top["per_conn_kernel_bytes"].median()
        rss = top["per_conn_rss_bytes"].fillna(0).median()
        ax.bar(i, kernel, color=color(mech))
        ax.bar(i, rss, bottom=kernel, color=color(mech), alpha=0.45, hatch="//")
        ax.annotate(f"{kernel + rss:,.0f} B\n@{top['connections'].max():,.0f}", (i, kernel + rss),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)      # room for the labels above the bars
    ax.set_xticks(range(len(mechs)), [label(m) for m in mechs], fontsize=8)
    ax.set_ylabel("memory per connection (bytes)")
    ax.set_title("Memory per connection: kernel (solid) + process RSS (hatched)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    return ax


class FigureSpec(NamedTuple):
    plot: Callable[..., Axes]
    data: Selection


FIGURES: dict[str, FigureSpec] = {
    "micro_wait_1_ready": FigureSpec(plot_micro_wait_1_ready, _micro("1")),
    "micro_wait_all_ready": FigureSpec(plot_micro_wait_all_ready, _micro("all")),
    "scan_wait": FigureSpec(plot_scan_wait, _exp("scan")),
    "scan_throughput": FigureSpec(plot_scan_throughput, _exp("scan")),
    "scan_latency": FigureSpec(plot_scan_latency, _exp("scan")),
    "scan_cpu": FigureSpec(plot_scan_cpu, _exp("scan")),
    "activity_throughput": FigureSpec(plot_activity_throughput, _exp("activity")),
    "activity_cpu": FigureSpec(plot_activity_cpu, _exp("activity")),
    "events_per_call": FigureSpec(plot_events_per_call, _exp("activity")),
    "fdlimit": FigureSpec(plot_fdlimit, _exp("fdlimit")),
    "msgsize": FigureSpec(plot_msgsize, _exp("msgsize")),
    "syscalls": FigureSpec(plot_syscalls, _nonempty("syscalls", "calls_per_msg")),
    "memory": FigureSpec(plot_memory, _nonempty("memory", "per_conn_kernel_bytes")),
}


def table_for(run, name: str) -> pd.DataFrame:
    """The run's table that figure `name` reads."""
    return getattr(run, FIGURES[name].data.table)


def has_data(run, name: str) -> bool:
    """Whether the run holds the data figure `name` draws."""
    spec = FIGURES[name]
    df = table_for(run, name)
    return df is not None and not df.empty and not spec.data.select(df).empty


def save_all(run, out_dir: Path | str) -> list[str]:
    """Draw every figure the run has data for as out_dir/<name>.png and .svg; return the names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in FIGURES.items():
        if not has_data(run, name):
            continue
        fig = Figure(figsize=(6.4, 4.2))
        FigureCanvasAgg(fig)
        spec.plot(table_for(run, name), fig.add_subplot())
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=120)
        fig.savefig(out_dir / f"{name}.svg", metadata={"Date": None})
        written.append(name)
    return written
