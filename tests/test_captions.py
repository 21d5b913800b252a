"""Each caption the report writes says what its figure shows: one test per caption fix
(issue 11), each reading the rendered report.md of one synthetic run built to provoke it."""

import re

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from bench.report.compare import compare_runs  # noqa: E402
from bench.report.render import TITLES, write_report  # noqa: E402
from synthetic import make_run  # noqa: E402

MSGSIZE_LOST = ("select", "poll", "epoll")        # only epoll-et keeps msgsize points


@pytest.fixture(scope="module")
def report_md(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("captions") / "run", reps=3,
                       saturate_all=(("scan", "epoll"),) + tuple(("msgsize", m) for m in MSGSIZE_LOST),
                       server_saturate=(("scan", "select", 1000), ("scan", "poll", 1000)))
    write_report(run_dir)
    return (run_dir / "report.md").read_text()


def caption(md: str, name: str) -> str:
    """The reading under figure `name` in report.md."""
    section = md.split(f"### {TITLES[name]}\n")[1].split("\n### ")[0].split("\n## ")[0]
    return section.split(f"![{name}](plots/{name}.svg)")[1].strip()


def test_all_ready_caption_names_every_mechanism_and_leaves_out_capped_calls(report_md):
    text = caption(report_md, "micro_wait_all_ready")
    for mech in ("select", "poll", "epoll"):
        assert f"{mech} " in text
    assert "ns per returned event" in text
    assert "Left out of the fits, ringed: calls that returned fewer events than were ready (MAXEVENTS)" in text
    assert "epoll at N=2,000, 5,000, 10,000" in text


def test_msgsize_caption_names_the_set_aside_mechanisms_instead_of_only_one_reaching(report_md):
    text = caption(report_md, "msgsize")
    assert "Only one mechanism reached" not in text
    assert "Only epoll-et has usable points" in text
    for mech in MSGSIZE_LOST:
        assert f"{mech} all 9 of 9 rows (removed from this figure)" in text


def test_scan_wait_caption_says_it_is_wall_time_sleep_included(report_md):
    text = caption(report_md, "scan_wait")
    assert "ns of wall time per wait call (sleep included) per connection" in text
    assert "ns per connection," not in text


def test_scan_captions_say_which_mechanism_load_generator_saturation_removed(report_md):
    for name in ("scan_throughput", "scan_latency", "scan_wait"):
        text = caption(report_md, name)
        assert "Set aside, load generator saturated: epoll all 21 of 21 rows (removed from this figure)" in text


def test_cpu_caption_names_the_rows_a_saturated_server_lost(report_md):
    # activity (which compared against a saturation ceiling) is gone; the rule stays:
    # a server at >= 90% of its core never enters CPU per message, and the caption says so
    text = caption(report_md, "scan_cpu")
    assert "Left out of CPU per message, server at ≥ 90% of its core" in text
    assert "select 3 of 12 rows" in text and "poll 3 of 21 rows" in text


def test_comparisons_state_their_false_positive_rate(report_md):
    text = caption(report_md, "scan_throughput")
    assert "chance apart with no real difference 10% (3 vs 3 repetitions)" in text


def test_compare_does_not_report_a_tiny_significant_difference(tmp_path):
    # no noise: every CI is a point, so 40,000 vs 40,001-like gaps are "significant"; 0.01% is no difference
    kw = dict(experiments=("activity",), micro=False, noise=0.0, reps=3)
    a = make_run(tmp_path / "a", **kw)
    b = make_run(tmp_path / "b", cost_factor=1.0001, **kw)
    text = compare_runs(a, b)
    assert "no (significant, but within 5%)" in text
    assert "\n0 of " in text
    text = compare_runs(a, b, threshold=0.00001)
    assert "yes (worse in B" in text
