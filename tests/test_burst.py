"""The load generator's burst mode (the ready experiment) against real servers on 127.0.0.1.

A burst must reach the server whole: the server's own counters say how
many events its wait calls returned. No timed assertions: subprocess
timeouts only stop a hung test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.sweep.tidy import to_row
from loadgen import latency
from loadgen.gate import thread_states
from loadgen_fixtures import FixtureServer
from servers import MECHANISMS

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 60


def bursts(target: str, pid: int, n: int, k: int, b: int, *extra: str, out: Path | None = None,
           timeout: float = HANG_GUARD_S) -> tuple[int, dict | None, str]:
    """`python -m loadgen` in burst mode; (exit code, JSON document or None, stderr)."""
    argv = [sys.executable, "-m", "loadgen", "--target", target, "--connections", str(n),
            "--burst-size", str(k), "--bursts", str(b), "--signal-pid", str(pid), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, doc, proc.stderr


def snapshots(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ready_row(doc: dict, snaps: list[dict], n: int, k: int) -> dict:
    point = {"id": "ready-x", "experiment": "ready", "mechanism": "x", "connections": n,
             "active": k, "msg_size": 64, "rate": None, "rep": 1}
    return to_row(point, doc, None, snaps, None)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_burst_reaches_the_server_whole(start_server, tmp_path, mechanism):
    """The first wait call after each burst returns all K (N = 300; K = 1, 10, 200)."""
    snaps_path = tmp_path / "snaps.jsonl"
    server = start_server(mechanism, "--snapshots", str(snaps_path))
    sent = received = 0
    for k in (1, 10, 200):
        before = len(snapshots(snaps_path)) if snaps_path.exists() else 0
        code, doc, err = bursts(f"{server.host}:{server.port}", server.pid, 300, k, 3)
        assert code == 0, err
        assert not doc["failed"] and doc["corrupt"] == 0 and doc["saturated"] is False
        assert doc["messages"] == 3 * k and doc["latency_samples"] == 3 * k
        assert doc["bursts"]["completed"] == 3
        assert latency.decode(doc["bursts"]["drain_hdr"]).get_total_count() == 3
        snaps = snapshots(snaps_path)[before:]
        assert len(snaps) == 2
        row = ready_row(doc, snaps, 300, k)
        assert row["error"] is None
        assert row["wait_calls"] == 3                  # one call per burst ...
        assert row["events_per_call"] == k             # ... that returned the whole burst
        assert row["wait_calls_per_burst"] == 1
        assert row["ready_fraction"] == pytest.approx(k / 300)
        assert snaps[1]["bytes_in"] - snaps[0]["bytes_in"] == 3 * k * 64
        sent += doc["bytes_sent_total"]
        received += doc["bytes_received_total"]
    stats = server.stop()
    assert stats["bytes_in"] == sent and stats["bytes_out"] == received   # every byte came back


def test_ready_fraction_is_measured_not_nominal(start_server, tmp_path):
    """epoll returns at most MAXEVENTS (1024) per call: 1030 ready take two calls."""
    snaps_path = tmp_path / "snaps.jsonl"
    server = start_server("epoll", "--snapshots", str(snaps_path))
    code, doc, err = bursts(f"{server.host}:{server.port}", server.pid, 1030, 1030, 2)
    assert code == 0, err
    row = ready_row(doc, snapshots(snaps_path), 1030, 1030)
    assert row["wait_calls_per_burst"] == 2
    assert row["events_per_call"] == 515
    assert row["ready_fraction"] == pytest.approx(0.5)          # below K/N = 1
    assert row["server_cpu_us_per_msg"] > 0 and row["server_cpu_us_per_burst"] > 0


def test_the_control_burst_writes_nothing(start_server, tmp_path):
    """K = 0: stop and continue alone; epoll_wait's EINTR retry is no wait call of ours."""
    snaps_path = tmp_path / "snaps.jsonl"
    server = start_server("epoll", "--snapshots", str(snaps_path))
    code, doc, err = bursts(f"{server.host}:{server.port}", server.pid, 50, 0, 20)
    assert code == 0, err
    assert doc["messages"] == 0 and doc["bursts"]["completed"] == 20
    row = ready_row(doc, snapshots(snaps_path), 50, 0)
    assert row["error"] is None and row["wait_calls"] == 0
    assert row["server_cpu_us_per_msg"] is None and row["server_cpu_us_per_burst"] is not None


def test_a_corrupt_echo_fails_the_run():
    """Every byte is compared: a server that flips every 1000th byte is caught."""
    server = FixtureServer("flip")
    try:
        # 5 connections x (1 + 2 warm-up + 20) messages x 64 bytes: > 1000 bytes each
        code, doc, err = bursts(server.target, server.pid, 5, 5, 20)
    finally:
        server.stop()
    assert code == 1, err
    assert doc["failed"] and doc["corrupt"] == 1
    assert "differs" in doc["failure"]


def _wait_for_snapshot(path: Path, timeout_s: float = 20) -> None:
    end = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < end, "the bursts never started"
        time.sleep(0.02)


def test_server_killed_mid_burst_fails_and_leaves_nothing(start_server, tmp_path):
    snaps_path = tmp_path / "snaps.jsonl"
    server = start_server("poll", "--snapshots", str(snaps_path))
    argv = [sys.executable, "-m", "loadgen", "--target", f"{server.host}:{server.port}",
            "--connections", "200", "--burst-size", "100", "--bursts", "1000000",
            "--signal-pid", str(server.pid)]
    lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, start_new_session=True)
    try:
        _wait_for_snapshot(snaps_path)
        os.kill(server.pid, signal.SIGKILL)
        out, err = lg.communicate(timeout=HANG_GUARD_S)
    finally:
        if lg.poll() is None:
            os.killpg(lg.pid, signal.SIGKILL)
    assert lg.returncode == 1, err
    doc = json.loads(out)
    assert doc["failed"] and doc["failure"]
    assert not psutil.pid_exists(lg.pid) or psutil.Process(lg.pid).status() == "zombie"


def test_loadgen_stopped_mid_run_leaves_the_server_running(start_server, tmp_path):
    """SIGTERM to the load generator at any moment: the server is continued and still serves."""
    snaps_path = tmp_path / "snaps.jsonl"
    server = start_server("select", "--snapshots", str(snaps_path))
    argv = [sys.executable, "-m", "loadgen", "--target", f"{server.host}:{server.port}",
            "--connections", "300", "--burst-size", "300", "--bursts", "1000000",
            "--signal-pid", str(server.pid)]
    lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _wait_for_snapshot(snaps_path)
        for _ in range(20):                      # land inside a burst at least once
            time.sleep(0.01)
            if "T" in thread_states(server.pid):
                break
        lg.send_signal(signal.SIGTERM)
        lg.communicate(timeout=HANG_GUARD_S)
    finally:
        if lg.poll() is None:
            lg.kill()
    assert lg.returncode == 1
    time.sleep(0.05)
    assert "T" not in thread_states(server.pid)
    with server.connect() as s:                  # still echoing
        s.sendall(b"x" * 64)
        assert s.recv(64)
    server.stop()


@pytest.mark.parametrize("case", [
    ("--connections", "10", "--bursts", "3", "--signal-pid", "1"),              # no --burst-size
    ("--connections", "10", "--burst-size", "11", "--bursts", "3", "--signal-pid", "1"),
    ("--connections", "10", "--burst-size", "5", "--bursts", "3"),              # no --signal-pid
    ("--connections", "10", "--burst-size", "5", "--bursts", "3", "--signal-pid", "1",
     "--rate", "100"),
])
def test_bad_burst_options_exit_2_with_one_line(case):
    proc = subprocess.run([sys.executable, "-m", "loadgen", "--target", "127.0.0.1:9", *case],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=ROOT)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_run_measures_ready_points(tmp_path):
    """The sweep runs a ready point end to end: one row each, measures from the server."""
    profile = tmp_path / "ready.toml"
    profile.write_text('repetitions = 1\nmechanisms = ["poll"]\n[[experiment]]\nkind = "ready"\n'
                       'connections = 40\nready = [0, 8]\nbursts = 5\n')
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--profile", str(profile),
                           "--out", str(out)], capture_output=True, text=True,
                          timeout=HANG_GUARD_S * 2, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    import pandas as pd
    rows = pd.read_csv(out / "points.csv").set_index("active")
    assert rows["error"].isna().all(), rows["error"]
    assert (rows["bursts"] == 5).all() and not rows["saturated"].any()
    assert rows.loc[8, "wait_calls_per_burst"] == 1 and rows.loc[8, "events_per_call"] == 8
    assert rows.loc[8, "ready_fraction"] == pytest.approx(8 / 40)
    assert rows.loc[8, "server_cpu_us_per_msg"] > 0 and rows.loc[0, "server_cpu_us_per_burst"] > 0
