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
    assert [v.id for v in vs] == [f"C{i}" for i in range(1, 12)]
    for v in vs:
        assert v.verdict in claims.OUTCOMES and v.verdict != NOT_TESTED, v
        assert v.numbers and v.rule and v.reason and v.claim
        assert v.figure in FIGURES


def test_nothing_is_asserted_without_data(tmp_path):
    vs = claims.verdicts(make_run(tmp_path / "run", experiments=(), micro=False))
    assert {v.verdict for v in vs} == {NOT_TESTED}
    assert all(v.reason for v in vs)


def test_the_rules_quote_the_thresholds_of_claims_md():
    assert (rules.MIN_DISTINCT_N, rules.MIN_SPAN, rules.EXPONENT_BAND, rules.KNEE_RATIO) == (4, 10, (0.8, 1.25), 2)
    assert (rules.FLAT_WITHIN, rules.CONFIDENCE, rules.SERVER_SATURATED) == (0.25, 0.95, 0.9)
    assert (rules.GB, rules.GIB) == (10 ** 9, 2 ** 30)
    assert claims.is_flat(100, 125) and not claims.is_flat(100, 126)
    assert claims.differs((1, 2), (3, 4)) and not claims.differs((1, 3), (2, 4))
    # CLAIMS.md: "10% for two [min, max] intervals of 3, under 1% for 5 against 5"
    assert "10% (3 vs 3" in rules.RULE_COMPARE and "0.8% (5 vs 5" in rules.RULE_COMPARE


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


def test_c2_without_a_ci_is_not_tested_and_says_why(tmp_path):
    # two sizes: a slope, no CI, so neither growth nor flatness (it used to say "partly ... grows")
    v = verdict(tmp_path, "C2", micro_sizes=(10, 100), micro_slopes={"select": -1.0})
    assert v.verdict == NOT_TESTED
    assert "2 distinct N" in v.reason and "no slope CI" in v.reason


# C3: linear scan
@pytest.mark.parametrize("kw, outcome", [
    (dict(), SUPPORTED),
    (dict(micro_slopes=FLAT, scan_slopes=FLAT), REFUTED),
    (dict(micro_slopes={"poll": 0.0}, scan_slopes={"poll": 0.0}), PARTLY),
    (dict(micro=False, experiments=("activity",)), NOT_TESTED),
])
def test_c3(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C3", **kw).verdict == outcome


def test_c3_a_quadratic_micro_cost_is_not_linear(tmp_path):
    quad = {"poll": lambda n: 600 + 0.002 * n ** 2}
    v = verdict(tmp_path, "C3", micro_fn=quad)
    assert v.verdict == PARTLY and v.values["micro_poll_shape"] == "faster than linear"
    assert "micro poll (faster than linear)" in v.reason


def test_c3_reports_a_knee_with_both_slopes(tmp_path):
    knee = {"poll": lambda n: 600 + 40 * n + 130 * max(0, n - 1000)}
    v = verdict(tmp_path, "C3", micro_fn=knee, noise=0.01)
    assert v.values["micro_poll_knee_at"] == 1000
    assert v.values["micro_poll_slope_below"] == pytest.approx(40, rel=0.1)
    assert v.values["micro_poll_slope_above"] == pytest.approx(170, rel=0.1)
    assert "Knee (slope changes > 2×): micro poll at N=1,000" in v.reason


def test_c3_a_fit_with_too_few_n_is_named_and_does_not_count(tmp_path):
    # scan-rate with only 10 and 1,000 for select: too few N, so it neither passes nor fails
    v = verdict(tmp_path, "C3", micro_slopes={"poll": 0.0}, micro_sizes=(10, 1000), experiments=("scan",))
    assert "micro select (too few N" in v.reason
    assert "micro_select_shape" in v.values and v.values["micro_select_shape"] == "too few N"


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


def test_c6_per_event_cost_leaves_out_calls_capped_by_maxevents(tmp_path):
    # all ready at 2,000 ... 10,000: epoll returned only 1,024 events; a fit over them
    # would divide 1,024 events' cost by up to 10,000 and report far less per event
    v = verdict(tmp_path, "C6", probes=probes_doc(), syscalls=NO_MMAP, noise=0.01)
    assert v.values["capped_rows"] == 3
    assert v.values["per_returned_event_ns"] == pytest.approx(40.0, rel=0.05)
    assert "3 rows where epoll returned fewer events than were ready (MAXEVENTS" in v.numbers


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


def test_a_saturated_server_never_decides_a_cpu_verdict(tmp_path):
    # scan-rate epoll at 10,000: the server at its core's limit, 3x CPU per message; used, it
    # would make epoll degrade (+200%); set aside for CPU, epoll stays flat
    v = verdict(tmp_path, "C7", per_ready_ns=ALL_READY_WORSE, server_saturate=(("scan-rate", "epoll", 10000),))
    assert v.verdict == SUPPORTED
    assert v.values["scan-rate_epoll_change"] == pytest.approx(0.0, abs=0.1)
    assert "scan-rate: epoll 5 rows with the server saturated (N = 10,000), not used for CPU" in v.numbers


def test_a_saturated_server_is_named_in_the_activity_comparison(tmp_path):
    hot = tuple(("activity", m, 1000) for m in ("select", "poll"))
    v = verdict(tmp_path, "C7", server_saturate=hot)
    assert "server saturated (≥ 90% of its core) in every repetition, no CPU per message: select, poll" \
        in v.numbers
    assert "activity_worse" not in v.values


def test_load_generator_saturation_that_removes_a_mechanism_is_named(tmp_path):
    lost = tuple(("scan", "epoll", n) for n in (10, 100, 500, 1000, 2000, 5000, 10000))
    v = verdict(tmp_path, "C7", reps=1, saturate=lost)
    assert "scan: epoll removed: all 7 of 7 rows set aside (load generator saturated)" in v.numbers


def test_each_activity_comparison_states_its_false_positive_rate(tmp_path):
    v = verdict(tmp_path, "C7", reps=3, activity_cpu=WORSE)
    assert "chance apart with no real difference 10% (3 vs 3 repetitions)" in v.numbers


# C8: 100k connections per GB (10^9 B), from every slab cache + RSS
@pytest.mark.parametrize("kw, outcome", [
    (dict(memory={"epoll": 5200}), SUPPORTED),                 # 5,800 B: ~172k per GB, within 2x
    (dict(memory={"epoll": 400}), REFUTED),                    # far more; file-max's ~100k is only a note
    (dict(memory={"epoll": 400}, meta={"limits": {"fs.file-max": 9_000_000}}), REFUTED),
    (dict(memory={"epoll": 40_000}), REFUTED),                 # far fewer
    (dict(), NOT_TESTED),                                      # no memory.csv
])
def test_c8(tmp_path, kw, outcome):
    assert verdict(tmp_path, "C8", **kw).verdict == outcome


def test_c8_decides_from_every_slab_cache_not_the_four_named_ones(tmp_path):
    # 4,500 B in every cache + 600 B RSS: 196k per GB, supported; the four named
    # caches alone (65%: 2,925 B) + RSS would give 283k per GB, outside the 2x band
    v = verdict(tmp_path, "C8", memory={"epoll": 4500})
    assert v.verdict == SUPPORTED
    assert v.values["bytes_per_conn"] == pytest.approx(5100)
    assert v.values["conns_per_gb"] == pytest.approx(1e9 / 5100)
    assert v.values["conns_per_gib"] == pytest.approx(2 ** 30 / 5100)
    assert "per GB (10⁹ B)" in v.numbers and "per GiB" in v.numbers


def test_c8_kernel_limit_is_a_note_never_the_rule(tmp_path):
    # synthetic meta: fs.file-max 2.4M over 24 GiB = 100k per GiB, the folklore figure
    v = verdict(tmp_path, "C8", memory={"epoll": 400})
    assert v.verdict == REFUTED
    assert "Note, not the rule" in v.reason and "fs.file-max" in v.reason


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


# C7's busy half at the server level (ready experiment): READY_COST in synthetic.py puts
# epoll at 11 µs/msg against select/poll's 10 at K = N = 1000; a scan of N per burst
# makes select/poll dearer at small K, so the curves cross
@pytest.mark.parametrize("kw, busy, outcome", [
    (dict(ready_cost={}), True, SUPPORTED),
    (dict(ready_cost={"epoll": (10.0, 0.0)}), PARTLY, PARTLY),        # converge: intervals overlap
    (dict(ready_cost={"epoll": (8.0, 0.0)}), False, PARTLY),          # idle part yes, busy part no
    (dict(ready_cost={}, ready_ks={1000: (1, 10, 100)}), None, PARTLY),   # ready fraction ≤ 0.1
    (dict(ready_cost={}, reps=1), None, PARTLY),                      # no CI
])
def test_c7_busy_half_from_the_ready_experiment(tmp_path, kw, busy, outcome):
    # micro says the opposite (epoll better with all ready): the server level decides
    v = verdict(tmp_path, "C7", per_ready_ns=ALL_READY_BETTER, experiments=("scan",), **kw)
    assert v.verdict == outcome
    assert v.figure == "ready_cpu" and v.values["ready_decides"]
    said = {True: "yes", False: "no", PARTLY: "they converge", None: "not tested"}[busy]
    assert f"worse when nearly all active: {said}" in v.reason
    assert "micro, all 1,000 ready" in v.numbers                      # kernel-level context


def test_c7_reports_where_the_ready_curves_cross(tmp_path):
    v = verdict(tmp_path, "C7", ready_cost={}, experiments=(), micro=False)
    # select: 10 + 20·1000/K µs/msg (+5/K) against epoll's 11 + 5/K: equal at K ≈ 20
    x = v.values["ready_crossings"]["epoll/select/N=1000"]
    assert len(x) == 1 and 0.01 < x[0] < 0.04
    assert "epoll and select cross at ready fraction" in v.numbers
    v = verdict(tmp_path / "b", "C7", ready_cost={"epoll": (8.0, 0.0)}, experiments=(), micro=False)
    assert v.values["ready_crossings"]["epoll/select/N=1000"] == []
    assert "epoll and select never cross" in v.numbers
    assert "stop/continue alone (K=0)" in v.numbers


def test_crossings_interpolate_on_log_ready_fraction():
    from bench.analysis.ready import crossings
    a = pd.DataFrame({"active": [1, 10, 100], "ready_fraction": [0.001, 0.01, 0.1],
                      "server_cpu_us_per_msg": [5.0, 5.0, 5.0]})
    b = a.assign(server_cpu_us_per_msg=[9.0, 1.0, 1.0])
    assert crossings(a, b) == pytest.approx([10 ** -2.5])
    assert crossings(a, a.assign(server_cpu_us_per_msg=[6.0, 6.0, 6.0])) == []


@pytest.mark.parametrize("kw, outcome, holds", [
    (dict(ready_cost={}), SUPPORTED, True),
    (dict(ready_cost={"poll": (10.0, 0.0)}), PARTLY, False),         # poll's burst cost flat in N
])
def test_c3_server_level_form(tmp_path, kw, outcome, holds):
    v = verdict(tmp_path, "C3", experiments=("scan",), **kw)
    assert v.verdict == outcome
    assert ("as the claim predicts" in v.reason) == holds
    assert "ready poll, bursts of 1" in v.numbers


def test_c3_from_the_ready_experiment_alone_is_at_most_partly_supported(tmp_path):
    v = verdict(tmp_path, "C3", ready_cost={}, experiments=(), micro=False)
    assert v.verdict == PARTLY and "cannot show linearity" in v.reason


# C9-C11 on runs holding only what each reads: make_run and its analysis cost seconds each
C9_RUN = dict(experiments=("fdlimit",), micro=False)
C10_RUN = dict(experiments=("scan-rate",), micro=False, mechanisms=("epoll", "threads"),
               extra_cpu_us={"threads": 8.0}, memory={"epoll": 5200, "threads": 40000})
C11_RUN = dict(experiments=(), mechanisms=("select", "poll", "epoll"))


# C9: FD_SETSIZE and the word size
@pytest.mark.parametrize("kw, outcome", [
    (dict(probes=probes_doc()), REFUTED),                                   # 64-bit, 1024 everywhere
    (dict(probes=probes_doc(pointer_bits=32)), SUPPORTED),                  # 32 × 32 = 1024
    (dict(probes=probes_doc(fd_setsize=2048)), PARTLY),                     # 2048 in the library, wall at 1019
    (dict(), NOT_TESTED),                                                   # no probe: no word size
])
def test_c9(tmp_path, kw, outcome):
    v = verdict(tmp_path, "C9", **C9_RUN, **kw)
    assert v.verdict == outcome
    if outcome == REFUTED:
        assert "__FD_SETSIZE" in v.reason and "independent of the word size" in v.reason
        assert v.values["claimed"] == 2048 and v.values["fd_set_bits"] == 1024


# C10: thread per connection
@pytest.mark.parametrize("kw, outcome", [
    (dict(probes=probes_doc()), PARTLY),                                    # refused; costs more
    (dict(probes=probes_doc(extra_client="no answer")), SUPPORTED),         # waits for a free thread
    (dict(probes=probes_doc(), extra_cpu_us={"threads": -2.0},
          memory={"epoll": 60000, "threads": 3000}), REFUTED),              # refused, and cheaper
    (dict(experiments=(), memory=None), NOT_TESTED),                        # no probe, points or memory
])
def test_c10(tmp_path, kw, outcome):
    v = verdict(tmp_path, "C10", **{**C10_RUN, **kw})
    assert v.verdict == outcome
    if outcome == PARTLY:
        assert "refuses client T + 1" in v.reason and "10,000 connections" in v.reason
        assert v.values["memory_ratio"] > rules.THREADS_MEMORY_FACTOR      # RSS + kernel + threads


def test_c10_a_server_saturated_point_never_decides_cpu(tmp_path):
    run = make_run(tmp_path / "run", **{**C10_RUN, "memory": None})
    pts = pd.read_csv(run / "points.csv")
    pts["server_saturated"] = pts["mechanism"] == "threads"
    pts.to_csv(run / "points.csv", index=False)
    v = {v.id: v for v in claims.verdicts(run)}["C10"]
    assert v.verdict == NOT_TESTED and "threads" in v.numbers


# C11: who checks every socket
@pytest.mark.parametrize("kw, outcome", [
    (dict(), SUPPORTED),
    (dict(user_slopes={"poll": 2.0}), PARTLY),                              # poll's wrapper scans too
    (dict(user_slopes={"select": 0.0, "poll": 3.0, "epoll": 3.0}), REFUTED),
    (dict(micro=False), NOT_TESTED),
])
def test_c11(tmp_path, kw, outcome):
    v = verdict(tmp_path, "C11", **C11_RUN, **kw)
    assert v.verdict == outcome
    if outcome == SUPPORTED:
        assert "true of epoll alone" in v.reason and "C3" in v.reason
