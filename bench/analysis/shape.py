"""How a cost grows with N beyond a straight line: its growth exponent and its knee.

Growth exponent: the k of cost = a + b·N^k, i.e. the log–log slope of the
cost above its N→0 baseline a. For each k on a grid, a and b are an ordinary
least-squares fit of cost on N^k; k̂ minimises the residual sum of squares
(SSR). Its 95% CI is the profile-likelihood interval, every k with
SSR(k) ≤ SSR(k̂)·(1 + t²/(n-3)), t the Student-t quantile for n-3 degrees of
freedom (the F test of one parameter among three). A bound that reaches the
grid's edge is open (0 or inf). Needs 4 points and 3 distinct N.

Knee: a continuous two-segment fit, cost = a + s1·N + (s2 - s1)·max(0, N - c),
c chosen among the measured N (each segment holding at least 3 distinct N,
c shared) to minimise the SSR. s1 is the per-descriptor slope below c, s2
above; the rules (bench.analysis.claims.rules) call it a knee when they
differ by more than 2×.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from bench.analysis.tdist import t_quantile

EXPONENT_GRID = np.round(np.arange(0.05, 4.0 + 1e-9, 0.01), 2)
MIN_POINTS_PER_SEGMENT = 3     # distinct N on each side of a knee, the knee included


class Exponent(NamedTuple):
    k: float
    k_lo: float
    k_hi: float
    baseline: float       # a: the fitted cost as N -> 0
    n: int


class Knee(NamedTuple):
    at: float             # the N where the slope changes
    slope_below: float
    slope_above: float


def _clean(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def _ssr(design: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return float(resid @ resid), coef


def growth_exponent(x, y, confidence: float) -> Exponent:
    """k̂ and its profile-likelihood CI for cost = a + b·N^k (NaN with < 4 points or < 3 distinct N)."""
    x, y = _clean(x, y)
    nan = math.nan
    if len(x) < 4 or len(np.unique(x)) < 3 or np.any(x <= 0):
        return Exponent(nan, nan, nan, nan, len(x))
    u = x / x.max()                       # N^k stays in (0, 1] for every k
    powers = u[None, :] ** EXPONENT_GRID[:, None]        # one row per k: OLS of y on N^k, all at once
    pc = powers - powers.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    sxx, sxy = (pc * pc).sum(axis=1), pc @ yc
    slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=sxx > 0)
    ssr = np.maximum(float(yc @ yc) - slope * sxy, 0.0)
    intercept = y.mean() - slope * powers.mean(axis=1)
    best = int(np.argmin(ssr))
    df = len(x) - 3
    limit = ssr[best] * (1 + t_quantile(confidence, df) ** 2 / df)
    inside = np.flatnonzero(ssr <= limit * (1 + 1e-12) + 1e-300)
    lo_i, hi_i = inside.min(), inside.max()
    # the hull of every k inside (conservative should the set not be contiguous);
    # an end at the grid's edge is open
    k_lo = 0.0 if lo_i == 0 else float(EXPONENT_GRID[lo_i])
    k_hi = math.inf if hi_i == len(EXPONENT_GRID) - 1 else float(EXPONENT_GRID[hi_i])
    return Exponent(float(EXPONENT_GRID[best]), k_lo, k_hi, float(intercept[best]), len(x))


def two_segment(x, y) -> Knee | None:
    """The best continuous two-segment fit (None with fewer than 5 distinct N)."""
    x, y = _clean(x, y)
    levels = np.unique(x)
    k = MIN_POINTS_PER_SEGMENT
    if len(levels) < 2 * k - 1:
        return None
    best = None
    for c in levels[k - 1:len(levels) - k + 1]:
        design = np.column_stack([np.ones_like(x), x, np.maximum(0.0, x - c)])
        ssr, coef = _ssr(design, y)
        if best is None or ssr < best[0]:
            best = (ssr, float(c), float(coef[1]), float(coef[1] + coef[2]))
    return Knee(best[1], best[2], best[3])
