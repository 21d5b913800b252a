"""The layers of bench/ hold: every module imports, and no lower layer imports a higher one.

    cli -> sweep, report -> tasks, analysis -> rundir      (bench/__init__.py)

Imports are read from the source (ast), including the ones inside functions,
so a lazy upward import is caught as well as a top-level one.
"""

import ast
import importlib
from pathlib import Path

import pytest

import bench

ROOT = Path(bench.__file__).parent
# layer -> the bench layers it may import (itself included)
ALLOWED = {
    "rundir": {"rundir"},
    "tasks": {"tasks", "rundir"},
    "analysis": {"analysis", "rundir"},
    "sweep": {"sweep", "tasks", "analysis", "rundir"},
    "report": {"report", "analysis", "rundir"},
    "cli": {"cli", "sweep", "report", "tasks", "analysis", "rundir"},
}
MODULES = sorted(p for p in ROOT.rglob("*.py"))


def layer_of(module: str) -> str | None:
    """bench.sweep.run -> "sweep"; bench.cli / bench.__main__ -> "cli"; bench -> None."""
    parts = module.split(".")
    if parts[0] != "bench" or len(parts) == 1:
        return None
    return "cli" if parts[1] in ("cli", "__main__") else parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def bench_imports(path: Path) -> set[str]:
    """Every bench.* module path named by an import in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("bench")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if base.startswith("bench"):
                out |= {f"{base}.{a.name}" for a in node.names} | {base}
    return out


def test_every_module_sits_in_a_known_layer():
    layers = {layer_of(module_name(p)) for p in MODULES} - {None}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_module_imports_and_looks_only_down(path):
    name = module_name(path)
    if not path.name == "__main__.py":
        importlib.import_module(name)
    layer = layer_of(name)
    if layer is None:
        return
    upward = {m for m in bench_imports(path) if layer_of(m) not in ALLOWED[layer] | {None}}
    assert not upward, f"{name} ({layer}) imports {sorted(upward)}: allowed {sorted(ALLOWED[layer])}"


def test_the_check_catches_an_upward_import(tmp_path):
    # the rule itself can fail: a tasks module that imports the sweep
    bad = ROOT / "tasks" / "_layout_probe.py"
    bad.write_text("from bench.sweep import plan\n")
    try:
        found = {m for m in bench_imports(bad) if layer_of(m) not in ALLOWED["tasks"] | {None}}
    finally:
        bad.unlink()
    assert found == {"bench.sweep.plan", "bench.sweep"}
