"""Load from several hosts: loadgen's workers on a Dask cluster of network-namespace hosts.

A server namespace (the echo server, the Dask scheduler, the loadgen parent)
and two client namespaces (one `dask worker` each) on a private segment
that exists only inside them (tests/netns.py). Real processes, real TCP.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

import netns
from bench.rundir.schema import POINT_COLUMNS
from bench.sweep.run import run
from netns import SERVER_IP, Hosts

WHY_NOT = netns.can_create()
needs_netns = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
PY = sys.executable


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    h = Hosts(2, tmp_path_factory.mktemp("hosts"))
    try:
        h.build()
        h.start_dask()
        yield h
    finally:
        h.close()


class NetnsServer:
    """`python -m servers epoll` inside the server namespace, on SERVER_IP."""

    def __init__(self, h: Hosts, tmp_path):
        self.stats = tmp_path / "stats.json"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", h.server, PY, "-m", "servers", "epoll", "--host", SERVER_IP,
             "--port", "0", "--stats", str(self.stats)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        word, _, port, _ = self.proc.stdout.readline().split()
        assert word == "READY"
        self.target = f"{SERVER_IP}:{port}"

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=20)
        return json.loads(self.stats.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server(hosts, tmp_path):
    s = NetnsServer(hosts, tmp_path)
    yield s
    s.kill()


def loadgen(h: Hosts, target: str, out, *extra: str, timeout: float = 60):
    return h.run(h.server, [PY, "-m", "loadgen", "--target", target, "--cluster", h.scheduler,
                            "--out", str(out), *extra], timeout)


@needs_netns
def test_two_client_hosts_echo_every_byte(hosts, server, tmp_path):
    out = tmp_path / "point.json"
    r = loadgen(hosts, server.target, out, "--connections", "40", "--active-ratio", "0.5",
                "--duration", "1", "--warmup", "0.3", "--procs", "2")
    assert r.returncode == 0, r.stderr
    stats = server.stop()
    doc = json.loads(out.read_text())
    assert not doc["failed"], doc["failure"]
    assert {w["host"] for w in doc["workers"]} == set(hosts.client_ips)
    assert {h["host"] for h in doc["cluster"]["hosts"]} == set(hosts.client_ips)
    assert all(h["kernel"] and h["python"] and h["packages"]["distributed"]
               for h in doc["cluster"]["hosts"])
    assert doc["connections"]["established"] == 40 == stats["accepted"]
    assert stats["bytes_in"] == sum(w["bytes_sent_total"] for w in doc["workers"]) > 0
    assert stats["bytes_out"] == doc["bytes_received_total"] == stats["bytes_in"]
    assert doc["latency_samples"] == sum(w["latency_samples"] for w in doc["workers"])
    assert doc["latency_samples"] == doc["messages"] > 0
    assert sum(w["messages"] for w in doc["workers"]) == doc["messages"]
    assert all(w["messages"] > 0 for w in doc["workers"])
    assert doc["start_skew_s"] is not None and doc["start_skew_s"] >= 0
    # the window is the intersection: no longer than any worker's own window
    assert 0 < doc["window_s"] <= min(w["window_s"] for w in doc["workers"]) + 1e-6


@needs_netns
def test_hosts_chooses_how_many_client_hosts(hosts, server, tmp_path):
    out = tmp_path / "point.json"
    r = loadgen(hosts, server.target, out, "--connections", "6", "--duration", "0.3",
                "--warmup", "0", "--hosts", "3")
    assert r.returncode == 2 and len(_lines(r.stderr)) == 1, r.stderr
    assert "--hosts 3" in r.stderr and "2 client host(s)" in r.stderr and not out.exists()
    r = loadgen(hosts, server.target, out, "--connections", "6", "--duration", "0.3",
                "--warmup", "0", "--hosts", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert [w["host"] for w in doc["workers"]] == hosts.client_ips[:1]
    assert doc["start_skew_s"] == 0 and server.stop()["bytes_in"] == doc["bytes_sent_total"]


TINY = """
repetitions = 1
warmup_s = 0.2
window_s = 0.5
mechanisms = ["poll", "epoll"]
seed = 3

[[experiment]]
kind = "scan"
connections = 12
active = 6
"""


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_netns
def test_bench_run_on_the_cluster_matches_local_schema(hosts, tmp_path):
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY)
    run(profile=str(profile), out=tmp_path / "local", log=io.StringIO())   # the local reference
    r = hosts.run(hosts.server, [PY, "-m", "bench", "run", "--profile", str(profile),
                                 "--out", str(tmp_path / "remote"), "--cluster", hosts.scheduler],
                  timeout=120)
    assert r.returncode == 0, r.stderr
    local_rows, rows = _rows(tmp_path / "local" / "points.csv"), _rows(tmp_path / "remote" /
                                                                     "points.csv")
    assert list(rows[0]) == list(local_rows[0]) == list(POINT_COLUMNS) + \
        [c for c in rows[0] if c not in POINT_COLUMNS]
    assert len(rows) == len(local_rows) == 2
    for row, ref in zip(rows, local_rows):
        assert row["error"] == "" and int(row["corrupt"]) == 0
        assert {k for k, v in row.items() if v != ""} >= {k for k, v in ref.items() if v != ""} \
            - {"noisy"}
        assert float(row["throughput_msgs_s"]) > 0
    meta = json.loads((tmp_path / "remote" / "meta.json").read_text())
    assert meta["state"] == "complete"
    assert meta["cluster"] == {"scheduler": hosts.scheduler, "server_host": SERVER_IP,
                               "hosts": None}
    assert sorted(h["host"] for h in meta["client_hosts"]) == hosts.client_ips
    assert all(h["kernel"] and h["cpu_count"] and h["python"] and h["packages"]["iomux-bench"]
               for h in meta["client_hosts"])
    for point in (tmp_path / "remote" / "raw").glob("*.json"):
        doc = json.loads(point.read_text())["loadgen"]
        assert {w["host"] for w in doc["workers"]} == set(hosts.client_ips)
        assert doc["target"].startswith(SERVER_IP + ":")
    report = (tmp_path / "remote" / "report.md").read_text()
    assert all(f"client host {ip}" in report for ip in hosts.client_ips)


@needs_netns
def test_killed_dask_worker_fails_the_point_and_leaves_nothing(hosts, server, tmp_path):
    out = tmp_path / "point.json"
    warmup_s, duration_s = 0.5, 4.0
    p = subprocess.Popen(
        ["ip", "netns", "exec", hosts.server, PY, "-m", "loadgen", "--target", server.target,
         "--cluster", hosts.scheduler, "--out", str(out), "--connections", "20",
         "--duration", str(duration_s), "--warmup", str(warmup_s), "--procs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    victim = hosts.clients[0]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                "loadgen.remote" in c for c in hosts.cmdlines()[victim]):
            time.sleep(0.05)
        assert any("loadgen.remote" in c for c in hosts.cmdlines()[victim])
        time.sleep(warmup_s + 1.0)                      # inside the window
        hosts.workers[victim].send_signal(signal.SIGKILL)
        # the point must end within warmup + duration + a few seconds of its start
        _, err = p.communicate(timeout=warmup_s + duration_s + 15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, err
    doc = json.loads(out.read_text())
    assert doc["failed"]
    assert "left the cluster" in doc["failure"] and hosts.client_ips[0] in doc["failure"]
    assert "point failed" in err
    left = hosts.cmdlines()
    assert left[victim] == []                           # the worker and its child are gone
    assert not [c for cs in left.values() for c in cs if "loadgen" in c]


def _run_local(argv, timeout=60):
    return subprocess.run([PY, "-m", "loadgen", *argv], capture_output=True, text=True,
                          timeout=timeout)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_unreachable_scheduler_is_one_line_exit_1():
    with socket.socket() as s:                  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    r = _run_local(["--target", "127.0.0.2:9", "--connections", "1", "--cluster", address,
                    "--allow-remote"])
    assert r.returncode == 2, r.stderr                  # loopback target: refused first
    r = _run_local(["--target", "10.123.0.1:9", "--connections", "1", "--cluster", address])
    assert r.returncode == 1, r.stderr
    assert len(_lines(r.stderr)) == 1, r.stderr
    assert address in r.stderr and "dask scheduler" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("address, words", [
    ("10.123.0.1:8786", "tcp://HOST:PORT"),
    ("tcp://10.123.0.1", "tcp://HOST:PORT"),
    ("tcp://10.123.0.1:99999", "port 1-65535"),
    ("tcp://:8786", "tcp://HOST:PORT"),
    ("udp://10.123.0.1:8786", "unknown scheme 'udp'"),
    ("inproc://x", "unknown scheme 'inproc'"),
])
def test_bad_cluster_address_is_usage(address, words):
    r = _run_local(["--target", "10.123.0.1:9", "--connections", "1", "--cluster", address])
    assert r.returncode == 2, r.stderr
    assert len(_lines(r.stderr)) == 1 and words in r.stderr and address in r.stderr, r.stderr


def test_single_host_path_does_not_import_distributed():
    code = ("import sys, loadgen.__main__, loadgen.run, loadgen.worker, loadgen.remote; "
            "print('distributed' in sys.modules)")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_bench_run_cluster_address_errors(tmp_path):
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY)
    bench = [PY, "-m", "bench", "run", "--profile", str(profile), "--out", str(tmp_path / "r")]
    r = subprocess.run([*bench, "--cluster", "udp://10.123.0.1:8786"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and len(_lines(r.stderr)) == 1 and "unknown scheme" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    r = subprocess.run([*bench, "--cluster", address], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(_lines(r.stderr)) == 1 and address in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()                # nothing created for a run that cannot go
    profile.write_text('cluster = "10.123.0.1"\n' + TINY)      # run-wide, before the tables
    r = subprocess.run(bench, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(_lines(r.stderr)) == 1, r.stderr
    assert "cluster: '10.123.0.1' is not allowed" in r.stderr and "tcp://HOST:PORT" in r.stderr
