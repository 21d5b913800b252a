"""The shape rules (CLAIMS.md "Rules for verdicts") and the false-positive rates: each outcome
from data built for it, so a rule that passes any monotone curve fails here."""

import itertools
import math

import numpy as np
import pytest

from bench.analysis import stats as an
from bench.analysis.claims import rules
from bench.analysis.significance import ci_rank, false_positive_rate, fpr_text

MICRO_GRID = [1, 3, 10, 30, 100, 300, 1000, 3000, 9000]      # the reference run's micro sizes
SCAN_GRID = [10, 100, 500, 1000, 2000, 5000, 10000]


def noisy(f, grid, reps=3, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    x = np.array(grid * reps, float)
    return x, f(x) * rng.lognormal(0.0, noise, len(x))


def shape_of(x, y):
    return rules.shape(an.fit_cost(x, y))


@pytest.mark.parametrize("grid", [MICRO_GRID, SCAN_GRID])
def test_a_line_with_noise_is_linear(grid):
    sh = shape_of(*noisy(lambda n: 600 + 4 * n, grid))
    assert sh.kind == rules.LINEAR and sh.knee is None


@pytest.mark.parametrize("grid", [MICRO_GRID, SCAN_GRID])
def test_n_squared_is_faster_than_linear_though_r2_is_high(grid):
    x, y = noisy(lambda n: 600 + n ** 2, grid)
    assert an.linear_fit(x, y).r2 > 0.9                        # the old rule called this linear
    assert shape_of(x, y).kind == rules.FASTER


@pytest.mark.parametrize("grid", [MICRO_GRID, SCAN_GRID])
def test_sqrt_n_is_slower_than_linear_though_r2_is_high(grid):
    x, y = noisy(lambda n: 100 * np.sqrt(n), grid)
    assert an.linear_fit(x, y).r2 > 0.9
    assert shape_of(x, y).kind == rules.SLOWER


def test_two_points_are_too_few_however_straight():
    x, y = noisy(lambda n: 600 + 4 * n, [10, 1000], reps=3)    # scan-rate select: 10 and 1,000
    assert an.linear_fit(x, y).slope_lo > 0
    sh = shape_of(x, y)
    assert sh.kind == rules.TOO_FEW_N and rules.grows_linearly(an.fit_cost(x, y)) is None
    assert "2 distinct N" in sh.why


def test_four_points_within_less_than_a_decade_are_too_few():
    assert shape_of(*noisy(lambda n: 600 + 4 * n, [1000, 2000, 4000, 8000])).kind == rules.TOO_FEW_N


def test_a_flat_cost_is_not_growing():
    sh = shape_of(*noisy(lambda n: 400 + 0 * n, MICRO_GRID))
    assert sh.kind == rules.NOT_GROWING and sh.knee is None


def test_a_knee_is_found_where_the_slope_changes_with_both_slopes():
    # poll in the reference run: ~40 ns/fd up to 1,000, ~170 ns/fd beyond
    x, y = noisy(lambda n: 300 + 40 * n + 130 * np.maximum(0, n - 1000), MICRO_GRID, noise=0.01)
    at, below, above = shape_of(x, y).knee
    assert at == 1000
    assert below == pytest.approx(40, rel=0.1) and above == pytest.approx(170, rel=0.1)


def test_no_knee_on_a_straight_line_or_a_gentle_bend():
    assert shape_of(*noisy(lambda n: 600 + 4 * n, MICRO_GRID)).knee is None
    bend = lambda n: 300 + 40 * n + 30 * np.maximum(0, n - 1000)     # 1.75x: under the 2x rule
    assert shape_of(*noisy(bend, MICRO_GRID, noise=0.01)).knee is None


def test_a_wide_exponent_ci_that_holds_1_cannot_decide():
    # a line measured badly: 15% noise, 2 repetitions of 4 N over 1.5 decades
    f = an.fit_cost(*noisy(lambda n: 600 + 4 * n, [10, 30, 100, 300], reps=2, noise=0.15))
    assert f["slope_lo"] > 0 and f["exponent_lo"] < 0.8 and f["exponent_hi"] > 1
    assert rules.shape(f).kind == rules.UNDECIDED and rules.grows_linearly(f) is None


# ---------------------------------------------------------------- false-positive rates

@pytest.mark.parametrize("m, n, rate", [(3, 3, 2 / math.comb(6, 3)), (2, 3, 2 / math.comb(5, 2)),
                                        (5, 5, 2 / math.comb(10, 5))])
def test_false_positive_rate_of_min_max_intervals(m, n, rate):
    assert false_positive_rate(m, n) == pytest.approx(rate)


@pytest.mark.parametrize("m, n", [(3, 3), (2, 5), (6, 7), (8, 10), (5, 3)])
def test_false_positive_rate_counts_every_interleaving(m, n):
    # brute force: every way two exchangeable samples interleave is equally likely
    ka, kb = ci_rank(m), ci_rank(n)
    apart = total = 0
    for pos in itertools.combinations(range(m + n), m):
        a = sorted(pos)
        b = sorted(set(range(m + n)) - set(pos))
        total += 1
        apart += a[m - ka] < b[kb - 1] or b[n - kb] < a[ka - 1]
    assert false_positive_rate(m, n) == pytest.approx(apart / total)


def test_false_positive_rate_as_the_report_states_it():
    assert fpr_text(3, 3) == "10% (3 vs 3 repetitions)"
    assert fpr_text(2, 3) == "20% (2 vs 3 repetitions)"
    assert fpr_text(5, 5) == "0.8% (5 vs 5 repetitions)"
    assert fpr_text(1, 3).startswith("no CI")
