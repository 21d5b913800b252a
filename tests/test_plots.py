"""bench.report.plots: every figure as PNG and SVG, one colour per mechanism, units, hollow flagged points."""

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench.analysis import stats as an  # noqa: E402
from bench.report import plots  # noqa: E402
from bench.rundir.schema import TABLES  # noqa: E402
from bench.rundir.store import load_run  # noqa: E402
from synthetic import make_run  # noqa: E402
from tiny_run import synthetic_run, tiny_run, tiny_run_dir  # noqa: E402,F401

TABLE_FILE = {"points": "points.csv", "micro": "micro.csv", "syscalls": "syscalls.csv", "memory": "memory.csv"}


def draw(name, df):
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = plots.FIGURES[name].plot(df, fig.add_subplot())
    return fig, ax


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    run = load_run(tiny_run_dir(tmp_path_factory)[0])
    out = tmp_path_factory.mktemp("plots")
    return run, out, plots.save_all(run, out)


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_every_figure_writes_a_non_empty_png_and_svg_for_the_tiny_run(saved, tmp_path_factory, name):
    run, out, written = saved
    if not plots.has_data(run, name):
        kind = tiny_run_dir(tmp_path_factory)[1]
        assert kind != "synthetic", "the synthetic run has data for every figure"
        pytest.skip(f"{name}: the tiny {kind} run has no {name} task; "
                    "test_every_figure_draws_from_the_committed_reference_run covers it")
    assert name in written
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert b"<svg" in svg.read_bytes()[:2000] and svg.stat().st_size > 5000


REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"


def test_every_figure_draws_from_the_committed_reference_run(tmp_path):
    run = load_run(REFERENCE)
    written = plots.save_all(run, tmp_path)
    assert sorted(written) == sorted(plots.FIGURES)      # a complete run has data for each
    for name in written:
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
        assert b"<svg" in (tmp_path / f"{name}.svg").read_bytes()[:2000]


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_every_figure_has_units_on_its_axes(synthetic_run, name):
    run = load_run(synthetic_run)
    _, ax = draw(name, plots.table_for(run, name))
    # bar charts have one categorical axis (mechanisms, syscalls); every other axis names a unit
    numeric = {"memory": [ax.get_ylabel()], "syscalls": [ax.get_xlabel()]}.get(
        name, [ax.get_xlabel(), ax.get_ylabel()])
    for text in numeric:
        assert "(" in text and text.endswith(")"), f"{name}: axis label {text!r} names no unit"


@pytest.mark.parametrize("name", list(plots.FIGURES))
def test_a_missing_table_draws_a_note_instead_of_failing(name):
    table = plots.FIGURES[name].data.table
    _, ax = draw(name, pd.DataFrame(columns=TABLES[TABLE_FILE[table]]))
    assert any("no " in t.get_text() for t in ax.texts)


def test_each_mechanism_keeps_its_colour_in_every_figure(synthetic_run):
    run = load_run(synthetic_run)
    seen = set()
    for name in ("scan_throughput", "ready_cpu", "micro_wait_1_ready", "msgsize"):
        _, ax = draw(name, plots.table_for(run, name))
        for line in ax.get_lines():
            mech = line.get_label().split(":")[0].split(" (")[0]
            if mech in plots.COLORS:
                assert line.get_color() == plots.COLORS[mech], (name, mech)
                seen.add(mech)
    assert seen == {"select", "poll", "epoll", "epoll-et", "epoll-toggle", "threads"}


def test_references_are_labelled_and_keep_their_colour(tmp_path):
    run = load_run(make_run(tmp_path / "run", experiments=("scan",), micro=False,
                            mechanisms=("poll", "epoll", "epoll-toggle", "uvloop")))
    _, ax = draw("scan_throughput", run.points)
    labels = {line.get_label(): line.get_color() for line in ax.get_lines()}
    assert labels["epoll-toggle (reference)"] == plots.COLORS["epoll-toggle"]
    assert labels["uvloop (reference)"] == plots.COLORS["uvloop"]
    assert "poll" in labels


def test_saturated_points_are_hollow_and_left_out_of_the_line(synthetic_run):
    run = load_run(synthetic_run)          # scan poll at 1000 connections: rep 0 saturated (3x cost)
    _, ax = draw("scan_wait", run.points)
    hollow = [c for c in ax.collections if isinstance(c, PathCollection)
              and c.get_facecolors().size == 0 and len(c.get_offsets())]
    assert hollow, "no hollow markers drawn"
    rows = an.experiment(an.classify(run.points), "scan")
    flagged = rows[rows["saturated"]]
    assert len(flagged) == 1
    xy = hollow[0].get_offsets()[0]
    assert (xy[0], xy[1]) == pytest.approx((1000, flagged["wait_ns_per_call"].item()))
    poll_line = next(line for line in ax.get_lines() if line.get_label().startswith("poll"))
    at_1000 = dict(zip(poll_line.get_xdata(), poll_line.get_ydata()))[1000]
    clean = rows[(rows["mechanism"] == "poll") & (rows["connections"] == 1000) & rows["usable"]]
    assert at_1000 == pytest.approx(clean["wait_ns_per_call"].median())


def test_log_axes_where_the_values_span_decades_linear_elsewhere(synthetic_run):
    run = load_run(synthetic_run)
    _, ax = draw("scan_throughput", run.points)
    assert ax.get_xscale() == "log"            # 10 .. 10,000 connections
    _, ax = draw("fdlimit", run.points)
    assert ax.get_xscale() == "linear"         # 900 .. 1,100
    _, ax = draw("micro_wait_1_ready", run.micro)
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")


def test_figures_carry_ci_bands_and_the_fitted_lines(synthetic_run):
    run = load_run(synthetic_run)
    _, ax = draw("scan_wait", run.points)
    assert any(type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection") for c in ax.collections)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("poll: ") and "R²" in t for t in legend)
    assert any("CI of the median" in t for t in legend)
