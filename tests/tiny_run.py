"""The tiny run the figure, report and notebook tests read: real when it can be.

`tiny_run` is a directory made once per test session, in this order:
1. IOMUX_TEST_RUN names an existing run directory: use it as is
   (IOMUX_TEST_RUN=synthetic forces case 3, for a fast local loop);
2. otherwise a copy of the committed reference run (results/reference: a real
   `make bench`, every table and figure), so no test writes into the original;
   IOMUX_TEST_RUN=tiny makes a real `python -m bench run` of TINY_PROFILE
   instead (about 80 s on 2 cores);
3. with IOMUX_TEST_RUN=synthetic, a synthetic run with every table and probe
   (tests/synthetic.py).
`tiny_run_kind()` says which one the session got.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic import FULL_SYNTHETIC, make_run

REPO = Path(__file__).resolve().parents[1]

# every experiment at the smallest scale that still draws each figure
TINY_PROFILE = """
description = "every experiment at the smallest scale that still draws each figure"
repetitions = 1
warmup_s = 0.2
window_s = 0.3
mechanisms = ["select", "poll", "epoll", "epoll-et"]
seed = 7

[[experiment]]
kind = "scan"
connections = [10, 200]
active = 5
msg_size = 64

[[experiment]]
kind = "ready"
connections = 100
ready = [0, 1, 10, 100]
bursts = 10
burst_messages = 100

[[experiment]]
kind = "msgsize"
connections = 10
active = 10
msg_size = [64, 4096]

[[experiment]]
kind = "fdlimit"
mechanisms = ["select", "epoll"]
connections = [1000, 1040]
active_ratio = 1.0

[[experiment]]
kind = "micro"
quick = true
"""

_SESSION: dict[str, tuple[Path, str]] = {}


def tiny_run_dir(tmp_path_factory) -> tuple[Path, str]:
    """(run directory, "given" | "real" | "synthetic"), made once per session."""
    if "run" in _SESSION:
        return _SESSION["run"]
    given = os.environ.get("IOMUX_TEST_RUN")
    if given and given != "synthetic":
        _SESSION["run"] = Path(given), "given"
    elif given != "synthetic" and given != "tiny":
        out = tmp_path_factory.mktemp("reference-copy") / "reference"
        shutil.copytree(REPO / "results" / "reference", out)
        _SESSION["run"] = out, "real"
    elif given == "tiny":
        base = tmp_path_factory.mktemp("tiny-real")
        (base / "tiny.toml").write_text(TINY_PROFILE)
        out = base / "run"
        r = subprocess.run([sys.executable, "-m", "bench", "run", "--profile", str(base / "tiny.toml"),
                            "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
        assert r.returncode == 0 and (out / "points.csv").exists(), \
            f"tiny real run failed ({r.returncode}): {r.stderr[-3000:]}"
        _SESSION["run"] = out, "real"
    else:
        out = tmp_path_factory.mktemp("tiny-synthetic") / "run"
        _SESSION["run"] = make_run(out, reps=3, **FULL_SYNTHETIC), "synthetic"
    return _SESSION["run"]


@pytest.fixture
def tiny_run(tmp_path_factory) -> Path:
    """A small complete run directory (see the module docstring)."""
    return tiny_run_dir(tmp_path_factory)[0]


@pytest.fixture
def synthetic_run(tmp_path_factory) -> Path:
    """A full synthetic run: every table, probe and figure has data, with flagged points."""
    if "synthetic" not in _SESSION:
        out = tmp_path_factory.mktemp("full-synthetic") / "run"
        _SESSION["synthetic"] = make_run(
            out, reps=3, saturate=(("scan", "poll", 1000),), noisy_points=(("activity", "epoll", 1000),),
            **FULL_SYNTHETIC), "synthetic"
    return _SESSION["synthetic"][0]
