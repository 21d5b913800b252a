"""Intervals of medians, and how often two of them miss each other by chance.

Median CI: the exact, distribution-free order-statistic interval. With n
repetitions sorted, [x(k), x(n+1-k)] covers the true median with probability
1 - 2·P(B < k), B ~ Binomial(n, 1/2) (no assumption on the shape of the
distribution, no resampling, so no seed). We take the largest k whose coverage
is at least 95%. Below 6 repetitions no k reaches 95%: the interval is then
[min, max] and its real coverage (75% for 3, 93.75% for 5) is reported in the
`coverage` column instead of being rounded up to 95%. One repetition has no CI.

False-positive rate of "the intervals do not overlap": when two mechanisms
do not differ, their m + n repetitions are exchangeable, so each of the
C(m+n, m) ways to interleave the two sorted samples is equally likely.
The intervals miss each other when A's upper order statistic falls below
B's lower one, or the other way round; counting the interleavings where that
happens gives the rate exactly (two [min, max] of 3: 2/C(6,3) = 10%; 2
against 3: 2/C(5,2) = 20%; 5 against 5: 2/C(10,5) < 1%).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

CONFIDENCE = 0.95


class MedianCI(NamedTuple):
    median: float
    lo: float
    hi: float
    n: int
    coverage: float   # probability that [lo, hi] holds the true median


def median_ci(values, confidence: float = CONFIDENCE) -> MedianCI:
    """Median of `values` (NaNs dropped) with its exact order-statistic CI."""
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), float)
    x = np.sort(x[~np.isnan(x)])
    n = len(x)
    if n == 0:
        return MedianCI(math.nan, math.nan, math.nan, 0, math.nan)
    med = float(np.median(x))
    if n == 1:
        return MedianCI(med, math.nan, math.nan, 1, 0.0)
    k = ci_rank(n, confidence)
    return MedianCI(med, float(x[k - 1]), float(x[n - k]), n, _coverage(n, k))


def ci_rank(n: int, confidence: float = CONFIDENCE) -> int:
    """The k of median_ci's interval [x(k), x(n+1-k)] for n values: 1 ([min, max]) below 6."""
    k = 1
    for j in range(1, n // 2 + 1):
        if _coverage(n, j) >= confidence:
            k = j
    return k


def _coverage(n: int, k: int) -> float:
    """P(x(k) <= median <= x(n+1-k)) = 1 - 2·P(Binomial(n, 1/2) < k)."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2 ** n
    return 1 - 2 * tail


def overlap(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> bool | None:
    """Whether two intervals overlap; None when either is missing (no CI)."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (a_lo, a_hi, b_lo, b_hi)):
        return None
    return not (a_hi < b_lo or b_hi < a_lo)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _below(m: int, n: int, hi_a: int, lo_b: int) -> float:
    """P(a(hi_a) < b(lo_b)) over the equally likely interleavings of m a's and n b's.

    Count the interleavings by how many b's (t < lo_b) precede the hi_a-th a:
    C(hi_a - 1 + t, t) ways before it, C(m - hi_a + n - t, n - t) after it.
    """
    total = _log_comb(m + n, m)
    return sum(math.exp(_log_comb(hi_a - 1 + t, t) + _log_comb(m - hi_a + n - t, n - t) - total)
               for t in range(lo_b))


def false_positive_rate(m: int, n: int, confidence: float = CONFIDENCE) -> float:
    """Chance that median_ci's intervals of m and n repetitions do not overlap when
    nothing differs (exact, for exchangeable samples); NaN when either has no CI."""
    if m < 2 or n < 2:
        return math.nan
    ka, kb = ci_rank(m, confidence), ci_rank(n, confidence)
    return _below(m, n, m + 1 - ka, kb) + _below(n, m, n + 1 - kb, ka)


def fpr_text(m: int, n: int) -> str:
    """'10% (3 vs 3 repetitions)', the rate as the report states it."""
    rate = false_positive_rate(m, n)
    if math.isnan(rate):
        return f"no CI ({m} vs {n} repetitions)"
    shown = f"{rate:.0%}" if rate >= 0.01 else f"{rate:.1%}" if rate >= 0.001 else "< 0.1%"
    return f"{shown} ({m} vs {n} repetitions)"


def normal_overlap_fpr(a_lo: float, a_hi: float, b_lo: float, b_hi: float,
                       confidence: float = CONFIDENCE) -> float:
    """Chance that two independent, normal-theory CIs of equal estimates miss each other.

    Each half-width is z·SE; the gap test then rejects when |Δ| > z·(se_a + se_b),
    whose probability under no difference is 2·(1 - Φ(z·(se_a + se_b)/√(se_a² + se_b²))):
    0.56% for equal widths, up to 1 - confidence when one interval is far narrower.
    """
    se_a, se_b = (a_hi - a_lo) / 2, (b_hi - b_lo) / 2
    if not (se_a >= 0 and se_b >= 0) or se_a + se_b == 0:
        return math.nan
    z = math.sqrt(2) * _erfinv(confidence)
    ratio = z * (se_a + se_b) / math.hypot(se_a, se_b)
    return math.erfc(ratio / math.sqrt(2))


def _erfinv(p: float) -> float:
    """Inverse of math.erf on (0, 1), by bisection."""
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid) < p else (lo, mid)
    return (lo + hi) / 2
