"""Student's t distribution for integer degrees of freedom, exactly (no SciPy).

P(-t < T < t) from Abramowitz & Stegun 26.7.3-4; the quantile by bisection.
Used by the linear fit's slope CI (bench.analysis.stats) and the growth
exponent's profile CI (bench.analysis.shape).
"""

from __future__ import annotations

import math


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
