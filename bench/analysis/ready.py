"""The ready experiment read back: server cost against the measured ready fraction.

Each point is N connections and bursts of K of them made ready at one
instant (loadgen/burst.py). `curves` gives, per mechanism and N, the
median cost at each K (K > 0) with the measured ready fraction;
`control` the K = 0 rows (what stopping and continuing the server costs
alone); `crossings` where two mechanisms' median curves cross.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def curves(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregated ready rows with K > 0 and a measured ready fraction, sorted."""
    if agg is None or agg.empty or "experiment" not in agg:
        return pd.DataFrame()
    df = agg[(agg["experiment"] == "ready") & (agg["n"] > 0)].copy()
    for c in ("connections", "active"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df = df[df["active"] > 0]
    return df.sort_values(["mechanism", "connections", "active"]).reset_index(drop=True)


def control(agg: pd.DataFrame) -> pd.DataFrame:
    """The K = 0 rows: the server's CPU per stop/continue alone, per mechanism and N."""
    if agg is None or agg.empty or "experiment" not in agg:
        return pd.DataFrame()
    df = agg[(agg["experiment"] == "ready") & (agg["n"] > 0)].copy()
    df["active"] = pd.to_numeric(df["active"], errors="coerce")
    return df[df["active"] == 0].reset_index(drop=True)


def crossings(a: pd.DataFrame, b: pd.DataFrame,
              measure: str = "server_cpu_us_per_msg") -> list[float]:
    """Ready fractions where two median curves (one N each) cross, interpolated on log x.

    The curves are matched by K; at each K the x is the geometric mean of
    the two measured ready fractions (epoll may split a burst, select and
    poll never do). A sign change of (a - b) between two neighbouring K is
    one crossing; a K where both are equal is one too.
    """
    m = pd.merge(a[["active", "ready_fraction", measure]], b[["active", "ready_fraction", measure]],
                 on="active", suffixes=("_a", "_b")).dropna().sort_values("active")
    m = m[(m["ready_fraction_a"] > 0) & (m["ready_fraction_b"] > 0)]
    if len(m) < 2:
        return []
    x = np.log(np.sqrt(m["ready_fraction_a"].to_numpy() * m["ready_fraction_b"].to_numpy()))
    d = m[f"{measure}_a"].to_numpy() - m[f"{measure}_b"].to_numpy()
    out = []
    for i in range(len(d)):
        if d[i] == 0:
            out.append(math.exp(x[i]))
        elif i + 1 < len(d) and d[i] * d[i + 1] < 0:
            out.append(math.exp(x[i] + (x[i + 1] - x[i]) * d[i] / (d[i] - d[i + 1])))
    return out
