"""bench.analysis.stats: the CI method, the fits, and what is set aside, on synthetic runs."""

import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis import stats as an
from bench.analysis.claims import grows_linearly, is_flat
from bench.rundir.store import load_run
from synthetic import MICRO_SLOPES, SCAN_SLOPES, make_run


@pytest.mark.parametrize("df, t", [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042), (1000, 1.962)])
def test_t_quantile_matches_the_table(df, t):
    assert an.t_quantile(0.95, df) == pytest.approx(t, abs=1e-3)


def test_median_ci_is_min_max_below_six_repetitions_with_its_real_coverage():
    ci = an.median_ci([3.0, 1.0, 2.0])
    assert (ci.median, ci.lo, ci.hi) == (2.0, 1.0, 3.0)
    assert ci.coverage == pytest.approx(0.75)
    assert an.median_ci([1, 2, 3, 4, 5]).coverage == pytest.approx(0.9375)


def test_median_ci_reaches_95_percent_with_enough_repetitions():
    ci = an.median_ci(range(20))
    assert ci.coverage >= 0.95
    assert (ci.lo, ci.hi) == (5.0, 14.0)       # the textbook order statistics for n=20


def test_median_ci_of_one_value_has_no_interval():
    ci = an.median_ci([7.0, math.nan])
    assert ci.median == 7.0 and math.isnan(ci.lo) and ci.n == 1


def test_linear_fit_is_exact_on_a_line():
    fit = an.linear_fit([1, 2, 3, 4], [5, 7, 9, 11])
    assert fit.slope == pytest.approx(2) and fit.intercept == pytest.approx(3)
    assert fit.r2 == pytest.approx(1) and fit.slope_lo == pytest.approx(2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(make_run(tmp_path_factory.mktemp("a") / "run", noise=0.01, seed=3))


@pytest.mark.parametrize("mechanism", ["select", "poll"])
def test_micro_fit_recovers_the_known_slope_within_5_percent(run, mechanism):
    fit = an.fit_row(an.micro_fits(run.micro, "1"), mechanism)
    assert fit["slope"] == pytest.approx(MICRO_SLOPES[mechanism], rel=0.05)
    assert fit["slope_lo"] < MICRO_SLOPES[mechanism] * 1.05 and fit["slope_hi"] > MICRO_SLOPES[mechanism] * 0.95
    assert grows_linearly(fit)


@pytest.mark.parametrize("mechanism", ["select", "poll"])
def test_scan_fit_of_the_servers_wait_time_recovers_the_known_slope(run, mechanism):
    fit = an.fit_row(an.scan_fits(run.points), mechanism)
    assert fit["slope"] == pytest.approx(SCAN_SLOPES[mechanism], rel=0.05)
    assert grows_linearly(fit)


@pytest.mark.parametrize("fits", ["micro", "scan"])
def test_a_flat_series_is_judged_flat_and_not_linear(run, fits):
    table = an.micro_fits(run.micro, "1") if fits == "micro" else an.scan_fits(run.points)
    fit = an.fit_row(table, "epoll")
    assert is_flat(fit["first"], fit["last"])
    assert not grows_linearly(fit)


def test_select_past_fd_setsize_is_a_failed_row_not_a_zero(run):
    pts = an.classify(run.points)
    refused = pts[(pts["mechanism"] == "select") & (pts["connections"] >= 1024) & (pts["experiment"] == "scan")]
    assert len(refused) and refused["failed"].all() and not refused["usable"].any()
    micro = an.micro_wait(run.micro, "1")
    assert micro[micro["mechanism"] == "select"]["registered"].max() < 1024


def test_saturated_and_noisy_points_are_counted_and_never_enter_medians_or_fits(tmp_path):
    clean = load_run(make_run(tmp_path / "clean", seed=5))
    flagged = load_run(make_run(tmp_path / "flagged", seed=5,
                                saturate=(("scan", "poll", 5000),), noisy_points=(("scan", "poll", 10000),)))
    aside = an.set_aside(an.classify(flagged.points))
    assert aside["saturated"] == 1 and aside["noisy"] == 1
    agg = an.aggregate(flagged.points)
    cell = agg[(agg["experiment"] == "scan") & (agg["mechanism"] == "poll") & (agg["connections"] == 5000)]
    assert cell["n"].item() == 4 and cell["set_aside"].item() == 1
    # the flagged repetition carries 3x costs; its absence keeps the fit close to the clean one
    a = an.fit_row(an.scan_fits(clean.points), "poll")["slope"]
    b = an.fit_row(an.scan_fits(flagged.points), "poll")["slope"]
    assert b == pytest.approx(a, rel=0.02)


def test_cpu_split_is_derived_when_the_run_did_not_record_it():
    df = pd.DataFrame({"throughput_msgs_s": [1000.0], "duration_s": [2.0],
                       "server_cpu_user_s": [0.002], "server_cpu_sys_s": [0.004]})
    out = an.with_derived(df)
    assert out["server_cpu_user_us_per_msg"].item() == pytest.approx(1.0)
    assert out["server_cpu_sys_us_per_msg"].item() == pytest.approx(2.0)


def test_empty_tables_give_empty_fits_not_errors():
    empty = pd.DataFrame(columns=["op", "mechanism", "registered", "ready", "timeout_mode",
                                  "ns_median", "ns_p10", "ns_p90", "samples", "note"])
    assert an.micro_fits(empty).empty
    assert an.scan_fits(pd.DataFrame(columns=["experiment", "mechanism"])).empty
    assert np.isnan(an.flatness([1], [2])[2])


def test_server_saturated_is_read_from_the_column_or_derived_for_older_runs():
    # rows 0-1 carry the column; rows 2-3 were written before it (empty): CPU seconds / window
    df = pd.DataFrame({"error": [""] * 4, "saturated": [False] * 4, "noisy": [False] * 4,
                       "server_saturated": ["True", "False", "", ""],
                       "server_cpu_user_s": [0.1, 1.9, 1.5, 1.0], "server_cpu_sys_s": [0.0, 0.0, 0.4, 0.0],
                       "duration_s": [2.0] * 4, "throughput_msgs_s": [1000.0] * 4,
                       "server_cpu_us_per_msg": [50.0, 950.0, 950.0, 500.0]})
    out = an.classify(df)
    assert out["server_saturated"].tolist() == [True, False, True, False]
    assert out["usable"].all() and out["cpu_usable"].tolist() == [False, True, False, True]


def test_a_saturated_server_keeps_its_wall_time_but_gives_no_cpu_measure(tmp_path):
    run = load_run(make_run(tmp_path / "run", experiments=("scan-rate",), micro=False,
                            server_saturate=(("scan-rate", "poll", 5000),)))
    agg = an.aggregate(run.points)
    cell = agg[(agg["mechanism"] == "poll") & (agg["connections"] == 5000)]
    assert cell["n"].item() == 5 and cell["n_cpu"].item() == 0 and cell["server_saturated"].item() == 5
    assert math.isnan(cell["server_cpu_us_per_msg"].item()) and cell["wait_ns_per_call"].notna().item()
    fit = an.fit_row(an.scan_fits(run.points, "server_cpu_us_per_msg", "scan-rate"), "poll")
    assert fit["distinct_n"] == 6                      # 5,000 left out of the CPU fit
