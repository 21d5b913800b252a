"""bench run end to end: real servers, the real load generator, real signals. No mocks."""

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.sweep.run import RUN_ENV
from bench.rundir.store import load_run

# Every points.csv column DESIGN.md lists, spelled as there: none may be renamed.
DESIGN_COLUMNS = """point_id, experiment, mechanism, connections, active, msg_size,
rate, rep, throughput_msgs_s, p50_us, p90_us, p99_us, p999_us, max_us,
server_cpu_user_s, server_cpu_sys_s, server_cpu_us_per_msg,
wait_calls, wait_ns_per_call, events_per_call, loadgen_cpu_max,
saturated, noisy, errors, corrupt, rejected_fd_setsize, duration_s, error""".replace(
    "\n", " ").replace(",", " ").split()

TINY = """
description = "2 mechanisms x 2 points x 1 repetition"
repetitions = 1
warmup_s = 0.2
window_s = 0.5
mechanisms = ["select", "epoll"]
seed = 4

[[experiment]]
kind = "scan"
connections = [10, 40]
active = 5
msg_size = 64
"""


def bench(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "points.csv", newline="") as f:
        return list(csv.DictReader(f))


def strays(run_dir: Path) -> list[psutil.Process]:
    """Processes started for this run that are still alive (found by their environment)."""
    marker = str(run_dir.resolve())
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(RUN_ENV) == marker \
                    and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            pass
    return found


def test_tiny_profile_writes_every_column_raw_json_and_meta(tmp_path):
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY)
    run_dir = tmp_path / "results" / "tiny"
    r = bench("--profile", profile, "--out", run_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(run_dir)
    assert "estimated" in r.stderr.splitlines()[0]

    with open(run_dir / "points.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:len(DESIGN_COLUMNS)] == DESIGN_COLUMNS
    got = rows(run_dir)
    ids = {row["point_id"] for row in got}
    assert ids == {f"scan-{m}-c{n}-a5-s64-r1" for m in ("select", "epoll") for n in (10, 40)}
    assert {p.stem for p in (run_dir / "raw").glob("*.json")} == ids
    for row in got:
        assert row["error"] == "", row
        assert float(row["throughput_msgs_s"]) > 0 and float(row["p99_us"]) > 0
        assert float(row["server_cpu_us_per_msg"]) > 0 and int(row["wait_calls"]) > 0
        assert float(row["server_cpu_user_s"]) + float(row["server_cpu_sys_s"]) > 0
        assert float(row["events_per_call"]) > 0 and float(row["wait_ns_per_call"]) > 0
        assert int(row["established"]) == int(row["connections"])
        assert row["noise_cpu_pct"] != "" and row["saturated"] in ("True", "False")
        raw = json.loads((run_dir / "raw" / f"{row['point_id']}.json").read_text())
        assert raw["loadgen"]["messages"] > 0 and len(raw["snapshots"]) >= 2
        assert raw["server"]["mechanism"] == row["mechanism"]

    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["format"] == 1 and meta["state"] == "complete"
    assert meta["started_at"] and meta["ended_at"] >= meta["started_at"]
    assert meta["kernel"]["release"] and meta["cpu"]["model"] and meta["cpu"]["count"] >= 1
    assert "governors" in meta["cpu"] and meta["memory"]["mem_total_bytes"] > 0
    assert meta["python"]["version"] and meta["packages"]["psutil"]
    assert set(meta["git"]) == {"rev", "dirty"}
    limits = meta["limits"]
    for role in ("orchestrator", "server", "loadgen"):
        assert limits["rlimit_nofile"][role]["soft"] > 0, role
    for key in ("fs.file-max", "fs.nr_open", "fs.epoll.max_user_watches",
                "net.ipv4.ip_local_port_range"):
        assert key in limits
    assert meta["profile"]["text"] == TINY and meta["profile"]["seed"] == 4
    assert meta["points"]["measured"] == 4 and meta["points"]["failed"] == 0
    assert meta["pinning"]["server_cpus"] and meta["pinning"]["loadgen_cpus"]

    run = load_run(run_dir)
    assert len(run.points) == 4
    assert os.readlink(tmp_path / "results" / "latest") == "tiny"
    assert not strays(run_dir)


def test_sigint_kills_children_keeps_points_and_resume_completes_the_rest(tmp_path):
    profile = tmp_path / "six.toml"
    profile.write_text(TINY.replace("[10, 40]", "[10, 20, 30]").replace("window_s = 0.5",
                                                                         "window_s = 1.0"))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--profile", str(profile),
                             "--out", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # wait for a finished point and for the next point's children to be running
        while not ((run_dir / "points.csv").exists() and len(rows(run_dir)) >= 1
                   and strays(run_dir)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no point finished"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out.strip().splitlines()[-1] == str(run_dir)
    assert err.strip().splitlines()[-1].endswith("interrupted")
    assert f"--resume {run_dir}" in err
    assert not strays(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["state"] == "interrupted"
    kept = [row["point_id"] for row in rows(run_dir)]
    assert 1 <= len(kept) < 6
    assert {p.stem for p in (run_dir / "raw").glob("*.json")} == set(kept)

    r = bench("--resume", run_dir)
    assert r.returncode == 0, r.stderr
    assert f"{6 - len(kept)} of 6 points to run" in r.stderr
    final = [row["point_id"] for row in rows(run_dir)]
    assert final[:len(kept)] == kept                      # appended, never rewritten
    assert len(final) == len(set(final)) == 6
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["state"] == "complete" and len(meta["runs"]) == 2
    assert not strays(run_dir)

    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    r = bench("--resume", run_dir)                        # complete: nothing to do, nothing touched
    assert r.returncode == 0 and "already complete" in r.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_server_crash_at_start_up_is_a_failed_point_and_the_sweep_goes_on(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard descriptor limit to exceed")
    # --max-fds above the hard limit: the server exits 2 before READY
    profile = tmp_path / "crash.toml"
    profile.write_text(f"""
warmup_s = 0.2
window_s = 0.5
mechanisms = ["epoll"]

[[experiment]]
kind = "scan"
connections = 10
active = 5
server_max_fds = {hard + 1000}

[[experiment]]
kind = "msgsize"
connections = 10
active = 5
""")
    run_dir = tmp_path / "run"
    r = bench("--profile", profile, "--out", run_dir)
    assert r.returncode == 1, r.stderr                  # a failed point is a runtime error
    assert r.stdout.strip().splitlines()[-1] == str(run_dir)
    by_id = {row["point_id"]: row for row in rows(run_dir)}
    crashed = by_id[f"scan-epoll-c10-a5-s64-fds{hard + 1000}-r1"]
    assert "server exited 2 at start-up" in crashed["error"] and "--max-fds" in crashed["error"]
    assert crashed["throughput_msgs_s"] == ""
    assert "FAILED: server exited 2" in r.stderr
    ok = by_id["msgsize-epoll-c10-a5-s64-r1"]
    assert ok["error"] == "" and float(ok["throughput_msgs_s"]) > 0
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["state"] == "failed" and meta["points"]["failed"] == 1
    assert not strays(run_dir)


def test_no_ready_within_the_deadline_is_a_failed_point_and_nothing_is_left(tmp_path):
    profile = tmp_path / "slow.toml"
    # no Python server prints READY within a millisecond of its start
    profile.write_text(TINY.replace("seed = 4", "seed = 4\nready_timeout_s = 0.001")
                       .replace('["select", "epoll"]', '["poll"]').replace("[10, 40]", "10"))
    run_dir = tmp_path / "run"
    r = bench("--profile", profile, "--out", run_dir)
    assert r.returncode == 1
    (row,) = rows(run_dir)
    assert row["error"] == "server: no READY within 0.001 s"
    assert not strays(run_dir)


def test_only_runs_a_subset_and_resume_adds_the_rest(tmp_path, capsys):
    from bench.sweep.run import run
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY)
    run_dir = run(profile=profile, out=tmp_path / "run", only="-c10-")
    assert sorted(r["point_id"] for r in rows(run_dir)) == [
        "scan-epoll-c10-a5-s64-r1", "scan-select-c10-a5-s64-r1"]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["state"] == "complete" and meta["points"]["missing"] == 2
    assert meta["runs"][0]["only"] == "-c10-"
    run(resume=run_dir)
    assert len({r["point_id"] for r in rows(run_dir)}) == len(rows(run_dir)) == 4
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["points"]["missing"] == 0 and len(meta["runs"]) == 2
    assert "2 of 4 points to run" in capsys.readouterr().err


def test_resume_retries_failed_points_and_keeps_the_failed_rows(tmp_path):
    profile = tmp_path / "slow.toml"
    profile.write_text(TINY.replace("seed = 4", "seed = 4\nready_timeout_s = 0.001")
                       .replace('["select", "epoll"]', '["poll"]').replace("[10, 40]", "10"))
    run_dir = tmp_path / "run"
    assert bench("--profile", profile, "--out", run_dir).returncode == 1
    (failed,) = rows(run_dir)
    assert failed["error"]
    # the cause goes away (here: the stored profile's deadline), the same run is resumed
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["profile"]["text"] = meta["profile"]["text"].replace("ready_timeout_s = 0.001",
                                                              "ready_timeout_s = 30")
    (run_dir / "meta.json").write_text(json.dumps(meta))
    r = bench("--resume", run_dir)
    assert r.returncode == 0, r.stderr
    assert "retrying 1 failed point(s)" in r.stderr
    (again,) = rows(run_dir)
    assert again["point_id"] == failed["point_id"] and again["error"] == ""
    with open(run_dir / "retried.csv", newline="") as f:
        assert [row["error"] for row in csv.DictReader(f)] == [failed["error"]]
    assert len(list((run_dir / "raw" / "retried").glob("*.json"))) == 1
    assert json.loads((run_dir / "meta.json").read_text())["state"] == "complete"


def test_resume_refuses_another_machine_or_software_unless_forced(tmp_path):
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY)
    run_dir = tmp_path / "run"
    assert bench("--profile", profile, "--out", run_dir, "--only=-c10-").returncode == 0
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["kernel"]["release"] = "2.6.32-elsewhere"
    (run_dir / "meta.json").write_text(json.dumps(meta))
    before = rows(run_dir)
    r = bench("--resume", run_dir)
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert "another machine or software" in line and "2.6.32-elsewhere" in line and "--force" in line
    assert rows(run_dir) == before
    r = bench("--resume", run_dir, "--force")
    assert r.returncode == 0, r.stderr
    assert len(rows(run_dir)) == 4
