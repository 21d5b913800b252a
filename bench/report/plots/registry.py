"""FIGURES, the registry of every figure and the table it reads, and save_all, which draws them to files."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.report.plots import (micro_figures, point_figures, ready_figures, resource_figures,
                                threads_figures)
from bench.report.plots.common import Selection, _exp, _micro, _nonempty


class FigureSpec(NamedTuple):
    plot: Callable[..., Axes]
    data: Selection


# figure name -> its plot function and data, in report order; render.TITLES and readings name the same figures
FIGURES: dict[str, FigureSpec] = {
    "micro_wait_0_ready": FigureSpec(micro_figures.plot_micro_wait_0_ready, _micro("0")),
    "micro_wait_1_ready": FigureSpec(micro_figures.plot_micro_wait_1_ready, _micro("1")),
    "micro_wait_all_ready": FigureSpec(micro_figures.plot_micro_wait_all_ready, _micro("all")),
    "micro_drain_1_ready": FigureSpec(micro_figures.plot_micro_drain_1_ready, _micro("1", "drain")),
    "micro_drain_all_ready": FigureSpec(micro_figures.plot_micro_drain_all_ready, _micro("all", "drain")),
    "scan_wait": FigureSpec(point_figures.plot_scan_wait, _exp("scan")),
    "scan_throughput": FigureSpec(point_figures.plot_scan_throughput, _exp("scan")),
    "scan_latency": FigureSpec(point_figures.plot_scan_latency, _exp("scan")),
    "scan_cpu": FigureSpec(point_figures.plot_scan_cpu, _exp("scan")),
    "capacity": FigureSpec(point_figures.plot_capacity, _exp("scan-rate")),
    "ready_cpu": FigureSpec(ready_figures.plot_ready_cpu, _exp("ready")),
    "ready_cpu_large_n": FigureSpec(ready_figures.plot_ready_cpu_large_n, _exp("ready")),
    "ready_events": FigureSpec(ready_figures.plot_ready_events, _exp("ready")),
    "ready_drain": FigureSpec(ready_figures.plot_ready_drain, _exp("ready")),
    "fdlimit": FigureSpec(resource_figures.plot_fdlimit, _exp("fdlimit")),
    "msgsize": FigureSpec(point_figures.plot_msgsize, _exp("msgsize")),
    "syscalls": FigureSpec(resource_figures.plot_syscalls, _nonempty("syscalls", "calls_per_msg")),
    "memory": FigureSpec(resource_figures.plot_memory, _nonempty("memory", "per_conn_kernel_bytes")),
    "micro_cpu_split": FigureSpec(micro_figures.plot_micro_cpu_split,
                                  Selection("micro", micro_figures.micro_split_rows)),
    "threads_cpu": FigureSpec(threads_figures.plot_threads_cpu,
                              Selection("points", threads_figures.threads_cpu_rows)),
    "threads_memory": FigureSpec(threads_figures.plot_threads_memory,
                                 Selection("memory", threads_figures.threads_memory_rows)),
}


def table_for(run, name: str) -> pd.DataFrame:
    """The run's table that figure `name` reads."""
    return getattr(run, FIGURES[name].data.table)


def has_data(run, name: str) -> bool:
    """Whether the run holds the data figure `name` draws."""
    spec = FIGURES[name]
    df = table_for(run, name)
    return df is not None and not df.empty and not spec.data.select(df).empty


def save_all(run, out_dir: Path | str) -> list[str]:
    """Draw every figure the run has data for as out_dir/<name>.png and .svg; return the names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in FIGURES.items():
        if not has_data(run, name):
            continue
        fig = Figure(figsize=(6.4, 4.2))
        FigureCanvasAgg(fig)
        spec.plot(table_for(run, name), fig.add_subplot())
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=120)
        fig.savefig(out_dir / f"{name}.svg", metadata={"Date": None})
        written.append(name)
    return written
