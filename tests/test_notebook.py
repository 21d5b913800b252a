"""notebooks/explore.ipynb runs end to end, headless, against a tiny run (nbclient)."""

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the test extra: nbformat, nbclient, ipykernel")
nbclient = pytest.importorskip("nbclient", reason="install the test extra: nbformat, nbclient, ipykernel")
pytest.importorskip("ipykernel", reason="install the test extra: nbformat, nbclient, ipykernel")

from tiny_run import REPO, tiny_run, tiny_run_dir  # noqa: E402,F401

NOTEBOOK = REPO / "notebooks" / "explore.ipynb"


def test_the_committed_notebook_has_its_outputs_cleared():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_the_notebook_reads_runs_only_through_the_loader_and_the_plot_functions():
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    assert "load_run(" in source and "read_csv" not in source and "json.load" not in source
    from bench.report import plots
    for name, spec in plots.FIGURES.items():
        assert f"plots.{spec.plot.__name__}(" in source, f"the notebook does not rebuild {name}"


def test_the_notebook_executes_headless_against_a_tiny_run(tiny_run, monkeypatch):
    monkeypatch.setenv("IOMUX_RUN", str(tiny_run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()                       # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert str(tiny_run.resolve()) in text                    # it opened the run IOMUX_RUN names
    assert all(f"C{i}" in text for i in range(1, 9))          # the claims table
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 15                                  # every figure (no-data notes included)
