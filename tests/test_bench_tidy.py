"""tidy.to_row on hand-made raw outputs: every column, window deltas, noise, refusals."""

import pytest

from bench.sweep.plan import Point
from bench.rundir.schema import POINT_COLUMNS
from bench.sweep.tidy import noise_cpu_pct, to_row, window_delta

POINT = Point(id="scan-epoll-c1000-a10-s64-r2", experiment="scan", mechanism="epoll",
              connections=1000, active=10, msg_size=64, rate=None, rep=2, warmup_s=0.5,
              window_s=2.0, noise_threshold_pct=10.0).to_dict()

LOADGEN = {
    "format": 1, "window_s": 2.0, "messages": 40000, "throughput_msgs_s": 20000.0,
    "latency_us": {"p50": 400, "p90": 600, "p99": 900, "p999": 1500, "max": 3000, "mean": 420},
    "rate": {"target": None, "achieved": 20000.0},
    "connections": {"requested": 1000, "established": 1000, "active": 10, "idle": 990,
                    "idle_open_at_end": 990, "echoing": 10},
    "errors": {"reset": 1, "timeout": 2}, "corrupt": 0,
    "workers": [{"pid": 1, "messages": 40000, "cpu_user_s": 0.8, "cpu_sys_s": 0.4,
                 "cpu_util": 0.6}],
    "saturated": False, "failed": False, "failure": None,
    "window_start_monotonic_s": 100.0, "window_end_monotonic_s": 102.0, "connect_s": 0.25,
}
SNAPSHOTS = [
    {"cpu_user_s": 1.0, "cpu_sys_s": 0.5, "wait_calls": 1000, "wait_ns_total": 5_000_000,
     "events_total": 1500, "monotonic_s": 100.001},
    {"cpu_user_s": 1.6, "cpu_sys_s": 0.7, "wait_calls": 21000, "wait_ns_total": 45_000_000,
     "events_total": 41500, "monotonic_s": 102.002},
]
SERVER = {"rejected_fd_setsize": 0, "wait_calls": 30000, "cpu_user_s": 3.0, "cpu_sys_s": 1.0}
# other processes 0.5 s and steal 0.1 s over [99, 103]: 0.3 s in the window [100, 102]
CPU = {"samples": [
    {"t": 99.0, "others_s": 10.0, "steal_s": 1.0, "server_s": 1.0, "loadgen_s": 0.0},
    {"t": 103.0, "others_s": 10.5, "steal_s": 1.1, "server_s": 3.4, "loadgen_s": 2.0},
]}


def test_row_has_every_column_and_window_measures():
    row = to_row(POINT, LOADGEN, SERVER, SNAPSHOTS, CPU)
    assert row["connect_s"] == 0.25
    assert list(row) == POINT_COLUMNS
    assert row["point_id"] == POINT["id"] and row["rep"] == 2 and row["reference"] is False
    assert row["throughput_msgs_s"] == 20000.0 and row["p99_us"] == 900 and row["p999_us"] == 1500
    # window CPU = end - start snapshot, never the lifetime totals in SERVER
    assert row["server_cpu_user_s"] == pytest.approx(0.6)
    assert row["server_cpu_sys_s"] == pytest.approx(0.2)
    assert row["server_cpu_us_per_msg"] == pytest.approx(0.8 / 40000 * 1e6)
    assert row["server_cpu_user_us_per_msg"] == pytest.approx(15.0)
    assert row["server_cpu_sys_us_per_msg"] == pytest.approx(5.0)
    assert row["wait_calls"] == 20000
    assert row["wait_ns_per_call"] == pytest.approx(2000.0)
    assert row["events_per_call"] == pytest.approx(2.0)
    assert row["loadgen_cpu_max"] == 0.6 and row["loadgen_cpu_user_us_per_msg"] == pytest.approx(20.0)
    assert row["errors"] == 3 and row["corrupt"] == 0 and row["saturated"] is False
    assert row["established"] == 1000 and row["echoing"] == 10 and row["idle_open_at_end"] == 990
    assert row["duration_s"] == 2.0 and row["rejected_fd_setsize"] == 0
    assert row["server_saturated"] is False      # 0.8 s of CPU in a 2 s window
    assert row["noise_cpu_pct"] == pytest.approx(15.0) and row["noisy"] is True
    assert row["error"] is None


def test_refused_point_has_a_row_with_empty_measures():
    point = dict(POINT, mechanism="select", connections=5000, refused="refused: FD_SETSIZE")
    row = to_row(point, None, None, None, None)
    assert row["error"] == "refused: FD_SETSIZE"
    measures = POINT_COLUMNS[POINT_COLUMNS.index("throughput_msgs_s"):]
    assert all(row[c] is None for c in measures if c not in ("error", "reference"))


def test_failures_are_named_and_measures_kept_when_present():
    lg = dict(LOADGEN, failed=True, failure="connect timed out on 3 connections", corrupt=2)
    row = to_row(POINT, lg, SERVER, SNAPSHOTS, CPU, error=None)
    assert "loadgen failed: connect timed out" in row["error"] and "2 corrupt" in row["error"]
    assert row["throughput_msgs_s"] == 20000.0
    row = to_row(POINT, None, None, [], {"samples": []}, error="server: no READY within 10 s")
    assert row["error"] == "server: no READY within 10 s" and row["throughput_msgs_s"] is None


def test_missing_snapshots_leave_server_measures_empty_and_say_so():
    row = to_row(POINT, LOADGEN, SERVER, SNAPSHOTS[:1], CPU)
    assert row["server_cpu_us_per_msg"] is None and row["wait_calls"] is None
    assert "snapshots" in row["error"]


def test_window_delta_and_noise_edge_cases():
    assert window_delta(None) is None and window_delta(SNAPSHOTS[:1]) is None
    assert window_delta(SNAPSHOTS)["window_s"] == pytest.approx(2.001)
    samples = CPU["samples"]
    assert noise_cpu_pct(samples, 98.0, 102.0) is None                 # not covered
    assert noise_cpu_pct(samples, None, 102.0) is None
    quiet = [dict(s, others_s=10.0 - 0.01 * i, steal_s=0.0) for i, s in enumerate(samples)]
    assert noise_cpu_pct(quiet, 100.0, 102.0) == 0.0     # a reaped process's jitter clamps at 0


def test_fdlimit_drops_are_the_measure_not_a_failure():
    point = dict(POINT, id="fdlimit-select-c1100-a1100-s64-r1", experiment="fdlimit",
                 mechanism="select", connections=1100, active=1100)
    lg = dict(LOADGEN, failed=True, failure="connections lost: 82 active (closed_by_server 82)",
              errors={"closed_by_server": 82},
              connections=dict(LOADGEN["connections"], established=1100, echoing=1018))
    row = to_row(point, lg, dict(SERVER, rejected_fd_setsize=82), SNAPSHOTS, CPU)
    assert row["error"] is None
    assert (row["established"], row["echoing"], row["rejected_fd_setsize"]) == (1100, 1018, 82)
    assert row["errors"] == 82
    row = to_row(point, dict(lg, corrupt=1), SERVER, SNAPSHOTS, CPU)
    assert "loadgen failed" in row["error"]


@pytest.mark.parametrize("what, change", [
    ("more lost than select refused", dict(errors={"closed_by_server": 90})),
    ("a stall: messages unanswered", dict(errors={"closed_by_server": 82, "timeout": 3})),
    ("a worker crashed", dict(workers=[dict(LOADGEN["workers"][0], measured=False)])),
    ("a dropped open-loop backlog", dict(backlog_overflow_msgs=12)),
    ("connections that never opened", dict(errors={"closed_by_server": 82, "refused": 5})),
    ("a reset on a poll server that refused nothing", dict(errors={"reset": 1}, mechanism="poll")),
])
def test_fdlimit_excuses_only_what_the_server_refused_by_design(what, change):
    point = dict(POINT, id="fdlimit-select-c1100-a1100-s64-r1", experiment="fdlimit",
                 mechanism=change.pop("mechanism", "select"), connections=1100, active=1100)
    lg = dict(LOADGEN, failed=True, failure="connections lost: 82 active (closed_by_server 82)",
              errors={"closed_by_server": 82},
              connections=dict(LOADGEN["connections"], established=1100, echoing=1018))
    refused = 82 if point["mechanism"] == "select" else 0
    row = to_row(point, dict(lg, **change), dict(SERVER, rejected_fd_setsize=refused), SNAPSHOTS, CPU)
    assert row["error"] and "loadgen failed" in row["error"], what


def test_reference_without_wait_counters_keeps_its_cpu_and_counts_epoll_ctl():
    null_wait = [dict(s, wait_calls=None, wait_ns_total=None, events_total=None)
                 for s in SNAPSHOTS]
    row = to_row(dict(POINT, mechanism="uvloop"), LOADGEN, SERVER, null_wait, CPU)
    assert row["server_cpu_us_per_msg"] == pytest.approx(0.8 * 1e6 / 40000)
    assert row["wait_calls"] is None and row["wait_ns_per_call"] is None
    assert row["reference"] is True and not row["error"]

    toggles = [dict(SNAPSHOTS[0], ctl_calls=100), dict(SNAPSHOTS[1], ctl_calls=80100)]
    row = to_row(dict(POINT, mechanism="epoll-toggle"), LOADGEN, SERVER, toggles, CPU)
    assert row["ctl_calls_per_msg"] == pytest.approx(2.0)


def test_context_switches_per_message_from_the_window_snapshots():
    assert to_row(POINT, LOADGEN, SERVER, SNAPSHOTS, CPU)["ctx_switches_per_msg"] is None  # not recorded
    snaps = [dict(SNAPSHOTS[0], ctx_voluntary=500, ctx_involuntary=10),
             dict(SNAPSHOTS[1], ctx_voluntary=80500, ctx_involuntary=4010)]
    row = to_row(dict(POINT, mechanism="threads"), LOADGEN, SERVER, snaps, CPU)
    assert row["ctx_switches_per_msg"] == pytest.approx((80000 + 4000) / 40000)


def test_every_reference_row_is_recomputed_from_its_raw_json():
    """results/reference keeps each point's raw outputs: to_row on them gives the CSV row."""
    import csv
    import json
    from pathlib import Path

    ref = Path(__file__).resolve().parent.parent / "results" / "reference"
    with open(ref / "points.csv", newline="") as f:
        rows = {r["point_id"]: r for r in csv.DictReader(f)}
    raws = sorted((ref / "raw").glob("*.json"))
    assert raws and len(raws) == len(rows)
    for path in raws:
        raw = json.loads(path.read_text())
        again = to_row(raw["point"], raw["loadgen"], raw["server"], raw["snapshots"],
                       raw["cpu"], raw["error"])
        stored = rows[raw["point"]["id"]]
        for col in ("throughput_msgs_s", "p99_us", "server_cpu_us_per_msg", "wait_calls",
                    "saturated", "echoing", "error"):
            want = "" if again[col] is None else str(again[col])
            assert stored[col] == want, (path.name, col)


@pytest.mark.parametrize("cpu_end_s, clock, saturated", [
    (2.3, True, False),          # 0.8 s of CPU over the snapshots' 2.001 s: 40% of a core
    (3.4, True, True),           # 1.9 s: 95% of a core
    (3.2, True, False),          # 1.7 s: 85%
    (3.4, False, True),          # no clock in the snapshots: the loadgen's 2.0 s window
])
def test_server_saturated_is_the_servers_window_cpu_over_the_window(cpu_end_s, clock, saturated):
    end = dict(SNAPSHOTS[1], cpu_user_s=cpu_end_s - 0.7)
    snaps = [SNAPSHOTS[0], end]
    if not clock:
        snaps = [{k: v for k, v in s.items() if k != "monotonic_s"} for s in snaps]
    row = to_row(POINT, LOADGEN, SERVER, snaps, CPU)
    assert row["server_saturated"] is saturated
