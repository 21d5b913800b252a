"""What every figure shares: one colour and label per mechanism, the data selections, the drawing helpers."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import matplotlib
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.analysis import stats as an
from bench.rundir.schema import MECHANISMS, REFERENCES
from servers.sysutil import FD_SETSIZE

matplotlib.rcParams["svg.hashsalt"] = "iomux-bench"   # same figure, same SVG bytes

# one colour per mechanism, in every figure (tab10 order)
COLORS = {
    "select": "#1f77b4", "poll": "#ff7f0e", "epoll": "#2ca02c", "epoll-et": "#d62728",
    "io_uring": "#17becf", "epoll-toggle": "#9467bd", "threads": "#8c564b", "asyncio": "#e377c2",
    "uvloop": "#7f7f7f",
}
_SPARE = ["#bcbd22", "#9edae5", "#393b79", "#637939"]
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


def _micro(ready: str, mode: str = "wait") -> Selection:
    return Selection("micro", lambda df: an.micro_wait(df, ready, mode=mode))


def _nonempty(table: str, col: str) -> Selection:
    def rows_with_values(df):
        if df is None or df.empty or col not in df:
            return pd.DataFrame()
        return df[pd.to_numeric(df[col], errors="coerce").notna()]
    return Selection(table, rows_with_values)


# ---------------------------------------------------------------- drawing helpers

def _lines(ax: Axes, rows: pd.DataFrame, x: str, y: str, *, linestyle="-", with_label=True,
           fits: pd.DataFrame | None = None, unit: str = "") -> float:
    """Median line with CI band per mechanism, hollow flagged repetitions, optional fit lines.

    For a CPU measure, repetitions whose server was saturated (>= 90% of its
    core) are left out of the line and drawn as crosses. Returns the smallest
    CI coverage drawn (NaN if no band).
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
        hot = server_saturated_rows(rows, y)
        hot = hot[hot["mechanism"] == mech]
        if len(hot):
            ax.scatter(hot[x], hot[y], s=36, marker="x", color=c, linewidths=1.2, zorder=3)
        if f:
            xs = np.linspace(f["x_min"], f["x_max"], 200)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=c, lw=0.9, ls=":", alpha=0.9)
    return coverage


def server_saturated_rows(rows: pd.DataFrame, y: str) -> pd.DataFrame:
    """Usable rows of a CPU measure whose server was at >= 90% of its core (none for other measures)."""
    if y not in an.CPU_MEASURES or "server_saturated" not in rows:
        return rows.iloc[0:0]
    return rows[rows["usable"] & rows["server_saturated"]]


def _min(a: float, b: float) -> float:
    """The smaller of two numbers, ignoring NaN."""
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _legend(ax: Axes, rows: pd.DataFrame, coverage: float, extra: list | None = None,
            y_cpu: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if not math.isnan(coverage):
        handles.append(Patch(color="grey", alpha=0.25))
        labels.append(f"band: CI of the median ({coverage:.0%} coverage)")
    if {"saturated", "noisy"} <= set(rows.columns) and (rows["saturated"] | rows["noisy"]).any():
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="grey"))
        labels.append("hollow: load generator saturated or noisy, not used")
    if y_cpu is not None and len(server_saturated_rows(rows, y_cpu)):
        handles.append(Line2D([], [], marker="x", ls="", color="grey"))
        labels.append("×: server ≥ 90% of its core, not used for CPU")
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
