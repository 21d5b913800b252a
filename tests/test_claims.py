"""bench.analysis.claims: every verdict outcome, produced by synthetic data built for it."""

import pandas as pd
import pytest

from bench.analysis import claims
from bench.analysis.claims import NOT_TESTED, PARTLY, REFUTED, SUPPORTED, rules
from bench.report.plots import FIGURES
from bench.rundir.store import load_run
from synthetic import FULL_SYNTHETIC, make_run, probes_doc

FLAT = {"select": 0.0, "poll": 0.0, "epoll": 0.0, "epoll-et": 0.0}


def verdict(tmp_path, cid, **kw):
    run = load_run(make_run(tmp_path / "run", **kw))
    return {v.id: v for v in claims.verdicts(run)}[cid]


def test_every_claim_gets_one_verdict_with_its_number_rule_and_figure(tmp_path):
    vs = claims.verdicts(make_run(tmp_path / "run", **FULL_SYNTHETIC))
    assert [v.id for v in vs] == [f"C{i}" for i in range(1, 9)]
    for v in vs:
        assert v.verdict in claims.OUTCOMES and v.verdict != NOT_TESTED, v
        assert v.numbers and v.rule and v.reason and v.claim
        assert v.figure in FIGURES


def test_nothing_is_asserted_without_data(tmp_path):
    vs = claims.verdicts(make_run(tmp_path / "run", experiments=(), micro=False))
    assert {v.verdict for v in vs} == {NOT_TESTED}
    assert all(v.reason for v in vs)


def test_the_rules_quote_the_thresholds_of_claims_md():
    assert (rules.LINEAR_R2_MIN, rules.FLAT_WITHIN, rules.CONFIDENCE) == (0.9, 0.25, 0.95)
    assert claims.is_flat(100, 125) and not claims.is_flat(100, 126)
    assert claims.grows_linearly({"slope": 1, "slope_lo": 0.1, "slope_hi": 2, "r2": 0.9})
    assert not claims.grows_linearly({"slope": 1, "slope_lo": -0.1, "slope_hi": 2, "r2": 0.99})
    assert not claims.grows_linearly({"slope": 1, "slope_lo": 0.1, "slope_hi": 2, "r2": 0.89})
    assert claims.differs((1, 2), (3, 4)) and not claims.differs((1, 3), (2, 4))


# C1: the FD_SETSIZE wall, value vs count
@pytest.mark.parametrize("kw, outcome", [
    (dict(probes=probes_doc()), PARTLY),                      # wall; limit on the value; kernel takes more
    (dict(), SUPPORTED),                                      # wall, no probe to refine it
    (dict(select_wall=None), REFUTED),                        # select echoes past 1024
    (dict(experiments=("scan",)), NOT_TESTED),                # no fdlimit
])
def test_c1(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C1", **kw).verdict == outcome


# C2: select's copy
@pytest.mark.parametrize("kw, outcome", [
    (dict(), PARTLY),                                          # linear, but poll not far steeper
    (dict(micro_slopes={"select": 4.0, "poll": 20.0}), SUPPORTED),  # poll 5x steeper: copy-like
    (dict(micro_slopes=FLAT), REFUTED),                        # select flat
    (dict(micro=False), NOT_TESTED),
])
def test_c2(tmp_path, kw, outcome):
    v = verdict(tmp_path, "C2", **kw)
    assert v.verdict == outcome
    if outcome != NOT_TESTED:
        assert v.values["ready"] == 0                          # "nothing ready", as CLAIMS.md asks


# C3: linear scan
@pytest.mark.parametrize("kw, outcome", [
    (dict(), SUPPORTED),
    (dict(micro_slopes=FLAT, scan_slopes=FLAT), REFUTED),
    (dict(micro_slopes={"poll": 0.0}, scan_slopes={"poll": 0.0}), PARTLY),
    (dict(micro=False, experiments=("activity",)), NOT_TESTED),
])
def test_c3(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C3", **kw).verdict == outcome


def test_c3_numbers_carry_the_recovered_slopes(tmp_path):
    v = verdict(tmp_path, "C3", noise=0.01)
    assert v.values["micro_select_slope_ns"] == pytest.approx(4.0, rel=0.05)
    assert v.values["scan_poll_slope_ns"] == pytest.approx(7.0, rel=0.05)
    # scan-rate: CPU per wait call grows by one scan, 7 ns per connection, for each
    # of the 5 messages a call returns (synthetic.py: one scan per message)
    assert v.values["scan-rate_poll_slope_ns"] * 1000 == pytest.approx(5 * 7.0, rel=0.05)


def test_c3_open_loop_cpu_alone_decides_when_scan_is_set_aside(tmp_path):
    v = verdict(tmp_path, "C3", micro=False, experiments=("scan-rate",))
    assert v.verdict == SUPPORTED
    assert "scan-rate poll" in v.numbers


# C4: poll has no maximum but copies its array
@pytest.mark.parametrize("kw, outcome", [
    (dict(probes=probes_doc(poll_einval=True)), PARTLY),       # bound is RLIMIT_NOFILE
    (dict(probes=probes_doc(poll_einval=False)), SUPPORTED),
    (dict(poll_wall=1019, micro_slopes={"poll": 0.0}, probes=probes_doc(poll_einval=True)), REFUTED),
    (dict(experiments=("scan",), micro=False), NOT_TESTED),
])
def test_c4(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C4", **kw).verdict == outcome


# C5: edge-triggered "only once"
@pytest.mark.parametrize("kw, outcome", [
    (dict(probes=probes_doc(et_writes_reported=2)), PARTLY),
    (dict(probes=probes_doc(et_writes_reported=1)), SUPPORTED),
    (dict(), NOT_TESTED),                                      # servers alone cannot tell
])
def test_c5(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C5", **kw).verdict == outcome


# C6: the mmap myth
MMAP_IN_LOOP = {"epoll": {"epoll_wait": 0.2, "mmap": 1.0}}
NO_MMAP = {"epoll": {"epoll_wait": 0.2, "mmap": 0.0001}}


@pytest.mark.parametrize("kw, outcome", [
    (dict(probes=probes_doc(), syscalls=NO_MMAP), REFUTED),
    (dict(probes=probes_doc(eventpoll_mapped=True), syscalls=MMAP_IN_LOOP), SUPPORTED),
    (dict(probes=probes_doc(eventpoll_mapped=True), syscalls=NO_MMAP), PARTLY),
    (dict(), NOT_TESTED),                                      # micro alone cannot decide
])
def test_c6(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C6", **kw).verdict == outcome


# C7: epoll flat with idle fds, worse when all are ready (micro, all ready)
WORSE = {"epoll": (20.0, 16.0)}
ALL_READY_WORSE = {"epoll": 100.0}                             # ns per ready fd; select/poll 40
ALL_READY_BETTER = {"epoll": 10.0}


@pytest.mark.parametrize("kw, outcome", [
    (dict(per_ready_ns=ALL_READY_WORSE), SUPPORTED),
    (dict(per_ready_ns=ALL_READY_BETTER), PARTLY),             # flat, but not worse when all ready
    (dict(), PARTLY),                                          # ranges overlap: busy part not tested
    (dict(micro_slopes={"epoll": 5.0}, scan_slopes={"epoll": 5.0}, per_ready_ns=ALL_READY_BETTER),
     REFUTED),
    (dict(micro=False, experiments=("msgsize",)), NOT_TESTED),
])
def test_c7(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C7", **kw).verdict == outcome


def test_c7_busy_part_ignores_the_fixed_rate_activity_experiment(tmp_path):
    # epoll worse in activity (a fixed total rate never makes most fds ready at once)
    # but better with all ready in micro: micro decides, activity is context
    v = verdict(tmp_path, "C7", activity_cpu=WORSE, per_ready_ns=ALL_READY_BETTER)
    assert v.verdict == PARTLY and "worse when nearly all active: no" in v.reason
    assert v.values["activity_worse"] is True


def test_a_saturated_point_never_decides(tmp_path):
    # epoll's only rep that looks worse at 100% active is saturated: set aside, so not worse
    kw = dict(reps=5, saturate=(("activity", "epoll", 1000),))
    v = verdict(tmp_path, "C7", **kw)
    assert v.verdict == PARTLY and v.values["worse"] == []


# C8: 100k connections per GB
@pytest.mark.parametrize("kw, outcome", [
    (dict(memory={"epoll": 5200}), SUPPORTED),                 # ~185k per GiB: within 2x
    (dict(memory={"epoll": 400}), PARTLY),                     # memory allows far more; file-max ~100k/GiB
    (dict(memory={"epoll": 400}, meta={"limits": {"fs.file-max": 9_000_000}}), REFUTED),
    (dict(), NOT_TESTED),                                      # no memory.csv
])
def test_c8(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C8", **kw).verdict == outcome


def test_one_repetition_shows_no_ci_in_activity_and_micro_still_decides(tmp_path):
    v = verdict(tmp_path, "C7", reps=1, activity_cpu=WORSE, per_ready_ns=ALL_READY_BETTER)
    assert v.verdict == PARTLY                 # idle part holds; not worse with all ready
    assert "no CI" in v.numbers and "activity_worse" not in v.values


def test_c7_with_activity_at_several_connection_counts_names_the_cell_it_used(tmp_path):
    # a profile may sweep activity at several N: C7 must not index a Series and crash
    run_dir = make_run(tmp_path / "run")
    points = pd.read_csv(run_dir / "points.csv")
    more = points[points["experiment"] == "activity"].copy()
    more["connections"], more["active"] = 2000, more["active"] * 2   # the same ratios at 2,000
    more["point_id"] = more["point_id"] + "-n2000"
    pd.concat([points, more]).to_csv(run_dir / "points.csv", index=False)
    c7 = {v.id: v for v in claims.verdicts(run_dir)}["C7"]
    assert "of 2,000 connections" in c7.numbers
    assert c7.values["activity_connections"] == 2000
