"""bench.tasks.micro on real socketpairs in real child processes, at a tiny scale."""

import csv
import json
import os
import resource

import pandas as pd
import pytest

from bench import cli
from bench.analysis import micro_summary
from bench.tasks import child, micro
from conftest import uring_unavailable
from bench.rundir.schema import MICRO_COLUMNS
from bench.rundir.store import RunFormatError

SMALL, PAST_SETSIZE = 4, 1100        # 1100 registered: descriptors above 1023


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * PAST_SETSIZE + 100:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {2 * PAST_SETSIZE + 100}")
    out = tmp_path_factory.mktemp("micro") / "run"
    run_dir = micro.run_micro(out=out, sizes=(SMALL, PAST_SETSIZE), samples=20,
                              processes=1, seed=7)
    with open(run_dir / "micro.csv", newline="") as f:
        header = next(csv.reader(f))
    with open(run_dir / "micro.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return run_dir, header, rows


def _rows(rows, **want):
    return [r for r in rows if all(r[k] == str(v) for k, v in want.items())]


def test_writes_micro_csv_with_exactly_the_schema_columns(run):
    run_dir, header, rows = run
    assert run_dir.name == "run"
    assert header == MICRO_COLUMNS
    assert rows


def test_every_mechanism_has_wait_rows_with_positive_costs(run):
    _, _, rows = run
    for mech in micro.MECHANISMS:
        if mech == "io_uring" and uring_unavailable():
            (row, *_) = _rows(rows, op="wait", mechanism=mech)
            assert row["note"].startswith("refused: io_uring not available here"), row
            continue
        for ready, mode in micro.cases("wait", SMALL):
            (row,) = _rows(rows, op="wait", mode="wait", mechanism=mech, registered=SMALL,
                           ready=ready, timeout_mode=mode)
            assert int(row["samples"]) == 20, row
            p10, med, p90 = (int(row[k]) for k in ("ns_p10", "ns_median", "ns_p90"))
            assert 0 < p10 <= med <= p90, row


def test_user_and_system_time_per_call_sum_to_the_cpu_total_in_every_row(run):
    _, _, rows = run
    measured = [r for r in rows if r["samples"] and r["mechanism"] != "io_uring"]
    assert {r["mechanism"] for r in measured} == {"select", "poll", "epoll"}
    for r in measured:
        user, sys_, cpu = (float(r[k]) for k in ("user_ns_per_call", "sys_ns_per_call", "cpu_ns_per_call"))
        assert user >= 0 and sys_ >= 0 and cpu > 0, r
        assert abs(user + sys_ - cpu) <= 0.1 + 1e-9, r        # each rounded to 0.1 ns
    for r in rows:
        if not r["samples"] or r["mechanism"] == "io_uring":   # refused, or its loop writes untimed
            assert r["user_ns_per_call"] == r["sys_ns_per_call"] == r["cpu_ns_per_call"] == "", r


def test_cpu_split_divides_by_the_calls():
    assert micro.cpu_split(0.003, 0.001, 2000) == {"user_ns_per_call": 1500.0, "sys_ns_per_call": 500.0,
                                                   "cpu_ns_per_call": 2000.0}


def test_select_stops_at_fd_setsize_with_the_reason(run):
    _, _, rows = run
    refused = _rows(rows, op="wait", mechanism="select", registered=PAST_SETSIZE)
    assert len(refused) == len(micro.cases("wait", PAST_SETSIZE)) + len(micro.cases("drain", PAST_SETSIZE))
    for row in refused:
        assert row["note"].startswith("refused: FD_SETSIZE"), row
        assert "filedescriptor out of range in select()" in row["note"]
        assert row["ns_median"] == row["samples"] == ""
    for mech in ("poll", "epoll"):           # no such limit: measured past 1024
        for row in _rows(rows, op="wait", mechanism=mech, registered=PAST_SETSIZE):
            assert int(row["ns_median"]) > 0, row


def test_epoll_reports_at_most_maxevents(run):
    _, _, rows = run
    (row,) = _rows(rows, op="wait", mode="wait", mechanism="epoll", registered=PAST_SETSIZE,
                   ready=PAST_SETSIZE, timeout_mode="zero")
    assert row["note"] == f"epoll returned {micro.MAXEVENTS} of {PAST_SETSIZE} ready (MAXEVENTS)"


def test_drain_mode_rows_read_and_rewrite_every_ready_descriptor(run):
    """libevent bench.c's loop: 1 ready and all ready (up to MAXEVENTS), each iteration checked."""
    _, _, rows = run
    drain = _rows(rows, mode="drain")
    assert {r["op"] for r in drain} == {"wait"} and {r["timeout_mode"] for r in drain} == {"zero"}
    assert {r["mechanism"] for r in drain} == set(micro.DRAIN_MECHANISMS)
    for mech in micro.DRAIN_MECHANISMS:
        for ready in (1, SMALL):
            (row,) = _rows(drain, mechanism=mech, registered=SMALL, ready=ready)
            assert int(row["samples"]) == 20 and int(row["ns_median"]) > 0, row
    assert not _rows(drain, registered=PAST_SETSIZE, ready=PAST_SETSIZE)   # past MAXEVENTS
    assert {r["mode"] for r in rows} == {"wait", "drain"}
    assert micro.cases("drain", 300) == [(1, "zero"), (300, "zero")]


def test_register_and_modify_rows_for_poll_and_epoll(run):
    _, _, rows = run
    for op in ("register", "modify"):
        for size in (SMALL, PAST_SETSIZE):
            got = {r["mechanism"]: r for r in _rows(rows, op=op, registered=size)}
            assert set(got) == {"poll", "epoll"}
            for row in got.values():
                assert row["ready"] == "0" and row["timeout_mode"] == "zero"
                assert int(row["ns_median"]) > 0, row


def test_records_limits_and_writes_meta_for_its_own_run(run):
    run_dir, _, _ = run
    info = json.loads((run_dir / "micro.json").read_text())
    assert info["format"] == 1 and info["seed"] == 7
    assert info["rlimit_nofile"]["soft"] == info["rlimit_nofile"]["hard"]
    assert info["timer_ns"] > 0
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["format"] == 1 and meta["state"] == "complete"


def test_refuses_to_overwrite_micro_csv(run):
    run_dir, _, _ = run
    with pytest.raises(RunFormatError, match="never overwritten"):
        micro.run_micro(out=run_dir, sizes=(1,), samples=2, processes=1)


def test_schedule_interleaves_mechanisms_and_covers_every_case():
    config = micro.CONFIGS["default"]
    groups = micro.schedule(config, seed=1)
    assert len(groups) == (len(config.ops) - 1) * len(config.sizes) + len(config.drain_sizes)
    for op, n, configs in groups:
        mechs = (micro.MECHANISMS if op == "wait" else micro.DRAIN_MECHANISMS if op == "drain"
                 else ("poll", "epoll"))
        k = len(mechs)
        for i in range(0, len(configs), k):
            block = configs[i:i + k]
            assert sorted(c["mechanism"] for c in block) == sorted(mechs)
            assert len({(c["ready"], c["timeout_mode"]) for c in block}) == 1
        assert len(configs) == k * len(micro.cases(op, n))
    assert micro.schedule(config, seed=1) == groups


def test_cases_keep_ready_within_registered():
    assert micro.cases("wait", 1) == [(0, "zero"), (1, "zero"), (1, "blocking")]
    assert {a for a, _ in micro.cases("wait", 300)} == {0, 1, 10, 300}
    assert micro.cases("register", 300) == [(0, "zero")]


def test_summarize():
    assert micro.summarize(list(range(1, 102))) == (51, 11, 91)


def _wait_row(mech, n, ready, mode, ns):
    return {"op": "wait", "mechanism": mech, "registered": n, "ready": ready,
            "timeout_mode": mode, "ns_median": ns, "note": "" if ns else "refused: FD_SETSIZE"}


def test_summary_fits_the_common_sizes_then_poll_and_epoll_over_all_theirs():
    sizes = (10, 100, 1000, 3000)
    cost = {"select": lambda n: 50 + 4 * n if n < 1024 else None,
            "poll": lambda n: 40 + 3 * n, "epoll": lambda n: 500 + n / 100}
    rows = [_wait_row(m, n, ready, mode, f(n)) for m, f in cost.items() for n in sizes
            for ready, mode in ((0, "zero"), (1, "zero"), (1, "blocking"))]
    rows.append({**_wait_row("poll", 10, 0, "zero", 1), "op": "register"})   # not a wait row
    lines = micro_summary.summary_lines(pd.DataFrame(rows, columns=MICRO_COLUMNS))
    assert lines[:2] == [
        "micro slope ready=0 zero     N<=1000 : select    4.00 ns/fd (R2 1.00)  "
        "poll    3.00 ns/fd (R2 1.00)  epoll    0.01 ns/fd (R2 1.00)",
        "micro slope ready=0 zero     N<=3000 : poll    3.00 ns/fd (R2 1.00)  "
        "epoll    0.01 ns/fd (R2 1.00)"]
    assert [line[:30] for line in lines[2:]] == ["micro slope ready=1 zero     N",
                                                 "micro slope ready=1 zero     N",
                                                 "micro slope ready=1 blocking N",
                                                 "micro slope ready=1 blocking N"]


def test_summary_of_a_real_run_fits_poll_and_epoll_past_setsize(run):
    run_dir, _, _ = run
    lines = micro_summary.run_summary_lines(run_dir)
    # select ran one size (SMALL) of two: no slope of its own, and none for the common span
    assert len(lines) == 3                   # one per (ready, timeout_mode) case
    for line in lines:
        assert f"N<={PAST_SETSIZE:<5}" in line and "select" not in line
        assert "poll" in line and "epoll" in line


def test_run_micro_prints_no_summary_and_bench_micro_does(tmp_path, capfd, monkeypatch):
    tiny = micro.MicroConfig(sizes=(1, 3), budget_ms=1, min_samples=2, max_samples=2,
                             warmup_calls=1, processes=1, ops=("wait",))
    monkeypatch.setitem(micro.CONFIGS, "quick", tiny)
    micro.run_micro(out=tmp_path / "lib", quick=True, seed=1)
    assert "micro slope" not in capfd.readouterr().err
    assert cli.main(["micro", "--quick", "--out", str(tmp_path / "cli")]) == 0
    out, err = capfd.readouterr()
    assert out == f"{tmp_path / 'cli'}\n"
    assert err.count("micro slope") == 3     # one per case; every mechanism ran every size


def test_child_failure_is_reported_not_raised_raw():
    with pytest.raises(child.ChildFailed, match="exited with 3"):
        child.run_in_child(os._exit, 3, timeout_s=30)
