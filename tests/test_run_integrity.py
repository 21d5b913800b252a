"""A run directory has one writer, and a row of points.csv is whole or absent.

Real orchestrators, real locks, real files cut short the way kill -9 or a
full disk cuts them. One small real run (2 points) is made once and copied
for each test that needs a finished run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.rundir.lock import RunLock, holder
from bench.rundir.store import RunFormatError, load_run, read_table, set_torn_aside

TWO = """
repetitions = 1
warmup_s = 0.2
window_s = 0.5
mechanisms = ["epoll"]
seed = 4

[[experiment]]
kind = "scan"
connections = [10, 20]
active = 5
"""
DEADLINE_S = 120     # a hang guard, never an assertion on speed


def bench(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def rows(run_dir: Path) -> list[list[str]]:
    with open(run_dir / "points.csv", newline="") as f:
        return list(csv.reader(f))


def tree(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("two")
    (base / "two.toml").write_text(TWO)
    r = bench("run", "--profile", base / "two.toml", "--out", base / "run")
    assert r.returncode == 0, r.stderr
    return base / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run", symlinks=True))


@pytest.fixture
def lock_holder():
    """lock_holder(run_dir) -> the pid of another process that holds run_dir's lock."""
    procs = []

    def hold(run_dir: Path) -> int:
        p = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; from bench.rundir.lock import RunLock; "
                              "RunLock(sys.argv[1]).acquire(); print('held', flush=True); "
                              "time.sleep(120)", str(run_dir)],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p.pid

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def test_a_finished_run_keeps_no_lock_file(finished_run):
    assert not (finished_run / ".lock").exists()
    assert holder(finished_run) is None


def test_a_second_writer_is_refused_at_once_naming_the_holder(run_copy, lock_holder):
    pid = lock_holder(run_copy)
    assert holder(run_copy) == pid
    before = tree(run_copy)
    for args in (["run", "--resume", run_copy], ["run", "--out", run_copy],
                 ["micro", "--out", run_copy]):
        r = bench(*args, timeout=60)
        assert r.returncode == 1, (args, r.stderr)
        (line,) = r.stderr.strip().splitlines()
        assert f"process {pid}" in line and "Traceback" not in r.stderr
    assert tree(run_copy) == before                   # nothing touched, the lock file included


def test_the_lock_is_the_kernels_a_dead_holder_frees_it(tmp_path):
    p = subprocess.Popen([sys.executable, "-c",
                          "import sys, time; from bench.rundir.lock import RunLock; "
                          "RunLock(sys.argv[1]).acquire(); print('held', flush=True); "
                          "time.sleep(120)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    assert holder(tmp_path) == p.pid
    p.send_signal(signal.SIGKILL)                     # no handler, no atexit
    p.wait()
    assert holder(tmp_path) is None
    with RunLock(tmp_path):
        assert holder(tmp_path) == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_an_orchestrator_killed_mid_run_leaves_a_resumable_run(tmp_path):
    (tmp_path / "two.toml").write_text(TWO.replace("window_s = 0.5", "window_s = 1.5"))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--profile",
                             str(tmp_path / "two.toml"), "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + DEADLINE_S
    while not ((run_dir / "points.csv").exists() and len(rows(run_dir)) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "no point finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)                  # no finally runs: meta says "running"
    proc.wait()
    assert json.loads((run_dir / "meta.json").read_text())["state"] == "running"
    assert holder(run_dir) is None

    r = bench("run", "--resume", run_dir)
    assert r.returncode == 0, r.stderr
    assert "left running" in r.stderr
    ids = [row[0] for row in rows(run_dir)[1:]]
    assert len(ids) == len(set(ids)) == 2
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["state"] == "complete" and len(meta["runs"]) == 2
    assert not (run_dir / ".lock").exists()


def _cut_last_row(run_dir: Path, keep: float = 0.5) -> bytes:
    """Cut points.csv inside its last row, as kill -9 mid-write does; return what is left of it."""
    path = run_dir / "points.csv"
    data = path.read_bytes()
    start = data.rstrip(b"\r\n").rfind(b"\n") + 1
    cut = start + int((len(data) - start) * keep)
    path.write_bytes(data[:cut])
    return data[start:cut]


def test_report_on_a_torn_run_warns_and_reads_only_whole_rows(run_copy):
    _cut_last_row(run_copy)
    r = bench("report", run_copy, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert any("torn" in w for w in warnings), r.stderr
    assert any("meta.json recorded 2" in w and "1 missing" in w for w in warnings), r.stderr
    run = load_run(run_copy, log=open(os.devnull, "w"))
    assert len(run.points) == 1 and len(run.warnings) == 2
    header = (run_copy / "report.md").read_text().split("## Claims")[0]
    assert header.count("Warning:") == 2 and "torn" in header and "1 missing" in header
    assert "Warning:" in (run_copy / "report.html").read_text()
    r = bench("compare", run_copy, run_copy, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "warning: A:" in r.stdout and "warning: B:" in r.stdout and "torn" in r.stdout


def test_resume_sets_a_torn_row_aside_and_runs_its_point_again(run_copy):
    half = _cut_last_row(run_copy)
    whole = rows(run_copy)[:-1]
    r = bench("run", "--resume", run_copy)
    assert r.returncode == 0, r.stderr
    assert "torn" in r.stderr
    assert (run_copy / "points.torn.csv").read_bytes() == half.rstrip(b"\r\n") + b"\n"
    after = rows(run_copy)
    assert after[:len(whole)] == whole                # the whole rows untouched, in order
    assert len(after) == 3 and len({row[0] for row in after[1:]}) == 2
    assert {len(row) for row in after} == {len(after[0])}
    assert load_run(run_copy, log=open(os.devnull, "w")).warnings == ()


@pytest.mark.parametrize("shape", ["mid-field", "after-cr", "open-quote", "row-glued-on"])
def test_a_torn_tail_is_found_in_every_shape_and_moved_aside_whole(tmp_path, shape):
    header = b"point_id,error,x\r\n"
    good = header + b"a,,1\r\n" + b'b,"two\nlines",2\r\n'
    tail = {"mid-field": b"c,,3", "after-cr": b"c,,3\r", "open-quote": b'c,"cut\n',
            "row-glued-on": b"c,,d,,4\r\n"}[shape]
    path = tmp_path / "points.csv"
    path.write_bytes(good + tail)
    table = read_table(path)
    assert table.torn == tail and table.good_bytes == len(good)
    assert [r[0] for r in table.rows] == ["a", "b"]
    assert set_torn_aside(path) == tail
    assert path.read_bytes() == good
    assert (tmp_path / "points.torn.csv").read_bytes() == tail.rstrip(b"\r\n") + b"\n"
    assert set_torn_aside(path) == b""               # whole now: nothing more to move


def test_damage_before_the_last_row_is_refused_not_repaired(tmp_path):
    path = tmp_path / "points.csv"
    path.write_bytes(b"point_id,error\r\na,,1,2\r\nb,\r\n")
    with pytest.raises(RunFormatError, match="record 2"):
        set_torn_aside(path)
    assert path.read_bytes() == b"point_id,error\r\na,,1,2\r\nb,\r\n"

