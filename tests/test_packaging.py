"""The project installs quietly and ships every package and profile (built offline, no isolation)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_without_warnings_and_holds_every_package(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in (r.stdout + r.stderr).splitlines()
                if "warning" in line.lower() and "is ignored: it is neither" not in line]
    assert not warnings, warnings
    (wheel,) = tmp_path.glob("iomux_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for top in ("bench", "loadgen", "servers")
                for p in (ROOT / top).glob("**/__init__.py")}
    assert packages and all(f"{p}/__init__.py" in names for p in packages), packages
    assert {f"bench/sweep/profiles/{n}.toml" for n in ("quick", "default", "full")} <= names


def test_editable_install_is_quiet(tmp_path):
    # what `pip install -e .` (make test, make bench) runs: setuptools' PEP 660 hook
    code = f"from setuptools import build_meta; build_meta.build_editable({str(tmp_path)!r})"
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    noise = [line for line in (r.stdout + r.stderr).splitlines()
             if "warning" in line.lower() or "careful" in line.lower()]
    assert not noise, noise
