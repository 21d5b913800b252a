"""bench.tasks.probes: each probe, in its own child, records what the kernel did."""

import json

import pytest

from bench.tasks import probes
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
    assert set(doc["probes"]) == {"C1", "C4", "C5", "C6", "C9"}
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
