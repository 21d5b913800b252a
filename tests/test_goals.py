"""Speed goals and reference ratios are computed from the run's own rows."""

import pandas as pd

from bench.analysis.goals import reference_ratios, speed_goals


def row(experiment, mechanism, cpu, **kw):
    return {"experiment": experiment, "mechanism": mechanism, "server_cpu_us_per_msg": cpu,
            "server_cpu_user_us_per_msg": cpu * 0.3, "server_cpu_sys_us_per_msg": cpu * 0.7,
            "throughput_msgs_s": 40000, "duration_s": 1.0, "msg_size": 64, "connections": 100,
            "saturated": False, "noisy": False, "error": "", **kw}


def test_epoll_against_uvloop_met_and_not_met():
    meta = {"profile": {"name": "default"}, "runs": [{"elapsed_s": 600}]}
    for epoll_cpu, verdict in ((10.0, "yes"), (13.0, "no")):
        pts = pd.DataFrame([row("references", "epoll", epoll_cpu), row("references", "uvloop", 12.0),
                            row("references", "uvloop", 12.0, noisy=True, server_cpu_us_per_msg=1.0)])
        g = speed_goals(pts, meta).set_index("goal")
        assert g.loc["epoll CPU per message ≤ uvloop's", "met"] == verdict
        assert g.loc["the default profile within 15 min", "met"] == "yes"   # 600 s < 900 s


def test_loadgen_budget_and_connect_goals_read_their_own_rows():
    pts = pd.DataFrame([
        row("msgsize", "epoll", 4.0, saturated=True, loadgen_cpu_user_us_per_msg=1.5),  # 1.5 > 1.2
        row("scan", "epoll", 4.0, connections=19000, connect_s=0.4),
        row("scan", "poll", 4.0, connections=19000, connect_s=1.3),
    ])
    meta = {"profile": {"name": "quick"}, "runs": [{"elapsed_s": 100}, {"elapsed_s": 50}]}
    g = speed_goals(pts, meta).set_index("goal")
    assert g.loc["load generator user CPU per message ≤ epoll server's", "met"] == "no"
    assert g.loc["the quick profile within 2 min", "met"] == "no"             # 150 s in two runs
    assert g.loc["19,000 connections open in < 1 s", "met"] == "no"          # 1.3 s on one point
    assert g.loc["epoll CPU per message ≤ uvloop's", "met"] == "not measured"


def test_reference_ratios_label_references_and_divide_by_epoll():
    pts = pd.DataFrame([row("references", m, c) for m, c in
                        (("uvloop", 8.0), ("epoll", 10.0), ("threads", 20.0), ("poll", 12.5))])
    r = reference_ratios(pts).set_index("server")
    assert list(r.index) == ["poll", "epoll", "threads (reference)", "uvloop (reference)"]
    assert r.loc["uvloop (reference)", "epoll ÷ this"] == 1.25
    assert r.loc["threads (reference)", "epoll ÷ this"] == 0.5
