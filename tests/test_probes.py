"""bench.tasks.probes: each probe, in its own child, records what the kernel did."""

import json

import pytest

from bench.tasks import probes, threads_probe
from bench.tasks.child import run_in_child

LIMITS = {"RLIMIT_NPROC", "kernel.threads-max", "kernel.pid_max", "pids.max", "vm.max_map_count",
          "RLIMIT_AS", "MemAvailable"}
@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("probes")
    result = probes.run_probes(run_dir)
    assert json.loads((run_dir / "probes.json").read_text()) == json.loads(json.dumps(result))
    return result


def _tested(doc, claim):
    entry = doc["probes"][claim]
    if entry["status"] != "tested":
        pytest.skip(f"{claim} not tested here: {entry['reason']}")
    assert entry["reading"]
    return entry["outcome"]


def test_document_has_format_and_every_probe(doc):
    assert doc["format"] == 1
    assert set(doc["probes"]) == {"C1", "C4", "C5", "C6", "C9", "C10"}
    for entry in doc["probes"].values():
        assert entry["status"] in ("tested", "not tested")
        assert entry.get("reading") or entry.get("reason")


def test_c1_select_refuses_the_value_2000_not_the_count(doc):
    o = _tested(doc, "C1")
    assert o["high_fd_select"] == {"exception": "ValueError",
                                   "message": "filedescriptor out of range in select()"}
    assert o["low_fd"] < 1024 and o["low_fd_ready"]
    assert 2000 in o["open_fd_values"] and o["open_descriptors"] < 50
    assert o["kernel_select_high_fd"]["returned"] == 1
    assert o["kernel_select_high_fd"]["fd_reported_ready"]


def test_c4_poll_past_1024_works_and_past_rlimit_is_einval(doc):
    o = _tested(doc, "C4")
    assert o["highest_fd"] > 1024 and o["over_1024"]["highest_fd_reported"]
    assert o["nfds_equal_to_soft_limit"]["result"] == "ok"
    over = o["nfds_above_soft_limit"]
    assert over["soft"] == o["nfds"] - 1
    assert over["errno"] == "EINVAL"
    assert o["after_restoring_limit"]["result"] == "ok"


def test_c5_edge_triggered_reports_each_write_oneshot_only_once(doc):
    modes = _tested(doc, "C5")["modes"]
    assert modes["edge"]["events_total"] == 2
    assert modes["edge"]["events_per_call"] == [[1, 0], [1, 0]]
    assert modes["oneshot"]["events_total"] == 1
    assert modes["oneshot"]["events_after_rearm"] == 1
    assert modes["level"]["events_total"] == 4
    for m in modes.values():
        assert m["queued_bytes"] == [100, 200]    # nothing was read


def test_c6_epoll_is_an_anon_inode_with_no_mapping(doc):
    o = _tested(doc, "C6")
    assert o["epoll_fd_link"] == "anon_inode:[eventpoll]"
    assert o["registered"] == o["fdinfo_watches"] == 10000
    for key in ("maps_before", "maps_control", "maps_after"):
        assert o[key]["count"] > 0 and o[key]["bytes"] > 0
    assert o["eventpoll_mappings_after"] == []
    assert o["mmap_epoll_fd"]["errno"] == "ENODEV"


def _needs_a_bigger_machine():
    raise probes.NotTested("needs 2 GB of descriptors")


def test_a_probe_that_cannot_run_is_not_tested_with_its_reason():
    assert probes._guarded(_needs_a_bigger_machine) == {"not_tested": "needs 2 GB of descriptors"}


def test_c9_select_and_the_c_library_agree_on_the_bound_whatever_the_word_size(doc):
    o = _tested(doc, "C9")
    assert o["pointer_bits"] in (32, 64) and o["claimed_fd_setsize"] == 32 * o["pointer_bits"]
    sel = o["cpython_select"]
    assert sel["lowest_refused"] == 1024 and "out of range" in sel["message"]
    chk = o["fd_set_fdelt_chk"]
    if "unavailable" not in chk:                    # glibc: its own check says where fd_set ends
        assert chk["lowest_refused"] == 1024 and chk["words"] * chk["bits_per_word"] == 1024
        assert chk["fd_set_bytes"] == 128
    comp = o["fd_set_compiled"]
    if "unavailable" not in comp:
        assert comp["sizeof_fd_set"] * 8 == comp["FD_SETSIZE"] == 1024
    assert "1024" in doc["probes"]["C9"]["reading"]


def test_c10_reports_every_limit_and_the_threads_it_started(doc):
    o = _tested(doc, "C10")
    t = o["thread_limit"]
    assert set(t["headroom_before"]) == LIMITS and LIMITS <= set(t["limits_before"])
    assert 0 < t["started"] <= t["cap_used"] <= threads_probe.THREAD_CAP
    assert t["at_least"] == (t["error"] is None) and t["stopped_by"]
    assert "threads" in doc["probes"]["C10"]["reading"]


def test_a_lowered_rlimit_nproc_stops_the_threads_of_an_unprivileged_user():
    nobody = 65534                              # root is exempt from RLIMIT_NPROC (kernel/fork.c)
    own = threads_probe._uid_tasks(nobody)
    t = run_in_child(threads_probe.thread_limit, 500, own + 12, nobody, timeout_s=60)
    assert t["uid"] == nobody and t["error"] and not t["at_least"]
    assert t["stopped_by"] == "RLIMIT_NPROC"
    # the process itself is one task: at most 11 more, fewer if nobody started others meanwhile
    assert 0 < t["started"] <= 11
    assert t["limits_at_end"]["RLIMIT_NPROC"] | {"used": None} == {
        "limit": own + 12, "hard": own + 12, "used": None, "enforced": True}
    assert t["limits_at_end"]["RLIMIT_NPROC"]["used"] >= own + 12


def test_the_capped_threads_server_refuses_client_t_plus_1_and_serves_the_next_after_a_close():
    c = threads_probe.capped_server(max_threads=2, wait_s=2.0)
    assert c["served_first"] == 2 and c["extra_connected"]
    assert c["extra_outcome"] in ("closed", "reset")            # refused at once, not blocked
    assert c["rejected_threads"] >= 1 and "max-threads 2" in c["rejected_threads_reason"]
    assert c["new_client_after_a_thread_freed"].startswith("echoed")
