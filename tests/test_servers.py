"""The echo servers against scripted clients: real sockets on 127.0.0.1.

Every test runs against every mechanism unless its subject is one mechanism's
rule (select's FD_SETSIZE). No timing thresholds: assertions are on bytes,
counts and behaviour; deadlines only stop a broken server from hanging the suite.
"""

from __future__ import annotations

import json
import math
import os
import random
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

import pytest

from helpers import raise_fd_limit, recv_exactly
from servers import MECHANISMS, REFERENCES
from servers.core import HIGH_WATER

DEADLINE_S = 60          # a hang guard, never an assertion on speed
POOL = random.Random(1).randbytes(1 << 20) * 2   # payloads are slices of this


def payload(rng: random.Random, size: int) -> memoryview:
    off = rng.randrange(len(POOL) // 2)
    return memoryview(POOL)[off:off + size]


def log_uniform_size(rng: random.Random, lo: int = 1, hi: int = 65536) -> int:
    """Sizes spread evenly over the decades, so 1 B and 64 KiB messages both occur."""
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))


def run_echo_clients(address, n_conns: int, n_msgs: int, seed: int = 7) -> int:
    """n_conns clients, each echoing n_msgs messages of random size one at a time.

    Every echoed byte is compared, in order, with what that connection sent.
    Returns the total bytes sent.
    """
    rng = random.Random(seed)
    sel = selectors.DefaultSelector()
    state = {}                     # sock -> [messages left, unsent view, expected bytearray]
    for _ in range(n_conns):
        s = socket.create_connection(address, timeout=DEADLINE_S)
        s.setblocking(False)
        state[s] = [n_msgs, memoryview(b""), bytearray()]
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sent_total = 0
    deadline = time.monotonic() + DEADLINE_S
    while state:
        assert time.monotonic() < deadline, f"{len(state)} connections unfinished"
        for key, ev in sel.select(1.0):
            s = key.fileobj
            left, unsent, expected = st = state[s]
            if ev & selectors.EVENT_WRITE and unsent:
                n = s.send(unsent)
                st[1] = unsent = unsent[n:]
                sent_total += n
            if ev & selectors.EVENT_READ:
                data = s.recv(1 << 17)
                assert data, "server closed a healthy connection"
                assert expected[:len(data)] == data, "echo differs from what was sent"
                del expected[:len(data)]
            if not unsent and not expected:          # previous message fully echoed
                if left == 0:
                    sel.unregister(s)
                    s.close()
                    del state[s]
                    continue
                msg = payload(rng, log_uniform_size(rng))
                st[0], st[1] = left - 1, msg
                expected += msg
            sel.modify(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if st[1] else 0))
    sel.close()
    return sent_total


@pytest.mark.parametrize("mechanism", [*MECHANISMS, *REFERENCES])
def test_integrity_every_byte_echoed_in_order(start_server, mechanism):
    server = start_server(mechanism)
    sent = run_echo_clients(server.address, n_conns=200, n_msgs=500)
    stats = server.stop()
    assert stats["bytes_in"] == stats["bytes_out"] == sent
    assert stats["accepted"] == 200
    # closes the server had not yet seen at SIGTERM count as shutdown
    assert stats["closed"]["peer"] + stats["closed"]["shutdown"] == 200
    assert stats["closed"]["reset"] == stats["closed"]["error"] == 0


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_back_pressure_bounds_server_memory(start_server, tmp_path, mechanism):
    snaps = tmp_path / "snaps.jsonl"
    server = start_server(mechanism, "--snapshots", str(snaps))
    rss_at_start = server.rss_bytes()
    total = 64 << 20
    data = (POOL * 33)[:total]
    client = server.connect(timeout=DEADLINE_S)

    sender = threading.Thread(target=client.sendall, args=(data,), daemon=True)
    sender.start()
    time.sleep(2)                                   # the client does not read for 2 s
    os.kill(server.pid, signal.SIGUSR1)
    echoed = recv_exactly(client, total)
    sender.join(DEADLINE_S)
    client.close()
    stats = server.stop()

    assert echoed == data
    during = json.loads(snaps.read_text().splitlines()[0])
    # The server stopped reading while the client did not: it took in far less
    # than was offered (kernel socket buffers hold the rest).
    assert during["bytes_in"] < total // 2
    # And it held at most ~HIGH_WATER of echo in user space, not the 64 MiB.
    assert stats["peak_rss_bytes"] - rss_at_start < 16 << 20
    assert HIGH_WATER < 16 << 20
    assert stats["bytes_in"] == stats["bytes_out"] == total


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_half_close_flushes_then_eof(start_server, mechanism):
    server = start_server(mechanism)
    client = server.connect()
    data = bytes(POOL[:300_000])
    client.sendall(data)
    client.shutdown(socket.SHUT_WR)
    received = bytearray()
    while chunk := client.recv(1 << 16):             # ends only at the server's FIN
        received += chunk
    client.close()
    assert received == data
    stats = server.stop()
    assert stats["closed"]["peer"] == 1             # closed by the server after the flush
    assert stats["bytes_out"] == len(data)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_fin_queued_behind_data_is_still_seen(start_server, mechanism):
    """Data and FIN both queued before the server wakes: one wake-up for both.

    An edge-triggered loop that stops reading at a short read never sees the
    FIN (no new edge comes) and leaves the connection open in CLOSE-WAIT.
    """
    server = start_server(mechanism)
    clients = [server.connect() for _ in range(20)]
    os.kill(server.pid, signal.SIGSTOP)             # hold the server while both arrive
    try:
        for i, c in enumerate(clients):
            c.sendall(b"last words %02d" % i)
            c.shutdown(socket.SHUT_WR)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    for i, c in enumerate(clients):
        assert recv_exactly(c, 13) == b"last words %02d" % i
        assert c.recv(1) == b""                     # the server closed after the echo
        c.close()
    stats = server.stop()
    assert stats["closed"]["peer"] == 20


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_resets_do_not_disturb_a_healthy_client(start_server, mechanism):
    server = start_server(mechanism)
    healthy = server.connect(timeout=DEADLINE_S)
    rounds = 3000
    healthy_ok = []

    def echo_loop():
        rng = random.Random(3)
        for _ in range(rounds):
            msg = bytes(payload(rng, rng.randrange(1, 4096)))
            healthy.sendall(msg)
            assert recv_exactly(healthy, len(msg)) == msg
            healthy_ok.append(1)

    t = threading.Thread(target=echo_loop, daemon=True)
    t.start()
    victims = [server.connect() for _ in range(100)]
    for v in victims:
        v.sendall(POOL[:200_000])                   # mid-stream: echo still flowing
        v.recv(1000)
    for v in victims:
        v.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        v.close()                                   # RST, not FIN
    t.join(DEADLINE_S)
    assert len(healthy_ok) == rounds
    healthy.close()
    stats = server.stop()
    assert stats["closed"]["reset"] == 100
    assert stats["closed"]["error"] == 0
    assert stats["closed"]["peer"] + stats["closed"]["shutdown"] == 1


def _echoes(sock: socket.socket, msg: bytes) -> bool:
    """True if the connection echoes msg; False if the server closed it."""
    try:
        sock.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = sock.recv(len(msg) - len(got))
            if not chunk:
                return False
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return False
    assert got == msg
    return True


def test_select_refuses_descriptors_at_or_above_fd_setsize(start_server):
    raise_fd_limit()
    server = start_server("select")
    conns = [server.connect() for _ in range(1100)]
    echoing = sum(_echoes(c, b"ping %d" % i) for i, c in enumerate(conns))
    for c in conns:
        c.close()
    stats = server.stop()
    refused = stats["rejected_fd_setsize"]
    assert refused > 0
    assert echoing + refused == 1100                # every other connection still echoes
    assert stats["accepted"] == 1100
    assert stats["peak_registered"] <= 1024


@pytest.mark.parametrize("mechanism", [m for m in MECHANISMS if m != "select"])
def test_no_fd_setsize_limit_beyond_select(start_server, mechanism):
    raise_fd_limit()
    server = start_server(mechanism)
    conns = [server.connect() for _ in range(5000)]
    echoing = sum(_echoes(c, b"ping %d" % i) for i, c in enumerate(conns))
    for c in conns:
        c.close()
    stats = server.stop()
    assert echoing == 5000
    assert stats["rejected_fd_setsize"] == 0
    assert stats["peak_registered"] >= 5000


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_emfile_pauses_accept_without_spinning(start_server, tmp_path, mechanism):
    snaps = tmp_path / "snaps.jsonl"
    server = start_server(mechanism, "--max-fds", "64", "--snapshots", str(snaps))
    clients = [server.connect(timeout=DEADLINE_S) for _ in range(100)]
    for i, c in enumerate(clients):
        c.sendall(b"hello %03d" % i)
    cpu_before = server.cpu_s()
    time.sleep(2)
    cpu_spent = server.cpu_s() - cpu_before
    assert cpu_spent < 1.0, f"server burned {cpu_spent:.2f} s CPU in 2 s while out of fds"
    os.kill(server.pid, signal.SIGUSR1)             # a snapshot needs no new descriptor

    # Close each client once it is echoed: every close frees a server descriptor,
    # so the clients waiting in the backlog get accepted and echoed in turn.
    sel = selectors.DefaultSelector()
    for i, c in enumerate(clients):
        sel.register(c, selectors.EVENT_READ, i)
    echoed = 0
    deadline = time.monotonic() + DEADLINE_S
    while echoed < 100 and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            c, i = key.fileobj, key.data
            assert recv_exactly(c, 9) == b"hello %03d" % i
            sel.unregister(c)
            c.close()
            echoed += 1
    sel.close()
    stats = server.stop()
    assert echoed == 100
    assert json.loads(snaps.read_text().splitlines()[0])["accept_paused"] >= 1
    assert stats["accept_paused"] >= 1
    assert stats["accepted"] == 100
    assert stats["peak_registered"] < 64


@pytest.mark.parametrize("mechanism", [*MECHANISMS, *REFERENCES])
def test_sigusr1_without_snapshots_is_ignored(start_server, mechanism):
    server = start_server(mechanism)
    os.kill(server.pid, signal.SIGUSR1)             # the load generator's window marks
    c = server.connect()
    assert _echoes(c, b"still here")
    c.close()
    assert server.stop()["accepted"] == 1


STATS_FIELDS = {
    "format", "mechanism", "wait_calls", "wait_ns_total", "wait_ns_hist", "events_total",
    "events_per_call_hist", "accepted", "rejected_fd_setsize", "accept_paused", "closed",
    "bytes_in", "bytes_out", "bytes_dropped", "bytes_buffered", "peak_registered", "cpu_user_s", "cpu_sys_s", "peak_rss_bytes",
}


@pytest.mark.parametrize("mechanism", [*MECHANISMS, *REFERENCES])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_statistics_account_for_every_byte_and_connection(start_server, mechanism, sig):
    server = start_server(mechanism)
    conns = [server.connect() for _ in range(10)]
    sent = 0
    for i, c in enumerate(conns):
        msg = bytes(POOL[:1000 * (i + 1)])
        c.sendall(msg)
        assert recv_exactly(c, len(msg)) == msg
        sent += len(msg)
    for c in conns[:5]:
        c.close()              # seen as peer closes, or still open at shutdown
    server.proc.send_signal(sig)
    _, err = server.proc.communicate(timeout=DEADLINE_S)
    assert server.proc.returncode == 0, err
    stats = json.loads(server.stats_path.read_text())
    for c in conns[5:]:
        c.close()

    assert STATS_FIELDS <= stats.keys()
    assert stats["mechanism"] == mechanism
    assert stats["bytes_in"] == stats["bytes_out"] == sent
    assert stats["failure"] is None
    assert stats["accepted"] == 10
    assert stats["accepted"] == (stats["rejected_fd_setsize"] + stats.get("rejected_threads", 0)
                                 + sum(stats["closed"].values()))
    assert stats["closed"]["peer"] + stats["closed"]["shutdown"] == 10
    assert stats["closed"]["shutdown"] >= 5
    assert stats["cpu_user_s"] + stats["cpu_sys_s"] > 0
    assert stats["peak_rss_bytes"] > 0
    if mechanism in REFERENCES and not stats["wait_calls"]:
        assert stats["wait_note"]            # no wait call, or not ours to time: says which
        return
    assert sum(stats["wait_ns_hist"].values()) == stats["wait_calls"] > 0
    assert sum(stats["events_per_call_hist"].values()) == stats["wait_calls"]
    assert stats["wait_ns_total"] > 0 and stats["events_total"] > 0


def _snapshot(server, snaps) -> dict:
    """The server's counters now: SIGUSR1, then the line it appends."""
    before = len(snaps.read_text().splitlines()) if snaps.exists() else 0
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        lines = snaps.read_text().splitlines() if snaps.exists() else []
        if len(lines) > before and lines[-1].endswith("}"):
            return json.loads(lines[-1])
        assert time.monotonic() < deadline, "no snapshot"
        time.sleep(0.02)


@pytest.mark.parametrize("mechanism", [*MECHANISMS, *REFERENCES])
def test_statistics_reconcile_every_byte_after_a_reset_storm(start_server, tmp_path, mechanism):
    """bytes_in == bytes_out + bytes_dropped + bytes_buffered, with echoes cut off by resets."""
    snaps = tmp_path / "snaps.jsonl"
    server = start_server(mechanism, "--snapshots", str(snaps))
    victims = []
    for _ in range(30):
        v = socket.socket()
        v.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the echo backs up fast
        v.connect(server.address)
        v.setblocking(False)
        victims.append(v)
    for v in victims:                     # each sends until the server stops taking bytes
        sent, deadline = 0, time.monotonic() + DEADLINE_S
        while sent < 8 << 20 and time.monotonic() < deadline:
            try:
                sent += v.send(POOL[sent % (1 << 20):][:65536])
            except BlockingIOError:
                if sent >= 1 << 20:
                    break
                time.sleep(0.01)
    for v in victims:
        v.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        v.close()                         # RST with the echo still in flight
    deadline = time.monotonic() + DEADLINE_S
    while True:                           # until the server has seen every reset
        snap = _snapshot(server, snaps)
        if snap["closed"]["reset"] + snap["closed"]["error"] == 30:
            break
        assert time.monotonic() < deadline, snap["closed"]
        time.sleep(0.05)
    survivor = server.connect()
    assert _echoes(survivor, b"after the storm")
    stats = server.stop()

    assert stats["closed"]["reset"] + stats["closed"]["error"] == 30
    assert stats["bytes_in"] > 30 * 65536
    if stats["bytes_dropped"] is None:     # asyncio, uvloop: the loop hides it, and says so
        assert stats["bytes_note"]
        assert stats["bytes_in"] >= stats["bytes_out"] + stats["bytes_buffered"]
        return
    assert stats["bytes_dropped"] > 0
    assert stats["bytes_in"] == stats["bytes_out"] + stats["bytes_dropped"] + stats["bytes_buffered"]


def run_server_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servers", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, code, words", [
    (["kqueue"], 2, "invalid choice"),
    (["epoll", "--port", "99999"], 2, "0-65535"),
    (["epoll", "--port", "http"], 2, "invalid port"),
    (["epoll", "--max-fds", "0"], 2, "at least 1"),
    (["epoll", "--max-fds", "999999999"], 2, "hard descriptor limit"),
    (["epoll", "--frobnicate"], 2, "unrecognized"),
    (["epoll", "--host", "no-such-host.invalid"], 2, "cannot resolve"),
    (["epoll", "--stats", "/nonexistent-dir/stats.json"], 1, "does not exist"),
    (["io_uring", "--port", "99999"], 2, "0-65535"),
    (["io_uring", "--max-threads", "4"], 2, "threads server only"),
    (["io_uring", "--stats", "/nonexistent-dir/stats.json"], 1, "does not exist"),
])
def test_bad_input_one_line_and_exit_code(args, code, words):
    r = run_server_cli(*args)
    assert r.returncode == code, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert words in lines[0]


def test_port_in_use_is_one_line_exit_1():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_server_cli("poll", "--port", str(port))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0] and str(port) in lines[0]


def test_stats_to_a_fifo_writes_through_and_never_replaces_it(tmp_path):
    from servers.sysutil import write_json
    fifo = tmp_path / "stats.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_json(str(fifo), {"format": 1, "mechanism": "epoll"})
    reader.join(DEADLINE_S)
    assert json.loads(got[0])["mechanism"] == "epoll"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)     # /dev/null must survive the same way


def test_wait_statistics_derive_from_the_exact_events_table():
    from servers.core import Stats
    stats = Stats("epoll")
    for wait_ns, events in [(700, 3), (5, 0), (70_000, 1024)]:   # as the loops record them
        stats.wait_ns_total += wait_ns
        stats.wait_hist[wait_ns.bit_length()] += 1
        stats.events_hist[events] += 1
    doc = stats.to_dict()
    assert (doc["wait_calls"], doc["wait_ns_total"], doc["events_total"]) == (3, 70_705, 1027)
    assert doc["wait_ns_hist"] == {"8": 1, "1024": 1, "131072": 1}
    assert doc["events_per_call_hist"] == {"1": 1, "4": 1, "2048": 1}


def test_binding_every_interface_warns_in_one_line(tmp_path):
    stats = tmp_path / "stats.json"
    proc = subprocess.Popen([sys.executable, "-m", "servers", "poll", "--host", "0.0.0.0",
                             "--stats", str(stats)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("READY 0.0.0.0 ")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    (line,) = err.strip().splitlines()
    assert "warning" in line and "0.0.0.0" in line and "127.0.0.1" in line
    assert json.loads(stats.read_text())["mechanism"] == "poll"
