"""bench.tasks.syscalls and the run's tasks: real servers, a real tracer, or the reason there is none."""

import csv
import json

import pytest

import servers
from bench.sweep import plan
from bench.sweep import profile
from bench.tasks import syscalls, tracer
from bench.cli import main
from bench.rundir.schema import SYSCALL_COLUMNS


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """Every mechanism traced once at a small point: (run_dir, syscalls.json)."""
    run_dir = tmp_path_factory.mktemp("syscalls")
    doc = syscalls.run_syscalls(run_dir, list(servers.MECHANISMS), [(20, 5, 64)],
                                warmup_s=0.1, window_s=0.3)
    return run_dir, doc


def _rows(run_dir):
    path = run_dir / "syscalls.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("mechanism", list(servers.MECHANISMS))
def test_the_wait_syscall_is_counted_or_the_reason_recorded(profiled, mechanism):
    run_dir, doc = profiled
    if doc["tracer"] is None:
        assert doc["reason"] and "no working tracer" in doc["reason"]
        return
    point = doc["points"][syscalls.point_label(mechanism, 20, 5, 64)]
    assert point["error"] is None, point["error"]
    family = syscalls.wait_family(mechanism)
    waits = [r for r in _rows(run_dir) if r["mechanism"] == mechanism
             and r["syscall"] in syscalls.WAIT_SYSCALLS[family]]
    assert waits and all(int(r["calls"]) > 0 and float(r["calls_per_msg"]) > 0 for r in waits)
    assert point["wait_syscall"] in syscalls.WAIT_SYSCALLS[family]
    # the perturbation is recorded: the same point untraced and traced
    assert point["throughput_untraced_msgs_s"] > 0 and point["throughput_traced_msgs_s"] > 0


def test_rows_follow_the_schema_and_name_the_tracer(profiled):
    run_dir, doc = profiled
    if doc["tracer"] is None:
        pytest.skip(f"no tracer here: {doc['reason']}")
    with open(run_dir / "syscalls.csv", newline="") as f:
        assert next(csv.reader(f)) == SYSCALL_COLUMNS
    rows = _rows(run_dir)
    assert {r["tracer"] for r in rows} == {doc["tracer"]}
    sends = [r for r in rows if r["syscall"] in ("sendto", "send", "write") and r["mechanism"] == "epoll"]
    assert sends, "an echo server sends"
    saved = json.loads((run_dir / "syscalls.json").read_text())
    assert saved["detection"]["tried"][doc["tracer"]]["works"]


def test_without_a_tracer_on_path_the_reason_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))      # a real machine without strace or perf
    doc = syscalls.run_syscalls(tmp_path / "run", ["epoll"], [(10, 1, 64)], window_s=0.1)
    assert doc["tracer"] is None
    assert "strace is not installed" in doc["reason"] and "perf is not installed" in doc["reason"]
    assert not (tmp_path / "run" / "syscalls.csv").exists()
    assert json.loads((tmp_path / "run" / "syscalls.json").read_text())["reason"] == doc["reason"]


STRACE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 58.34    0.072974           0     88493           sendto
 41.66    0.052107           0     88490        12 recvfrom
------ ----------- ----------- --------- --------- ----------------
100.00    0.125081           0    176983        12 total
"""

PERF = """
 Summary of events:

 python (101), 20 events, 50.0%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   epoll_wait            10      0    50.000     0.012     0.016     0.118      0.21%

 python (102), 20 events, 50.0%

   syscall            calls  errors  total       min       avg       max       stddev
   --------------- --------  ------ -------- --------- --------- ---------     ------
   epoll_wait             5      1    10.000     0.012     0.016     0.118      0.21%
   recvfrom               7      2     1.000     0.012     0.016     0.118      0.21%
"""


def test_parsers_read_the_summaries():
    assert tracer.parse_strace(STRACE) == {
        "sendto": {"calls": 88493, "seconds": 0.072974, "errors": 0},
        "recvfrom": {"calls": 88490, "seconds": 0.052107, "errors": 12}}
    got = tracer.parse_perf(PERF)               # threads summed
    assert got["epoll_wait"] == {"calls": 15, "seconds": pytest.approx(0.06), "errors": 1}
    assert got["recvfrom"]["calls"] == 7


def test_wait_bytes_follow_the_kernel_copies():
    assert syscalls.wait_bytes_per_call("select", 1000, None)["total"] == 6 * 8 * 16
    assert syscalls.wait_bytes_per_call("poll", 1000, None) == {"in": 8000, "out": 2000,
                                                               "total": 10000, "nfds": 1000}
    assert syscalls.wait_bytes_per_call("epoll", 1000, 2.0)["total"] == 24
    uring = syscalls.wait_bytes_per_call("io_uring", 1000, 2.0)
    assert uring["total"] == 0 and uring["shared_cqe_bytes"] == 32    # read in the mmap-ed ring


def test_io_uring_counts_its_enters_and_the_submissions_they_carry(profiled):
    run_dir, doc = profiled
    point = doc["points"].get(syscalls.point_label("io_uring", 20, 5, 64))
    if point is None or point["error"]:
        pytest.skip(f"io_uring not profiled here: {point and point['error']}")
    for part in ("untraced", "traced"):
        iv = point[part]
        assert iv["enter_calls"] >= iv["wait_calls"] > 0       # a full SQ adds enters
        assert iv["sqes_per_enter"] is not None and iv["enter_calls_per_msg"] > 0


@pytest.mark.parametrize("points, field", [
    ("[]", "points"),
    ("[{connections = 10}]", "points[1].active"),
    ("[{connections = 10, active = 20}]", "points[1].active"),
    ("[{connections = 10, active = 1, size = 64}]", "points[1].size"),
])
def test_bad_syscall_points_name_the_field(points, field):
    with pytest.raises(profile.ProfileError, match=r"experiment\[1\]\." + field.replace("[", r"\[").replace("]", r"\]")):
        profile.parse(f'[[experiment]]\nkind = "syscalls"\npoints = {points}\n')


@pytest.mark.parametrize("name", ["quick", "default", "full"])
def test_bundled_profiles_list_the_three_tasks(name):
    tasks = {p.id for p in plan.points(profile.load(name), 1) if isinstance(p, plan.Task)}
    assert {"probes", "syscalls", "memory"} <= tasks


TINY = """
description = "the three tasks at their smallest"
warmup_s = 0.1
window_s = 0.2
mechanisms = ["epoll"]

[[experiment]]
kind = "probes"

[[experiment]]
kind = "syscalls"
points = [{connections = 10, active = 2}]

[[experiment]]
kind = "memory"
connections = [200]
"""


def test_a_tiny_profile_fills_one_run_directory(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    assert main(["run", "--profile", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "run"
    meta = json.loads((out / "meta.json").read_text())
    assert {t: r["state"] for t, r in meta["tasks"].items()} == dict.fromkeys(
        ("probes", "syscalls", "memory"), "done")
    probes = json.loads((out / "probes.json").read_text())
    assert set(probes["probes"]) == {"C1", "C4", "C5", "C6", "C9", "C10"}
    assert (out / "syscalls.json").exists() and (out / "memory.json").exists()
    assert (out / "report.md").exists()     # bench run = run() + the report (cli.cmd_run)
