"""Statistics for a run: repetitions -> median with a 95% CI; cost -> linear fit.

Both methods are stated once, here, and used by plots, claims, report and compare.

Median CI: the exact, distribution-free order-statistic interval. With n
repetitions sorted, [x(k), x(n+1-k)] covers the true median with probability
1 - 2·P(B < k), B ~ Binomial(n, 1/2) (no assumption on the shape of the
distribution, no resampling, so no seed). We take the largest k whose coverage
is at least 95%. Below 6 repetitions no k reaches 95%: the interval is then
[min, max] and its real coverage (75% for 3, 93.75% for 5) is reported in the
`coverage` column instead of being rounded up to 95%. One repetition has no CI.

Linear fit: ordinary least squares of cost on registered descriptors.
95% CI of the slope = slope ± t(0.975, n-2)·SE(slope), with t from the exact
Student-t distribution for integer degrees of freedom (Abramowitz & Stegun
26.7.3-4, inverted by bisection); R² = 1 - SS_res/SS_tot.

Rows that failed (non-empty `error`), or were measured while the load generator
was saturated or the machine noisy, never enter a median or a fit; `classify`
says which is which so the report can count them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

CONFIDENCE = 0.95

# a point is one cell of the sweep; its repetitions differ only in `rep`
POINT_KEYS = ["experiment", "mechanism", "connections", "active", "msg_size", "rate"]

MEASURES = [
    "throughput_msgs_s", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
    "server_cpu_us_per_msg", "server_cpu_user_us_per_msg", "server_cpu_sys_us_per_msg",
    "wait_ns_per_call", "events_per_call", "wait_calls_per_msg",
    "established", "echoing", "rejected_fd_setsize",
]


class MedianCI(NamedTuple):
    median: float
    lo: float
    hi: float
    n: int
    coverage: float   # probability that [lo, hi] holds the true median


class Fit(NamedTuple):
    slope: float
    slope_lo: float
    slope_hi: float
    intercept: float
    r2: float
    n: int
    x_min: float
    x_max: float


# ---------------------------------------------------------------- median CI

def median_ci(values, confidence: float = CONFIDENCE) -> MedianCI:
    """Median of `values` (NaNs dropped) with its exact order-statistic CI."""
    x = np.sort(np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), float))
    n = len(x)
    if n == 0:
        return MedianCI(math.nan, math.nan, math.nan, 0, math.nan)
    med = float(np.median(x))
    if n == 1:
        return MedianCI(med, math.nan, math.nan, 1, 0.0)
    k, coverage = 1, _coverage(n, 1)          # [min, max] when nothing better exists
    for j in range(1, n // 2 + 1):
        c = _coverage(n, j)
        if c >= confidence:
            k, coverage = j, c
    return MedianCI(med, float(x[k - 1]), float(x[n - k]), n, coverage)


def _coverage(n: int, k: int) -> float:
    """P(x(k) <= median <= x(n+1-k)) = 1 - 2·P(Binomial(n, 1/2) < k)."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2 ** n
    return 1 - 2 * tail


def overlap(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> bool | None:
    """Whether two intervals overlap; None when either is missing (no CI)."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (a_lo, a_hi, b_lo, b_hi)):
        return None
    return not (a_hi < b_lo or b_hi < a_lo)


# ---------------------------------------------------------------- Student t

def t_cdf_two_sided(t: float, df: int) -> float:
    """P(-t < T < t) for Student's t with integer df (A&S 26.7.3, 26.7.4)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:                                 # odd: 2/pi (theta + sin·cos·Σ)
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + s * total)
    term = total = 1.0                         # even: sin·Σ
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(-t < T < t) = confidence, e.g. 12.706 for 0.95 and df=1."""
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf_two_sided(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


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

    failed: a non-empty `error` (no measures); saturated/noisy: kept, drawn
    hollow, never used in a median, fit or verdict; usable: none of these.
    """
    df = points.copy()
    for col in ("error", "saturated", "noisy"):
        if col not in df:
            df[col] = pd.Series([None] * len(df), index=df.index, dtype=object)
    df["failed"] = _text(df["error"]) != ""
    df["saturated"] = _truthy(df["saturated"]) & ~df["failed"]
    df["noisy"] = _truthy(df["noisy"]) & ~df["failed"]
    df["usable"] = ~(df["failed"] | df["saturated"] | df["noisy"])
    return with_derived(df)


def with_derived(points: pd.DataFrame) -> pd.DataFrame:
    """Add active_ratio, wait_calls_per_msg, server_cpu_us_per_wait and the user/system CPU per message.

    The split CPU columns are computed from server_cpu_{user,sys}_s and the
    message count (throughput × duration) where a run did not record them.
    """
    df = points.copy()
    num = lambda c: pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series(np.nan, index=df.index)
    msgs = num("throughput_msgs_s") * num("duration_s")
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


def aggregate(points: pd.DataFrame, measures: list[str] | None = None,
              by: list[str] | None = None) -> pd.DataFrame:
    """One row per point: the median, CI and coverage of each measure over repetitions.

    Only usable rows count. Columns: the keys in `by` (default POINT_KEYS),
    n (usable repetitions), set_aside (saturated or noisy), failed, coverage,
    and for each measure m: m, m_lo, m_hi.
    """
    df = points if "usable" in points else classify(points)
    by = [k for k in (by or POINT_KEYS) if k in df]
    measures = [m for m in (measures or MEASURES) if m in df]
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g["usable"]]
        row = dict(zip(by, key))
        row.update(n=len(ok), set_aside=int((g["saturated"] | g["noisy"]).sum()),
                   failed=int(g["failed"].sum()), coverage=math.nan)
        for m in measures:
            ci = median_ci(ok[m])
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

    Every usable repetition is one point of the fit. Columns: mechanism and
    the Fit fields, plus first/last/change from `flatness`.
    """
    df = experiment(points, name)
    return _fits(df[df["usable"]], "connections", measure)


def _fits(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    rows = []
    for mech, g in df.groupby("mechanism", sort=False):
        xs, ys = pd.to_numeric(g[x], errors="coerce"), pd.to_numeric(g[y], errors="coerce")
        fit = linear_fit(xs, ys)
        first, last, change = flatness(xs, ys)
        rows.append({"mechanism": mech, **fit._asdict(), "first": first, "last": last, "change": change})
    return pd.DataFrame(rows, columns=["mechanism", *Fit._fields, "first", "last", "change"])


# ---------------------------------------------------------------- micro.csv

def micro_wait(micro: pd.DataFrame, ready: str = "1", timeout_mode: str = "zero") -> pd.DataFrame:
    """The measured wait-call rows for one readiness level.

    ready: "0", "1", "10" or "all" (ready == registered). Rows refused by the
    mechanism (select past FD_SETSIZE: note "refused: ...", empty costs) are dropped.
    """
    if micro is None or micro.empty:
        return pd.DataFrame(columns=list(micro.columns) if micro is not None else [])
    df = micro.copy()
    for c in ("registered", "ns_median", "ns_p10", "ns_p90", "samples"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    text_ready = _text(df["ready"]).str.lower()
    df["ready"] = pd.to_numeric(df["ready"], errors="coerce").where(text_ready != "all", df["registered"])
    keep = (_text(df["op"]) == "wait") & df["ns_median"].notna()
    if "timeout_mode" in df:
        keep &= _text(df["timeout_mode"]) == timeout_mode
    if ready == "all":
        keep &= df["ready"] == df["registered"]
    else:
        keep &= df["ready"] == float(ready)
    return df[keep].sort_values(["mechanism", "registered"])


def micro_fits(micro: pd.DataFrame, ready: str = "1", timeout_mode: str = "zero",
               max_registered: float | None = None) -> pd.DataFrame:
    """Per mechanism, a linear fit of wait-call ns_median vs registered descriptors.

    max_registered limits every fit to the sizes up to it, so mechanisms can be
    compared over the same range (select stops at FD_SETSIZE).
    """
    rows = micro_wait(micro, ready, timeout_mode)
    if max_registered is not None and not rows.empty:
        rows = rows[rows["registered"] <= max_registered]
    return _fits(rows, "registered", "ns_median")


def fit_row(fits: pd.DataFrame, mechanism: str) -> dict | None:
    """The fit of one mechanism as a dict, or None if it has no fit."""
    if fits is None or fits.empty:
        return None
    hit = fits[fits["mechanism"] == mechanism]
    if hit.empty or math.isnan(hit.iloc[0]["slope"]):
        return None
    return hit.iloc[0].to_dict()
