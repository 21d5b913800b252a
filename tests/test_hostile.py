"""The bad-input catalogue: what a hostile but fair user types, each answered in one line.

Every case runs its command line as a real subprocess (all of them at once,
in a thread pool, so the catalogue costs about one start-up per core) in a
directory of its own, and asserts: the exit code (2 bad usage, 1 the system
refused), exactly one line on stderr naming the problem, no traceback,
nothing on disk that was not there before (no temporary file, no run
directory), and no process left (found by an environment marker).
Literal addresses only: no case may make a DNS query.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

MARK = "IOMUX_HOSTILE_CASE"      # in every case's environment: finds what it left running
S = [sys.executable, "-m", "servers"]
L = [sys.executable, "-m", "loadgen", "--target", "127.0.0.1:9"]
B = [sys.executable, "-m", "bench"]

TINY = """
repetitions = 1
warmup_s = 0.2
window_s = 0.5
mechanisms = ["epoll"]

[[experiment]]
kind = "scan"
connections = 10
active = 5
"""


def _file(name, data=b"x\n"):
    def make(d: Path):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return make


def _profile(runwide: str = "", experiment: str = "connections = 10\nactive = 1\n"):
    text = (f'mechanisms = ["epoll"]\n{runwide}\n[[experiment]]\nkind = "scan"\n'
            f"{experiment}")
    return _file("p.toml", text)


PROFILE = B + ["run", "--profile", "{d}/p.toml", "--out", "{d}/r"]


def _run_dir(meta, points: bytes | None = None):
    def make(d: Path):
        (d / "run").mkdir()
        (d / "run" / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
        if points is not None:
            (d / "run" / "points.csv").write_bytes(points)
    return make


RANDOM = bytes((i * 7919 + 13) % 256 for i in range(4096))   # fixed, not UTF-8

# id, argv ({d} = the case's own directory), exit code, words on the one line, set-up
CASES = [
    # -- python -m servers ------------------------------------------------------
    ("srv-unknown-mechanism", S + ["kqueue"], 2, "invalid choice", None),
    ("srv-port-range", S + ["epoll", "--port", "99999"], 2, "0-65535", None),
    ("srv-port-word", S + ["epoll", "--port", "http"], 2, "invalid port", None),
    ("srv-max-fds-0", S + ["epoll", "--max-fds", "0"], 2, "at least 1", None),
    ("srv-max-fds-3", S + ["epoll", "--max-fds", "3"], 2, "too few", None),
    ("srv-max-fds-3-threads", S + ["threads", "--max-fds", "3"], 2, "too few", None),
    ("srv-max-fds-huge", S + ["epoll", "--max-fds", "999999999"], 2, "hard descriptor limit",
     None),
    ("srv-unknown-flag", S + ["epoll", "--frobnicate"], 2, "unrecognized", None),
    ("srv-max-threads-not-threads", S + ["poll", "--max-threads", "4"], 2, "threads server only",
     None),
    ("srv-stats-dir", S + ["epoll", "--stats", "{d}"], 2, "is a directory", None),
    ("srv-stats-no-parent", S + ["epoll", "--stats", "{d}/no/such/stats.json"], 1,
     "does not exist", None),
    ("srv-stats-through-file", S + ["epoll", "--stats", "{d}/afile/stats.json"], 1,
     "is not a directory", _file("afile")),
    ("srv-stats-proc", S + ["epoll", "--stats", "/proc/version"], 1, "cannot create files in /proc",
     None),
    ("srv-snapshots-dir", S + ["select", "--snapshots", "{d}"], 2, "is a directory", None),
    ("srv-snapshots-proc", S + ["select", "--snapshots", "/proc/version"], 1, "cannot append",
     None),
    ("srv-snapshots-no-parent", S + ["uvloop", "--snapshots", "{d}/no/s.jsonl"], 1,
     "does not exist", None),
    ("srv-host-not-here", S + ["epoll", "--host", "192.0.2.1"], 1, "cannot listen", None),
    # -- python -m loadgen ----------------------------------------------------------
    ("lg-no-target", [sys.executable, "-m", "loadgen", "--connections", "1"], 2, "--target", None),
    ("lg-target-no-port", [sys.executable, "-m", "loadgen", "--target", "127.0.0.1",
                           "--connections", "1"], 2, "HOST:PORT", None),
    ("lg-target-name", [sys.executable, "-m", "loadgen", "--target", "example.com:80",
                        "--connections", "1"], 2, "not looked up", None),
    ("lg-target-remote", [sys.executable, "-m", "loadgen", "--target", "192.0.2.1:80",
                          "--connections", "1"], 2, "--allow-remote", None),
    ("lg-target-port-0", [sys.executable, "-m", "loadgen", "--target", "127.0.0.1:0",
                          "--connections", "1"], 2, "1-65535", None),
    ("lg-target-ipv6-bare", [sys.executable, "-m", "loadgen", "--target", "::1:80",
                             "--connections", "1"], 2, "brackets", None),
    ("lg-connections-0", L + ["--connections", "0"], 2, "at least 1", None),
    ("lg-connections-word", L + ["--connections", "many"], 2, "not a number", None),
    ("lg-connections-1e8", L + ["--connections", "100000000"], 2, "descriptors", None),
    ("lg-connections-sources", L + ["--connections", "300000", "--procs", "20"], 2,
     "source addresses", None),
    ("lg-msg-size-1g", L + ["--connections", "1", "--msg-size", "1073741824"], 2, "at most",
     None),
    ("lg-msg-size-tiny", L + ["--connections", "1", "--msg-size", "8"], 2, "at least", None),
    ("lg-ratio", L + ["--connections", "1", "--active-ratio", "1.5"], 2, "[0, 1]", None),
    ("lg-ratio-nan", L + ["--connections", "1", "--active-ratio", "nan"], 2, "[0, 1]", None),
    ("lg-duration-0", L + ["--connections", "1", "--duration", "0"], 2, "positive", None),
    ("lg-duration-inf", L + ["--connections", "1", "--duration", "inf"], 2, "positive", None),
    ("lg-warmup-negative", L + ["--connections", "1", "--warmup", "-1"], 2, "zero or more", None),
    ("lg-procs-0", L + ["--connections", "1", "--procs", "0"], 2, "at least 1", None),
    ("lg-procs-300", L + ["--connections", "300", "--procs", "300"], 2, "at most", None),
    ("lg-rate-0", L + ["--connections", "1", "--rate", "0"], 2, "positive", None),
    ("lg-arrivals-closed", L + ["--connections", "1", "--arrivals", "poisson"], 2, "--rate",
     None),
    ("lg-pipeline-0", L + ["--connections", "1", "--pipeline", "0"], 2, "at least 1", None),
    ("lg-cpus-absent", L + ["--connections", "1", "--cpus", "4096"], 2, "not available", None),
    ("lg-cpus-garbage", L + ["--connections", "1", "--cpus", "a-b"], 2, "CPU number", None),
    ("lg-signal-pid-0", L + ["--connections", "1", "--signal-pid", "0"], 2, "process id", None),
    ("lg-signal-pid-gone", L + ["--connections", "1", "--signal-pid", "999999999"], 2,
     "no such process", None),
    ("lg-out-dir", L + ["--connections", "1", "--out", "{d}"], 2, "is a directory", None),
    ("lg-out-proc", L + ["--connections", "1", "--out", "/proc/version"], 1,
     "cannot create files in /proc", None),
    ("lg-out-no-parent", L + ["--connections", "1", "--out", "{d}/no/x.json"], 1,
     "does not exist", None),
    # -- python -m bench --------------------------------------------------------------
    ("b-no-verb", B, 2, "required", None),
    ("b-profile-unknown", B + ["run", "--profile", "quik", "--out", "{d}/r"], 2, "quick", None),
    ("b-profile-missing", B + ["run", "--profile", "{d}/none.toml", "--out", "{d}/r"], 2,
     "none.toml", None),
    ("b-profile-binary", PROFILE, 2, "not UTF-8", _file("p.toml", bytes(range(128, 256)))),
    ("b-profile-connections-1e8", PROFILE, 2, "descriptor limit",
     _profile(experiment="connections = 100000000\nactive = 1\n")),
    ("b-profile-connections-range-1e9", PROFILE, 2, "connections.to",
     _profile(experiment="connections = {from = 1, to = 1000000000, step = 1}\nactive = 1\n")),
    ("b-profile-axis-too-long", PROFILE, 2, "values of one axis",
     _profile(experiment="connections = {from = 1, to = 5001, step = 1}\nactive = 1\n")),
    ("b-profile-msg-size-1g", PROFILE, 2, "largest message",
     _profile(experiment="connections = 10\nactive = 1\nmsg_size = 1073741824\n")),
    ("b-profile-repetitions-1e9", PROFILE, 2, "repetitions", _profile("repetitions = 1000000000")),
    ("b-profile-procs-300", PROFILE, 2, "procs", _profile("procs = 300")),
    ("b-profile-procs-over-connections", PROFILE, 2, "fewest connections", _profile("procs = 20")),
    ("b-profile-too-many-points", PROFILE, 2, "points",
     _profile("repetitions = 1000", "connections = {from = 10, to = 1000, step = 10}\n"
                                    "active = 1\nmsg_size = [64, 128]\n")),
    ("b-profile-over-24h", PROFILE, 2, "--force", _profile("window_s = 100000")),
    ("b-profile-memory-1e6", PROFILE, 2, "descriptor limit",
     _file("p.toml", '[[experiment]]\nkind = "memory"\nconnections = 1000000\n')),
    ("b-run-out-file", B + ["run", "--profile", "quick", "--out", "{d}/afile"], 2,
     "is a file", _file("afile")),
    ("lg-out-through-file", L + ["--connections", "1", "--out", "{d}/afile/x.json"], 1,
     "is not a directory", _file("afile")),
    ("b-run-out-through-file", B + ["run", "--profile", "quick", "--out", "{d}/afile/r"], 1,
     "not a directory", _file("afile")),
    ("b-run-out-proc", B + ["run", "--profile", "quick", "--out", "/proc/iomux"], 1,
     "cannot create entries in /proc", None),
    ("b-run-out-and-resume", B + ["run", "--out", "{d}/a", "--resume", "{d}/b"], 2,
     "not both", None),
    ("b-run-only-bad-regex", B + ["run", "--profile", "quick", "--only", "(", "--out", "{d}/r"],
     2, "regular expression", None),
    ("b-resume-missing", B + ["run", "--resume", "{d}/none"], 2, "not a run directory", None),
    ("b-resume-file", B + ["run", "--resume", "{d}/afile"], 2, "not a run directory",
     _file("afile")),
    ("b-resume-meta-list", B + ["run", "--resume", "{d}/run"], 1, "not an object",
     _run_dir("[1, 2]")),
    ("b-resume-meta-garbage", B + ["run", "--resume", "{d}/run"], 1, "not valid JSON",
     _run_dir("{not json")),
    ("b-resume-meta-binary", B + ["run", "--resume", "{d}/run"], 1, "not valid JSON",
     _run_dir(RANDOM.decode("latin-1"))),
    ("b-report-file", B + ["report", "{d}/afile"], 2, "not a run directory", _file("afile")),
    ("b-report-missing", B + ["report", "{d}/none"], 2, "not a run directory", None),
    ("b-report-meta-list", B + ["report", "{d}/run"], 1, "not an object", _run_dir("[]")),
    ("b-report-meta-format", B + ["report", "{d}/run"], 1, "format", _run_dir({"format": 99})),
    ("b-report-points-random", B + ["report", "{d}/run"], 1, "not a CSV table",
     _run_dir({"format": 1}, RANDOM)),
    ("b-report-points-not-points", B + ["report", "{d}/run"], 1, "no column",
     _run_dir({"format": 1}, b"a,b\n1,2\n")),
    ("b-report-points-damaged-middle", B + ["report", "{d}/run"], 1, "fields",
     _run_dir({"format": 1}, b"point_id,x\na,1,2,3\nb,1\n")),
    ("b-compare-missing", B + ["compare", "{d}/run", "{d}/none"], 2, "not a run directory",
     _run_dir({"format": 1})),
    ("b-micro-out-file", B + ["micro", "--out", "{d}/afile"], 2, "is a file", _file("afile")),
    ("b-micro-out-proc", B + ["micro", "--out", "/proc/iomux"], 1,
     "cannot create entries in /proc", None),
    ("b-micro-out-through-file", B + ["micro", "--out", "{d}/afile/r"], 1, "not a directory",
     _file("afile")),
]


def _tree(d: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(d.rglob("*"))}


def _left_running(marker: str) -> list[int]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return found


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case run once, in parallel: id -> (CompletedProcess, tree before, tree after)."""
    root = tmp_path_factory.mktemp("hostile")
    marker = f"{os.getpid()}-{root.name}"

    def one(case):
        name, argv, _, _, setup = case
        d = root / name
        d.mkdir()
        if setup:
            setup(d)
        before = _tree(d)
        r = subprocess.run([a.replace("{d}", str(d)) for a in argv], capture_output=True,
                           text=True, timeout=120, cwd=d, env=dict(os.environ, **{MARK: marker}),
                           stdin=subprocess.DEVNULL)
        return name, (r, before, _tree(d))

    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        results = dict(pool.map(one, CASES))
    results["_left_running"] = _left_running(marker)
    return results


def test_the_catalogue_covers_the_three_command_lines():
    kinds = {c[0].split("-")[0] for c in CASES}
    assert kinds == {"srv", "lg", "b"} and len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, argv, code, words, setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code_and_leaves_nothing(outcomes, name, argv, code,
                                                                     words, setup):
    r, before, after = outcomes[name]
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert words in lines[0], lines[0]
    assert "error" in lines[0]
    assert r.returncode == code, (r.returncode, lines[0])
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"


def test_no_case_left_a_process_running(outcomes):
    assert outcomes["_left_running"] == []
