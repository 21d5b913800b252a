"""The load generator against real servers on 127.0.0.1: counts, bytes, behaviour.

No timed assertions: subprocess timeouts below only stop a hung test.
"""

from __future__ import annotations

import json
import os
import random
import resource
import stat
import subprocess
import sys
import time
from array import array
from pathlib import Path

import psutil
import pytest

from loadgen import latency
from loadgen.spec import SpecError, parse_cpus, parse_target
from loadgen_fixtures import FixtureServer
from servers import MECHANISMS

ROOT = Path(__file__).resolve().parent.parent
# every phase's deadline: connect 5 s + warmup + duration + drain 2 s + 3 s; then slack
HANG_GUARD_S = 30

# DESIGN.md, Formats: Load generator
DESIGN_FIELDS = ["target", "config", "window_s", "messages", "bytes_sent", "bytes_received",
                 "bytes_sent_total", "bytes_received_total", "throughput_msgs_s", "latency_us",
                 "latency_hdr", "rate", "connections", "connect_s", "errors", "corrupt",
                 "workers", "saturated", "failed", "failure", "timeline"]


def loadgen(target: str, *args: str, timeout: float = HANG_GUARD_S) -> tuple[int, dict | None, str]:
    """Run `python -m loadgen`; return (exit code, JSON document or None, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "loadgen", "--target", target, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, doc, proc.stderr


def assert_consistent(doc: dict) -> None:
    """What every document must satisfy, good point or failed."""
    assert doc["format"] == 1
    for field in DESIGN_FIELDS:
        assert field in doc, field
    assert set(doc["latency_us"]) == {"p50", "p90", "p99", "p999", "max", "mean"}
    assert {"requested", "established", "active", "idle", "idle_open_at_end",
            "echoing"} <= set(doc["connections"])
    assert sum(t["messages"] for t in doc["timeline"]) == doc["messages"]
    assert sum(t["bytes"] for t in doc["timeline"]) == doc["bytes_received"]
    assert sum(w["messages"] for w in doc["workers"]) == doc["messages"]
    assert latency.decode(doc["latency_hdr"]).get_total_count() == doc["latency_samples"]
    assert doc["latency_samples"] == doc["messages"]
    assert doc["corrupt"] == doc["errors"]["corrupt"]
    assert doc["failed"] == (doc["failure"] is not None)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_closed_loop_against_every_server(start_server, mechanism):
    server = start_server(mechanism)
    code, doc, err = loadgen(f"{server.host}:{server.port}", "--connections", "1000",
                             "--active-ratio", "0.1", "--msg-size", "64", "--duration", "2",
                             "--warmup", "0.5", "--procs", "2")
    assert code == 0, err
    assert_consistent(doc)
    assert doc["messages"] > 0
    assert not any(doc["errors"].values()), doc["errors"]
    assert doc["corrupt"] == 0 and not doc["failed"]
    c = doc["connections"]
    assert (c["established"], c["active"], c["idle"]) == (1000, 100, 900)
    assert c["idle_open_at_end"] == 900
    assert c["echoing"] == 100
    assert doc["window_s"] > 0 and doc["latency_us"]["p50"] is not None
    stats = server.stop()
    assert stats["bytes_in"] == doc["bytes_sent_total"]
    assert stats["bytes_out"] == doc["bytes_received_total"]
    assert stats["accepted"] == 1000


def test_open_loop_overload_shows_as_latency(start_server):
    server = start_server("epoll")
    common = ["--connections", "20", "--active-ratio", "1", "--warmup", "0.2", "--duration", "1"]
    code, low, err = loadgen(f"{server.host}:{server.port}", *common, "--rate", "2000")
    assert code == 0, err
    code, over, err = loadgen(f"{server.host}:{server.port}", *common, "--rate", "500000",
                              "--arrivals", "poisson")
    assert code == 0, err
    for doc in (low, over):
        assert_consistent(doc)
        assert not any(doc["errors"].values()), doc["errors"]
    assert over["rate"]["target"] == 500000
    assert over["rate"]["achieved"] < over["rate"]["target"]
    # latency counts from the intended send time: the backlog shows, not fewer samples
    assert over["latency_us"]["p99"] > 10 * low["latency_us"]["p99"]
    assert over["rate"]["scheduled"] > over["rate"]["achieved"]


def test_corrupt_echo_fails_the_point():
    fixture = FixtureServer("flip")
    try:
        code, doc, err = loadgen(fixture.target, "--connections", "10", "--active-ratio", "1",
                                 "--duration", "1", "--warmup", "0.2", "--msg-size", "100")
    finally:
        fixture.stop()
    assert code == 1
    assert_consistent(doc)
    assert doc["corrupt"] > 0 and doc["failed"]
    assert "corrupt" in doc["failure"]
    assert doc["messages"] > 0                 # 9 messages in 10 are intact and counted
    assert err.strip().splitlines()[-1].startswith("python -m loadgen: error: point failed")


def test_server_that_stops_reading_ends_the_run():
    fixture = FixtureServer("stall", "1.0")
    try:
        code, doc, err = loadgen(fixture.target, "--connections", "20", "--active-ratio", "0.5",
                                 "--duration", "2", "--warmup", "0.5")
    finally:
        fixture.stop()
    assert code == 1
    assert_consistent(doc)
    assert doc["failed"]
    assert "stopped answering" in doc["failure"]
    assert doc["errors"]["timeout"] == 10           # every active connection waits in vain
    assert doc["unanswered_msgs"] == 10
    assert doc["connections"]["idle_open_at_end"] == 10
    assert sum(t["messages"] for t in doc["timeline"][-5:]) == 0


def test_every_connection_lost_in_the_window_keeps_its_latencies():
    # each connection gets 50 echoes of 64 bytes, then the server closes it: the
    # window (no warmup) loses every connection long before its planned end
    fixture = FixtureServer("hangup", str(50 * 64))
    try:
        code, doc, err = loadgen(fixture.target, "--connections", "10", "--active-ratio", "1",
                                 "--duration", "20", "--warmup", "0")
    finally:
        fixture.stop()
    assert code == 1
    # a close with the next message unread in its buffer is a reset, not a FIN
    assert doc["errors"]["closed_by_server"] + doc["errors"]["reset"] == 10
    assert doc["messages"] == 10 * 50
    assert doc["latency_samples"] == doc["messages"]
    assert_consistent(doc)


def test_out_to_a_fifo_writes_through_and_never_replaces_it(start_server, tmp_path):
    server = start_server("epoll")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    # a reader before the run, so the writer's open does not block; the document
    # (a 1 s window) is far below the pipe's 64 KiB, so nobody waits on the reader
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        code, doc, err = loadgen(f"{server.host}:{server.port}", "--connections", "4",
                                 "--duration", "1", "--warmup", "0.2", "--out", str(fifo))
        assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced"  # as /dev/null
        text = os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
    assert code == 0, err
    assert doc is None                         # nothing on stdout: it went to --out
    assert json.loads(text)["messages"] > 0
    assert sorted(p.name for p in tmp_path.iterdir() if "fifo" in p.name) == ["out.fifo"]


def test_retry_queue_serves_a_short_backoff_queued_behind_a_long_one():
    from loadgen.connect import Conn, RetryQueue, backoff_ns
    queue = RetryQueue()
    slow, fast, fast2 = Conn(0, True), Conn(1, True), Conn(2, True)
    queue.push(backoff_ns(5), slow)           # the 5th failure waits 160 ms...
    queue.push(backoff_ns(1), fast)           # ...the 1st only 10 ms, queued behind it
    queue.push(backoff_ns(2), fast2)
    assert queue.next_ns() == backoff_ns(1)
    assert queue.pop_due(backoff_ns(1), limit=10) == [fast]
    assert queue.pop_due(backoff_ns(4), limit=10) == [fast2]
    assert queue.pop_due(backoff_ns(5), limit=0) == []      # the window is full
    assert len(queue) == 1
    assert queue.pop_due(backoff_ns(5), limit=10) == [slow]
    assert len(queue) == 0


def test_histogram_merge_equals_one_histogram():
    rng = random.Random(7)
    values_ns = [int(rng.lognormvariate(12, 1.5)) for _ in range(30_000)]
    parts = [values_ns[i::3] for i in range(3)]
    encoded = []
    for part in parts:
        h = latency.new_histogram()
        latency.record_ns(h, array("q", part))
        encoded.append(latency.encode(h))
    merged = latency.merge(encoded + [latency.encode(latency.new_histogram())])
    whole = latency.new_histogram()
    latency.record_ns(whole, array("q", values_ns))
    assert merged.equals(whole)
    assert latency.summary(merged) == latency.summary(whole)
    assert merged.get_total_count() == len(values_ns)


def test_15000_idle_connections_over_two_processes(start_server):
    server = start_server("epoll")
    code, doc, err = loadgen(f"{server.host}:{server.port}", "--connections", "15000",
                             "--active-ratio", "0", "--duration", "1", "--warmup", "0",
                             "--procs", "2")
    assert code == 0, err
    assert_consistent(doc)
    c = doc["connections"]
    assert c["established"] == 15000
    assert c["idle_open_at_end"] == 15000
    assert [w["established"] for w in doc["workers"]] == [7500, 7500]
    assert not doc["failed"]


def test_select_past_fd_setsize_counts_closed_connections(start_server):
    """select closes connections whose descriptor is >= 1024; the rest are served."""
    server = start_server("select")
    code, doc, err = loadgen(f"{server.host}:{server.port}", "--connections", "1100",
                             "--active-ratio", "0.1", "--duration", "1", "--warmup", "0.3",
                             "--procs", "2")
    stats = server.stop()
    assert code == 1
    assert_consistent(doc)
    lost = sum(doc["errors"][k] for k in ("closed_by_server", "reset", "short_read"))
    assert lost == stats["rejected_fd_setsize"] > 0
    c = doc["connections"]
    assert c["established"] == 1100
    assert c["idle_open_at_end"] + c["active_open_at_end"] == 1100 - lost
    assert 0 < c["echoing"] < 110
    assert doc["messages"] > 0 and doc["corrupt"] == 0
    assert "connections lost" in doc["failure"]


def test_pipelined_large_messages(start_server):
    """Partial reads and writes: 100 kB messages, 3 in flight, every byte verified."""
    server = start_server("epoll")
    code, doc, err = loadgen(f"{server.host}:{server.port}", "--connections", "4",
                             "--active-ratio", "1", "--msg-size", "100000", "--pipeline", "3",
                             "--duration", "1", "--warmup", "0.2")
    assert code == 0, err
    assert_consistent(doc)
    assert doc["messages"] > 0 and not any(doc["errors"].values())
    stats = server.stop()
    assert stats["bytes_in"] == doc["bytes_sent_total"]


def test_signal_pid_brackets_the_window(start_server, tmp_path):
    snaps = tmp_path / "snaps.jsonl"
    server = start_server("poll", "--snapshots", str(snaps))
    code, doc, err = loadgen(f"{server.host}:{server.port}", "--connections", "10",
                             "--duration", "1", "--warmup", "0.3", "--signal-pid",
                             str(server.pid))
    assert code == 0, err
    server.stop()
    first, second = [json.loads(line) for line in snaps.read_text().splitlines()]
    assert doc["signals"]["start_monotonic_s"] == pytest.approx(first["monotonic_s"], abs=1.0)
    assert first["monotonic_s"] < second["monotonic_s"]
    assert doc["window_start_monotonic_s"] < doc["window_end_monotonic_s"]
    assert first["bytes_in"] < second["bytes_in"]


def test_workers_die_with_the_parent(start_server):
    server = start_server("epoll")
    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "--target",
                             f"{server.host}:{server.port}", "--connections", "20",
                             "--duration", "60", "--procs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 20
        while len(parent.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = parent.children()
        assert len(workers) == 2
        proc.kill()                                   # SIGKILL: no finally block runs
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()


BAD_INPUTS = {
    "more descriptors than the limit": ["--connections", "{too_many}", "--procs", "2"],
    "ratio above 1": ["--connections", "10", "--active-ratio", "1.5"],
    "ratio below 0": ["--connections", "10", "--active-ratio", "-0.1"],
    "unparseable target": ["--connections", "10", "--target", "nonsense"],
    "port out of range": ["--connections", "10", "--target", "127.0.0.1:70000"],
    "pipeline below 1": ["--connections", "10", "--pipeline", "0"],
    "message below the framing": ["--connections", "10", "--msg-size", "15"],
    "remote target": ["--connections", "10", "--target", "192.0.2.1:9000"],
    "zero rate": ["--connections", "10", "--rate", "0"],
    "rate without active": ["--connections", "10", "--active-ratio", "0", "--rate", "10"],
    "unknown option": ["--connections", "10", "--frobnicate"],
    "not a number": ["--connections", "ten"],
    "bad cpu list": ["--connections", "10", "--cpus", "3-1"],
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(case):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    args = [a.format(too_many=2 * hard + 2) for a in BAD_INPUTS[case]]
    target = "127.0.0.1:9"
    if "--target" in args:
        i = args.index("--target")
        target = args.pop(i + 1)
        args.pop(i)
    code, doc, err = loadgen(target, *args)
    assert code == 2, err
    assert doc is None
    assert len(err.strip().splitlines()) == 1, err
    assert "error" in err


def test_parse_target_and_cpus():
    assert parse_target("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert parse_target("[::1]:80") == ("::1", 80)
    assert parse_cpus("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_cpus("5") == (5,)
    for bad in ("127.0.0.1", ":80", "::1:80", "host:port"):
        with pytest.raises(SpecError):
            parse_target(bad)
    for bad in ("a", "3-1", "1,,2", "-1"):
        with pytest.raises(SpecError):
            parse_cpus(bad)
