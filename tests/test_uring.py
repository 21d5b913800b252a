"""io_uring's own rules: refusal with the reason, re-arming, submissions counted.

The behaviour every server shares (integrity, back-pressure, half-close, ...)
is tested over io_uring in test_servers.py through servers.MECHANISMS. Each
refusal runs in a child process, as `python -m servers io_uring` after a
prelude that takes away what io_uring needs.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from conftest import uring_unavailable
from helpers import recv_exactly, server_command
from test_servers import POOL, run_echo_clients


def refused(prelude: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*server_command(prelude), "io_uring", "--port", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""                           # refused before READY
    return r


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_package_unimportable_is_a_one_line_refusal():
    line = one_line(refused("import sys\nsys.modules['liburing'] = None"))
    assert "io_uring is not available here" in line
    assert "liburing" in line and "not importable" in line


def test_ring_the_kernel_refuses_is_a_one_line_refusal_with_the_errno():
    why = uring_unavailable()
    if why:
        pytest.skip(f"io_uring not available here: {why}")
    # above IORING_MAX_ENTRIES: io_uring_setup fails as it does where io_uring is disabled
    line = one_line(refused("import servers.uring_loop as u\nu.ENTRIES = 1 << 16"))
    assert "io_uring is not available here" in line
    assert "io_uring_setup" in line and "65536" in line and "EINVAL" in line


def test_multishot_polls_ended_by_a_full_completion_ring_are_rearmed(start_server):
    """A 4-entry SQ and 8-entry CQ: 50 busy connections overflow it all the time.

    The kernel ends a multishot poll it cannot post for; a loop that does not
    arm it again loses that connection and the clients never finish.
    """
    if why := uring_unavailable():
        pytest.skip(f"io_uring not available here: {why}")
    server = start_server("io_uring", prelude="import servers.uring_loop as u\nu.ENTRIES = 4")
    sent = run_echo_clients(server.address, n_conns=50, n_msgs=200)
    stats = server.stop()
    assert stats["bytes_in"] == stats["bytes_out"] == sent
    assert stats["rearmed"] > 0
    assert stats["enter_calls"] > stats["wait_calls"]      # a full SQ forced extra enters


def test_every_submission_is_counted(start_server):
    """One POLL_ADD per descriptor watched, one POLL_REMOVE per close, one per re-arm."""
    if why := uring_unavailable():
        pytest.skip(f"io_uring not available here: {why}")
    server = start_server("io_uring")
    conns = [server.connect() for _ in range(10)]
    for i, c in enumerate(conns):
        msg = bytes(POOL[:100 * (i + 1)])
        c.sendall(msg)
        assert recv_exactly(c, len(msg)) == msg
    for c in conns[:6]:
        c.close()                  # a POLL_REMOVE each, once seen; the rest end at shutdown
    stats = server.stop()
    for c in conns[6:]:
        c.close()
    removes = stats["closed"]["peer"] + stats["closed"]["reset"] + stats["closed"]["error"]
    assert stats["accepted"] == 10
    assert stats["sqes"] == 2 + stats["accepted"] + removes + stats["rearmed"]
    assert stats["enter_calls"] >= stats["wait_calls"] > 0


SWEEP = """
description = "io_uring refused, epoll measured"
repetitions = 1
warmup_s = 0.2
window_s = 0.4
mechanisms = ["epoll", "io_uring"]
seed = 3

[[experiment]]
kind = "scan-rate"
connections = [10, 20]
active = 5
msg_size = 64
rate = 500
"""


def test_a_sweep_without_io_uring_records_refused_rows_with_the_reason(tmp_path):
    profile, run_dir = tmp_path / "sweep.toml", tmp_path / "run"
    profile.write_text(SWEEP)
    code = ("import sys\nsys.modules['liburing'] = None\nfrom bench.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "run", "--profile", str(profile),
                        "--out", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(run_dir / "points.csv", newline="") as f:
        rows = {row["point_id"]: row for row in csv.DictReader(f)}
    uring = [row for row in rows.values() if row["mechanism"] == "io_uring"]
    epoll = [row for row in rows.values() if row["mechanism"] == "epoll"]
    assert len(uring) == len(epoll) == 2
    for row in uring:
        assert row["error"].startswith("refused: io_uring not available here: ")
        assert "liburing" in row["error"] and row["throughput_msgs_s"] == ""
    assert all(row["error"] == "" and float(row["throughput_msgs_s"]) > 0 for row in epoll)
