"""bench.tasks.memory: real servers holding real idle connections, and the share arithmetic."""

import csv
import json

import pytest

import servers
from bench.tasks import memory
from bench.sweep.profile import fd_limit
from bench.rundir.schema import MEMORY_COLUMNS

N = 1000


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Every mechanism holding N idle connections: (rows by mechanism, memory.json)."""
    run_dir = tmp_path_factory.mktemp("memory")
    doc = memory.run_memory(run_dir, list(servers.MECHANISMS) + ["threads"], [N],
                            fd_limits={m: fd_limit(m) for m in servers.MECHANISMS if fd_limit(m)})
    with open(run_dir / "memory.csv", newline="") as f:
        assert next(csv.reader(f)) == MEMORY_COLUMNS
    with open(run_dir / "memory.csv", newline="") as f:
        rows = {r["mechanism"]: r for r in csv.DictReader(f)}
    assert json.loads((run_dir / "memory.json").read_text())["format"] == 1
    return rows, doc


@pytest.mark.parametrize("mechanism", list(servers.MECHANISMS))
def test_per_connection_figures_are_positive_or_the_reason_recorded(measured, mechanism):
    rows, doc = measured
    r = rows[mechanism]
    assert int(r["connections"]) == N
    assert float(r["per_conn_rss_bytes"]) > 0
    assert int(r["rss_bytes"]) > 0
    if doc["reason"]:                          # slabinfo unreadable: kernel columns empty, said why
        assert r["per_conn_kernel_bytes"] == "" and "slabinfo" in doc["reason"]
        return
    assert float(r["per_conn_kernel_bytes"]) > 0
    assert int(r["TCP"]) > 0 and int(r["sock_inode_cache"]) > 0
    # every cache that grows: at least the TCP socket's 2,368 B and its file, per connection
    grown = next(x for x in doc["rows"] if x["mechanism"] == mechanism)["grown_caches"]
    assert "TCP" in grown and int(r["slab_growing_bytes"]) == sum(grown.values())
    assert int(r["slab_growing_bytes"]) > float(r["per_conn_kernel_bytes"]) * N / 2


def test_threads_cost_a_thread_per_connection_and_the_multiplexers_none(measured):
    rows, doc = measured
    threads, epoll = rows["threads"], rows["epoll"]
    assert int(threads["threads"]) >= N and int(epoll["threads"]) == 1
    if doc["reason"]:
        assert threads["per_conn_thread_bytes"] == ""
        return
    # each thread has a kernel stack (THREAD_SIZE, 16 KiB on x86-64) and a task_struct
    assert float(threads["per_conn_thread_bytes"]) > 8192
    assert float(epoll["per_conn_thread_bytes"]) < float(threads["per_conn_thread_bytes"]) / 10


def test_the_control_and_the_limits_are_recorded(measured):
    _, doc = measured
    assert [m["mechanism"] for m in doc["measurements"]][0] == memory.CONTROL
    lim = doc["limits"]
    assert lim["mem_total_bytes"] > 0
    assert set(lim["per_gib"]) <= {"fs.file-max", "fs.nr_open", "fs.epoll.max_user_watches",
                                   "RLIMIT_NOFILE"}
    assert lim["per_gib"].get("RLIMIT_NOFILE", 1) > 0
    if not doc["reason"]:
        assert doc["caches"]["TCP"]["line"] == "TCP"
        # a merged cache names the line that counts it and every alias
        assert "eventpoll_epi" in doc["caches"]["eventpoll_epi"]["aliases"] or \
            doc["caches"]["eventpoll_epi"]["line"] == "eventpoll_epi"


def test_io_uring_maps_its_rings_shared_and_epoll_maps_nothing(measured):
    _, doc = measured
    during = {m["mechanism"]: m["during"] for m in doc["measurements"] if m.get("during")}
    assert not during["epoll"]["shared_maps"]              # C6: an epoll set is not mmap-ed
    if "io_uring" not in during:
        pytest.skip("io_uring not measured here (not available)")
    assert during["io_uring"]["shared_maps"]["anon_inode:[io_uring]"] > 0
    rows, _ = measured
    if rows["io_uring"]["io_kiocb"] not in ("", None):      # one request per armed poll
        assert int(rows["io_uring"]["io_kiocb"]) >= N * memory.slab_lines(
            memory.read_slabinfo(), ("io_kiocb",))["io_kiocb"]["objsize"] // 2
    from bench.analysis.claims.c6_mmap import _uring_rings
    assert "anon_inode:[io_uring]" in _uring_rings(doc) and f"{N:,}" in _uring_rings(doc)


def _reading(slab: dict, rss: int = 10_000_000, slab_total: int = 0, all_lines: dict | None = None) -> dict:
    return {"slab": slab, "rss_bytes": rss, "meminfo": {"Slab": slab_total}, "all": all_lines}


def test_a_servers_share_subtracts_the_clients_part_of_the_control():
    zero = dict.fromkeys(memory.CACHES, 0)
    # control: a bare pair, two sockets per connection; the client's bind buckets
    # land in the eventpoll_epi line
    control = {"connections": 100, "before": _reading(zero), "during": _reading(
        {"TCP": 2 * 2368 * 100, "sock_inode_cache": 2 * 832 * 100, "eventpoll_epi": 256 * 100,
         "eventpoll_pwq": 0}, slab_total=10_000 * 100)}
    epoll = {"mechanism": "epoll", "connections": 100, "before": _reading(zero), "during": _reading(
        {"TCP": 2 * 2368 * 100, "sock_inode_cache": 2 * 832 * 100,
         "eventpoll_epi": (256 + 128) * 100, "eventpoll_pwq": 64 * 100},
        rss=10_000_000 + 300 * 100, slab_total=10_192 * 100)}
    r = memory.row(epoll, control)
    assert r["TCP"] == 2368 * 100 and r["sock_inode_cache"] == 832 * 100
    assert r["eventpoll_epi"] == 128 * 100 and r["eventpoll_pwq"] == 64 * 100
    assert r["per_conn_kernel_bytes"] == 2368 + 832 + 128 + 64
    assert r["per_conn_rss_bytes"] == 300
    assert r["slab_bytes"] == (10_192 - 5_000) * 100


def test_without_slabinfo_the_kernel_columns_are_empty():
    m = {"mechanism": "poll", "connections": 10, "before": {"slab": None, "rss_bytes": 1000,
                                                            "meminfo": {"Slab": 0}},
         "during": {"slab": None, "rss_bytes": 2000, "meminfo": {"Slab": 40_000}}}
    r = memory.row(m, None)
    assert r["per_conn_kernel_bytes"] is None and r["TCP"] is None
    assert r["per_conn_rss_bytes"] == 100 and r["slab_bytes"] == 20_000


def test_every_slab_cache_that_grows_with_the_connections_is_counted():
    n = 1000
    quiet = {"TCP": 0, "filp": 0, "dentry": 0, "kmalloc-64": 50_000, "eventpoll_epi": 0, "proc_inode_cache": 0}
    # control: the bare pair, two sockets, two files and dentries per connection
    control = {"connections": n, "before": _reading({}, all_lines=quiet), "during": _reading({}, all_lines={
        **quiet, "TCP": 2 * 2368 * n, "filp": 2 * 192 * n, "dentry": 2 * 192 * n, "kmalloc-64": 50_640})}
    # epoll: its own socket, file and dentry plus an epitem per watch; kmalloc-64 moved by
    # 1,000 B on its own (1 B per connection: the machine, not the connections); our own
    # listing of /proc/<pid>/fd made a proc inode per descriptor
    epoll = {"mechanism": "epoll", "connections": n, "before": _reading({}, all_lines=quiet),
             "during": _reading({}, all_lines={**quiet, "TCP": 2 * 2368 * n, "filp": 2 * 192 * n,
                                               "dentry": 2 * 192 * n, "eventpoll_epi": 128 * n,
                                               "kmalloc-64": 51_320, "proc_inode_cache": 700 * n})}
    grown = memory.growing_caches(epoll, control)
    assert grown == {"TCP": 2368 * n, "filp": 192 * n, "dentry": 192 * n, "eventpoll_epi": 128 * n}
    assert list(grown) == ["TCP", "filp", "dentry", "eventpoll_epi"]      # largest first
    zero = dict.fromkeys(memory.CACHES, 0)
    epoll.update(before=_reading(zero, all_lines=epoll["before"]["all"]),
                 during=_reading(zero, all_lines=epoll["during"]["all"]))
    assert memory.row(epoll, control)["slab_growing_bytes"] == (2368 + 192 + 192 + 128) * n


def test_without_slabinfo_there_is_no_growing_cache_figure():
    m = {"mechanism": "poll", "connections": 10, "before": _reading(None), "during": _reading(None)}
    assert memory.growing_caches(m, None) is None
