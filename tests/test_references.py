"""The reference servers against the scripted clients the four servers face.

epoll-toggle, threads, asyncio and uvloop are not equivalent to the four
(servers.REFERENCES); they must still echo every byte in order, hold idle
connections while others talk, and account for their bytes and connections.
Real sockets on 127.0.0.1, no timing thresholds.
"""

from __future__ import annotations

import json
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import raise_fd_limit, recv_exactly
from servers import REFERENCES
from test_servers import DEADLINE_S, POOL, _echoes, run_echo_clients

IDLE = 2000              # every reference holds this many, threads included


def closed_total(stats: dict) -> int:
    return sum(stats["closed"].values())


def rejected(stats: dict) -> int:
    return stats["rejected_fd_setsize"] + stats.get("rejected_threads", 0)


@pytest.mark.parametrize("mechanism", REFERENCES)
def test_idle_connections_held_while_active_ones_echo(start_server, mechanism):
    raise_fd_limit()
    server = start_server(mechanism)
    idle = [server.connect(timeout=DEADLINE_S) for _ in range(IDLE)]
    sent = run_echo_clients(server.address, n_conns=10, n_msgs=200)
    for s in idle:                           # still open: no EOF, no reset, nothing to read
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(1)
        s.setblocking(True)
    for i, s in enumerate(idle):             # and still served
        msg = b"idle %d" % i
        s.sendall(msg)
        assert recv_exactly(s, len(msg)) == msg
        sent += len(msg)
    stats = server.stop()
    for s in idle:
        s.close()
    assert stats["accepted"] == IDLE + 10
    assert rejected(stats) == 0
    assert stats["closed"]["shutdown"] >= IDLE
    assert stats["bytes_in"] == stats["bytes_out"] == sent


@pytest.mark.parametrize("mechanism", REFERENCES)
def test_sigusr1_snapshots_bracket_a_window(start_server, tmp_path, mechanism):
    snaps = tmp_path / "snaps.jsonl"
    server = start_server(mechanism, "--snapshots", str(snaps))
    c = server.connect()
    lines = []
    for round_ in range(2):
        c.sendall(b"x" * 5000)
        assert recv_exactly(c, 5000) == b"x" * 5000
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + DEADLINE_S
        while len(lines) <= round_:
            assert time.monotonic() < deadline, "no snapshot line after SIGUSR1"
            time.sleep(0.01)
            text = snaps.read_text() if snaps.exists() else ""
            lines = [json.loads(x) for x in text.splitlines() if x.endswith("}")]
    c.close()
    server.stop()
    first, last = lines
    assert last["bytes_in"] - first["bytes_in"] == 5000
    assert last["monotonic_s"] > first["monotonic_s"]
    assert last["cpu_user_s"] + last["cpu_sys_s"] >= first["cpu_user_s"] + first["cpu_sys_s"]


def test_epoll_toggle_issues_an_epoll_ctl_pair_per_message(start_server):
    server = start_server("epoll-toggle")
    n_conns, n_msgs = 20, 200
    sent = run_echo_clients(server.address, n_conns=n_conns, n_msgs=n_msgs)
    stats = server.stop()
    assert stats["bytes_in"] == stats["bytes_out"] == sent
    # EPOLLOUT after each read, EPOLLIN after each write: at least two per message
    # (more when a message takes several reads), plus one register per connection
    # (the unregister is missing for closes the server had not seen at SIGTERM).
    assert stats["ctl_calls"] >= 2 * n_conns * n_msgs + n_conns


@pytest.mark.parametrize("mechanism", ["asyncio", "uvloop"])
def test_asyncio_records_its_read_size(start_server, mechanism):
    server = start_server(mechanism)
    c = server.connect()
    data = bytes(POOL[:1 << 20])
    c.sendall(data)                          # 1 MiB arrives faster than it is read
    assert recv_exactly(c, len(data)) == data
    c.close()
    stats = server.stop()
    assert stats["read_size_bytes"] > 0 and stats["read_size_source"]
    assert 0 < stats["max_read_bytes_seen"] <= stats["read_size_bytes"]


def test_threads_refuse_what_they_cannot_start_and_serve_the_rest(start_server):
    """No thread for a connection (here the --max-threads cap, which takes the same
    path as a failed thread start): it is closed and counted, the others echo."""
    server = start_server("threads", "--max-threads", "16")
    first = server.connect()
    assert _echoes(first, b"first")
    conns = [server.connect() for _ in range(100)]
    echoing = sum(_echoes(c, b"ping %d" % i) for i, c in enumerate(conns))
    assert _echoes(first, b"still here")
    for c in [first, *conns]:
        c.close()
    stats = server.stop()
    assert echoing == 15 and stats["rejected_threads"] == 85    # 16 threads at most
    assert "thread" in stats["rejected_threads_reason"]
    assert stats["accepted"] == 101 == rejected(stats) + closed_total(stats)
    assert stats["thread_stack_bytes"] == 256 * 1024


def test_threads_pause_accept_on_emfile_until_a_close(start_server, tmp_path):
    snaps = tmp_path / "snaps.jsonl"
    server = start_server("threads", "--max-fds", "64", "--snapshots", str(snaps))
    clients = [server.connect(timeout=DEADLINE_S) for _ in range(100)]
    for i, c in enumerate(clients):
        c.sendall(b"hello %03d" % i)
    # Nothing closes yet, so 100 connections must run the server out of descriptors.
    assert _snapshot_until(server, snaps, lambda s: s["accept_paused"] >= 1)
    # Close each client once echoed: every close frees a descriptor, and the
    # acceptor, waiting since EMFILE, takes the next connection from the backlog.
    sel = selectors.DefaultSelector()
    for i, c in enumerate(clients):
        sel.register(c, selectors.EVENT_READ, i)
    echoed = 0
    deadline = time.monotonic() + DEADLINE_S
    while echoed < 100 and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            assert recv_exactly(key.fileobj, 9) == b"hello %03d" % key.data
            sel.unregister(key.fileobj)
            key.fileobj.close()
            echoed += 1
    sel.close()
    stats = server.stop()
    assert echoed == 100
    assert stats["accept_paused"] >= 1
    assert stats["accepted"] == 100 and stats["rejected_threads"] == 0
    assert stats["peak_connections"] < 64


@pytest.mark.parametrize("mechanism", REFERENCES)
def test_port_in_use_is_one_line_exit_1(mechanism):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "servers", mechanism, "--port", str(port)],
                           capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0] and str(port) in lines[0]


def _snapshot_until(server, snaps: Path, done) -> dict:
    """SIGUSR1 until a snapshot line satisfies done(line); that line."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        server.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.05)
        text = snaps.read_text() if snaps.exists() else ""
        lines = [json.loads(x) for x in text.splitlines() if x.endswith("}")]
        if lines and done(lines[-1]):
            return lines[-1]
    raise AssertionError(f"no snapshot satisfied the condition within {DEADLINE_S} s")

