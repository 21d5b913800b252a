"""Statistics for a run: repetitions -> median with a 95% CI; cost -> linear fit.

Both methods are stated once, here, and used by plots, claims, report and compare.

Median CI: the exact order-statistic interval (bench.analysis.significance,
with the chance that two such intervals miss each other by accident).

Linear fit: ordinary least squares of cost on registered descriptors.
95% CI of the slope = slope ± t(0.975, n-2)·SE(slope), with t from the exact
Student-t distribution for integer degrees of freedom (Abramowitz & Stegun
26.7.3-4, inverted by bisection); R² = 1 - SS_res/SS_tot.

Rows that failed (non-empty `error`), or were measured while the load generator
was saturated or the machine noisy, never enter a median or a fit; `classify`
says which is which so the report can count them. Rows where the server used
90% or more of its core (`server_saturated`) stay for wall-time and count
measures, but never enter a CPU measure (CPU_MEASURES): their CPU per message
is the offered rate's ceiling, bent by batching.

Every fit also carries the shape of the cost (bench.analysis.shape): how
many distinct N it has, its growth exponent with a CI, and its best
two-segment fit; bench.analysis.claims.rules turns those into words.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from bench.analysis import shape
from bench.analysis.significance import (CONFIDENCE, MedianCI, ci_rank, median_ci,  # noqa: F401
                                         overlap)
from bench.analysis.tdist import t_cdf_two_sided, t_quantile  # noqa: F401  (re-exported)
from bench.rundir.schema import SERVER_SATURATED_SHARE

# a point is one cell of the sweep; its repetitions differ only in `rep`
POINT_KEYS = ["experiment", "mechanism", "connections", "active", "msg_size", "rate"]

MEASURES = [
    "throughput_msgs_s", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
    "server_cpu_us_per_msg", "server_cpu_user_us_per_msg", "server_cpu_sys_us_per_msg",
    "wait_ns_per_call", "events_per_call", "wait_calls_per_msg",
    "established", "echoing", "rejected_fd_setsize",
    # the ready experiment (bursts of K ready descriptors)
    "ready_fraction", "server_cpu_us_per_burst", "wait_calls_per_burst", "drain_p50_us",
    "drain_p99_us",
]
# measures of the server's CPU: never taken from a server_saturated row
CPU_MEASURES = ["server_cpu_us_per_msg", "server_cpu_user_us_per_msg", "server_cpu_sys_us_per_msg",
                "server_cpu_us_per_wait"]


class Fit(NamedTuple):
    slope: float
    slope_lo: float
    slope_hi: float
    intercept: float
    r2: float
    n: int
    x_min: float
    x_max: float


# ---------------------------------------------------------------- linear fit

def linear_fit(x, y, confidence: float = CONFIDENCE) -> Fit:
    """OLS fit y = intercept + slope·x, with the slope's CI and R².

    Needs at least 3 points with distinct x for a CI; with 2 the slope is
    returned with NaN bounds, with fewer everything is NaN.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    nan = math.nan
    if n < 2 or np.ptp(x) == 0:
        return Fit(nan, nan, nan, nan, nan, n, nan, nan)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    ss_res = float((resid ** 2).sum())
    ss_tot = float(((y - ym) ** 2).sum())
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else nan)
    if n < 3:
        return Fit(slope, nan, nan, intercept, r2, n, float(x.min()), float(x.max()))
    half = t_quantile(confidence, n - 2) * math.sqrt(ss_res / (n - 2) / sxx)
    return Fit(slope, slope - half, slope + half, intercept, r2, n, float(x.min()), float(x.max()))


def flatness(x, y) -> tuple[float, float, float]:
    """(cost at the smallest x, cost at the largest x, relative change).

    Each end is the median of the values at that x; the change is
    (last - first) / first, so +0.25 means 25% more at the largest N.
    """
    d = pd.DataFrame({"x": np.asarray(x, float), "y": np.asarray(y, float)}).dropna()
    if d.empty or d["x"].nunique() < 2:
        return math.nan, math.nan, math.nan
    first = float(d.loc[d["x"] == d["x"].min(), "y"].median())
    last = float(d.loc[d["x"] == d["x"].max(), "y"].median())
    change = (last - first) / first if first else math.nan
    return first, last, change


# ---------------------------------------------------------------- points.csv

def _text(s: pd.Series) -> pd.Series:
    return s.where(s.notna(), "").astype(str).str.strip()


def _truthy(s: pd.Series) -> pd.Series:
    return _text(s).str.lower().isin(["true", "1", "1.0", "yes"])


def classify(points: pd.DataFrame) -> pd.DataFrame:
    """points with boolean columns failed, saturated, noisy and usable added.

    failed: a non-empty `error` (no measures); saturated (the load generator)
    /noisy: kept, drawn hollow, never used in a median, fit or verdict; usable:
    none of these. server_saturated: the server used >= 90% of its core over
    the window (the points.csv column; derived from its CPU seconds over the
    window for runs written before the column existed); cpu_usable: usable and
    not server_saturated, the rows a CPU measure may use.
    """
    df = points.copy()
    for col in ("error", "saturated", "noisy", "server_saturated"):
        if col not in df:
            df[col] = pd.Series([None] * len(df), index=df.index, dtype=object)
    df["failed"] = _text(df["error"]) != ""
    df["saturated"] = _truthy(df["saturated"]) & ~df["failed"]
    df["noisy"] = _truthy(df["noisy"]) & ~df["failed"]
    df["usable"] = ~(df["failed"] | df["saturated"] | df["noisy"])
    recorded = _text(df["server_saturated"]) != ""
    num = lambda c: pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series(np.nan, index=df.index)
    share = (num("server_cpu_user_s") + num("server_cpu_sys_s")) / num("duration_s")
    derived = share >= SERVER_SATURATED_SHARE
    df["server_saturated"] = _truthy(df["server_saturated"]).where(recorded, derived) & ~df["failed"]
    df["cpu_usable"] = df["usable"] & ~df["server_saturated"]
    return with_derived(df)


def with_derived(points: pd.DataFrame) -> pd.DataFrame:
    """Add active_ratio, wait_calls_per_msg, server_cpu_us_per_wait and the user/system CPU per message.

    The split CPU columns are computed from server_cpu_{user,sys}_s and the
    message count (throughput × duration) where a run did not record them.
    """
    df = points.copy()
    num = lambda c: pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series(np.nan, index=df.index)
    msgs = num("throughput_msgs_s") * num("duration_s")
    msgs = msgs.where(msgs > 0)                 # ready's K = 0 control carries no message
    df["active_ratio"] = num("active") / num("connections")
    df["wait_calls_per_msg"] = num("wait_calls") / msgs
    # CPU per pass of the wait loop (one wait call and the events it returned):
    # at a fixed rate, what a per-call scan costs, whatever the batching
    df["server_cpu_us_per_wait"] = (num("server_cpu_user_s") + num("server_cpu_sys_s")) * 1e6 \
        / num("wait_calls").where(num("wait_calls") > 0)
    for part in ("user", "sys"):
        col = f"server_cpu_{part}_us_per_msg"
        derived = num(f"server_cpu_{part}_s") * 1e6 / msgs
        df[col] = num(col).fillna(derived) if col in df else derived
    if "server_cpu_us_per_msg" in df:
        df["server_cpu_us_per_msg"] = num("server_cpu_us_per_msg").fillna(
            df["server_cpu_user_us_per_msg"] + df["server_cpu_sys_us_per_msg"])
    return df


def set_aside(points: pd.DataFrame) -> dict[str, int]:
    """How many rows were set aside, by reason: failed, saturated, noisy."""
    df = points if "usable" in points else classify(points)
    return {k: int(df[k].sum()) for k in ("failed", "saturated", "noisy")}


def saturation_losses(points: pd.DataFrame, name: str) -> dict[str, tuple[int, int, bool]]:
    """Per mechanism of an experiment that lost rows to load-generator saturation:
    (rows lost, rows measured, whether no usable row is left)."""
    df = experiment(points, name)
    return {str(m): (int(g["saturated"].sum()), len(g), not g["usable"].any())
            for m, g in df.groupby("mechanism", sort=True) if g["saturated"].any()}


def aggregate(points: pd.DataFrame, measures: list[str] | None = None,
              by: list[str] | None = None) -> pd.DataFrame:
    """One row per point: the median, CI and coverage of each measure over repetitions.

    Only usable rows count, and for a CPU measure only cpu_usable rows (the
    server below 90% of its core). Columns: the keys in `by` (default
    POINT_KEYS), n (usable repetitions), n_cpu (cpu_usable ones), set_aside
    (saturated or noisy), server_saturated, failed, coverage, and for each
    measure m: m, m_lo, m_hi.
    """
    df = points if "usable" in points else classify(points)
    by = [k for k in (by or POINT_KEYS) if k in df]
    measures = [m for m in (measures or MEASURES) if m in df]
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok, cpu_ok = g[g["usable"]], g[g["cpu_usable"]]
        row = dict(zip(by, key))
        row.update(n=len(ok), n_cpu=len(cpu_ok), set_aside=int((g["saturated"] | g["noisy"]).sum()),
                   server_saturated=int((g["usable"] & g["server_saturated"]).sum()),
                   failed=int(g["failed"].sum()), coverage=math.nan)
        for m in measures:
            ci = median_ci((cpu_ok if m in CPU_MEASURES else ok)[m])
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = ci.median, ci.lo, ci.hi
            if ci.n and math.isnan(row["coverage"]):
                row["coverage"] = ci.coverage
        rows.append(row)
    out = pd.DataFrame(rows)
    if "active_ratio" not in out and {"active", "connections"} <= set(out.columns):
        out["active_ratio"] = pd.to_numeric(out["active"]) / pd.to_numeric(out["connections"])
    return out


def experiment(points: pd.DataFrame, name: str) -> pd.DataFrame:
    """The classified rows of one experiment (empty if the run has none)."""
    df = points if "usable" in points else classify(points)
    if "experiment" not in df or df.empty:
        return df.iloc[0:0]
    return df[_text(df["experiment"]) == name]


def scan_fits(points: pd.DataFrame, measure: str = "wait_ns_per_call",
              name: str = "scan") -> pd.DataFrame:
    """Per mechanism, a linear fit of the servers' own `measure` vs total connections.

    Every usable repetition is one point of the fit (cpu_usable for a CPU
    measure). Columns: those of `_fits`.
    """
    df = experiment(points, name)
    return _fits(df[df["cpu_usable" if measure in CPU_MEASURES else "usable"]], "connections", measure)


FIT_COLUMNS = ["mechanism", *Fit._fields, "first", "last", "change", "distinct_n",
               "exponent", "exponent_lo", "exponent_hi", "knee_at", "slope_below", "slope_above"]


def fit_cost(x, y) -> dict:
    """One cost against N: the linear Fit, first/last/change (`flatness`), the number
    of distinct N, the growth exponent with its CI and the best two-segment fit (`shape`)."""
    xs, ys = pd.to_numeric(pd.Series(x), errors="coerce"), pd.to_numeric(pd.Series(y), errors="coerce")
    first, last, change = flatness(xs, ys)
    exp = shape.growth_exponent(xs, ys, CONFIDENCE)
    knee = shape.two_segment(xs, ys)
    return {**linear_fit(xs, ys)._asdict(), "first": first, "last": last, "change": change,
            "distinct_n": int(xs[ys.notna()].nunique()),
            "exponent": exp.k, "exponent_lo": exp.k_lo, "exponent_hi": exp.k_hi,
            "knee_at": knee.at if knee else math.nan,
            "slope_below": knee.slope_below if knee else math.nan,
            "slope_above": knee.slope_above if knee else math.nan}


def _fits(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per mechanism, `fit_cost` of y against x."""
    rows = [{"mechanism": mech, **fit_cost(g[x].to_numpy(), g[y].to_numpy())}
            for mech, g in df.groupby("mechanism", sort=False)]
    return pd.DataFrame(rows, columns=FIT_COLUMNS)


# ---------------------------------------------------------------- micro.csv

def micro_wait(micro: pd.DataFrame, ready: str = "1", timeout_mode: str = "zero",
               mode: str = "wait") -> pd.DataFrame:
    """The measured wait-call rows for one readiness level (and mode: wait or drain).

    ready: "0", "1", "10" or "all" (ready == registered). Rows refused by the
    mechanism (select past FD_SETSIZE: note "refused: ...", empty costs) are dropped.
    Column `capped`: the call returned fewer events than were ready (epoll at
    MAXEVENTS; micro's note "epoll returned 1024 of 3000 ready (MAXEVENTS)").
    """
    if micro is None or micro.empty:
        return pd.DataFrame(columns=list(micro.columns) if micro is not None else [])
    df = micro.copy()
    for c in ("registered", "ns_median", "ns_p10", "ns_p90", "samples",
              "user_ns_per_call", "sys_ns_per_call", "cpu_ns_per_call"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    text_ready = _text(df["ready"]).str.lower()
    df["ready"] = pd.to_numeric(df["ready"], errors="coerce").where(text_ready != "all", df["registered"])
    keep = (_text(df["op"]) == "wait") & df["ns_median"].notna()
    if "mode" in df:                        # runs before issue 10 have no mode: all "wait"
        keep &= _text(df["mode"]).isin(["", "wait"] if mode == "wait" else [mode])
    if "timeout_mode" in df:
        keep &= _text(df["timeout_mode"]) == timeout_mode
    if ready == "all":
        keep &= df["ready"] == df["registered"]
    else:
        keep &= df["ready"] == float(ready)
    df["capped"] = _text(df["note"]).str.contains(r"returned \d+ of \d+ ready", regex=True) \
        if "note" in df else False
    return df[keep].sort_values(["mechanism", "registered"])


def micro_fits(micro: pd.DataFrame, ready: str = "1", timeout_mode: str = "zero",
               max_registered: float | None = None, mode: str = "wait",
               measure: str = "ns_median") -> pd.DataFrame:
    """Per mechanism, a linear fit of wait-call `measure` vs registered descriptors.

    max_registered limits every fit to the sizes up to it, so mechanisms can be
    compared over the same range (select stops at FD_SETSIZE). Calls that
    returned fewer events than were ready (`capped`) never enter a fit: a
    per-ready-event cost is a cost per event returned.
    measure: ns_median (wall time per call), or user_ns_per_call /
    sys_ns_per_call (CPU per call, C11).
    """
    rows = micro_wait(micro, ready, timeout_mode, mode)
    if measure not in rows:                    # a run from before the column existed
        rows = rows.iloc[0:0]
    if not rows.empty:
        rows = rows[~rows["capped"]]
    if max_registered is not None and not rows.empty:
        rows = rows[rows["registered"] <= max_registered]
    return _fits(rows, "registered", measure)


def fit_row(fits: pd.DataFrame, mechanism: str) -> dict | None:
    """The fit of one mechanism as a dict, or None if it has no fit."""
    if fits is None or fits.empty:
        return None
    hit = fits[fits["mechanism"] == mechanism]
    if hit.empty or math.isnan(hit.iloc[0]["slope"]):
        return None
    return hit.iloc[0].to_dict()
