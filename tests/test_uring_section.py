"""The report's "Beyond the explanation: io_uring" section, from synthetic runs built for each reading."""

import pandas as pd

from bench.analysis import uring
from bench.rundir.store import load_run
from synthetic import MECHS, make_run

URING_RUN = dict(experiments=("scan-rate",), micro=False, mechanisms=MECHS + ("io_uring",),
                 ready_cost={"io_uring": (14.0, 0.0)},
                 syscalls={"io_uring": {"io_uring_enter": 0.3, "recvfrom": 2.0, "sendto": 1.0},
                           "epoll-et": {"epoll_wait": 0.2, "recvfrom": 2.0, "sendto": 1.0}})


def test_dearer_io_uring_is_said_per_connection_count_burst_size_and_syscall(tmp_path):
    run = load_run(make_run(tmp_path / "run", extra_cpu_us={"io_uring": 4.0}, **URING_RUN))
    idle, ready, calls = uring.section(run)
    assert idle.startswith("As idle connections grow") and "io_uring" in idle and "flat" in idle
    assert "against epoll-et: dearer at 10 connections" in idle
    assert "(chance of intervals apart with no real difference 0.8% (5 vs 5 repetitions))" in idle
    assert "against epoll: dearer at K = 1" in ready and "measured ready fraction" in ready
    assert "io_uring 3.3 (0.3 io_uring_enter)" in calls and "epoll-et 3.2 (0.2 epoll_wait)" in calls


def test_cheaper_io_uring_is_said_cheaper(tmp_path):
    run = load_run(make_run(tmp_path / "run", extra_cpu_us={"io_uring": -3.0},
                            **{**URING_RUN, "ready_cost": {"io_uring": (6.0, 0.0)}}))
    idle, ready, _ = uring.section(run)
    assert "against epoll-et: cheaper at 10 connections" in idle
    assert "cheaper at K = 1,000" in ready and "against epoll: cheaper at K = 1," in ready


def test_no_io_uring_rows_no_section_and_refused_rows_say_why(tmp_path):
    run = load_run(make_run(tmp_path / "plain", experiments=("scan-rate",), micro=False))
    assert uring.section(run) == []
    run_dir = make_run(tmp_path / "refused", experiments=("scan-rate",), micro=False,
                       mechanisms=MECHS + ("io_uring",))
    points = pd.read_csv(run_dir / "points.csv")
    mine = points["mechanism"] == "io_uring"
    points.loc[mine, "error"] = "refused: io_uring not available here: io_uring_setup: EPERM"
    points.loc[mine, "server_cpu_us_per_msg"] = None
    points.to_csv(run_dir / "points.csv", index=False)
    (text,) = uring.section(load_run(run_dir))
    assert text == "io_uring was not available here: refused: io_uring not available here: " \
                   "io_uring_setup: EPERM."
