"""The report's figures: one plot_<name>(df, ax=None) -> Axes each, saved by save_all.

Every figure follows the same conventions, so a reader learns them once:
one fixed colour per mechanism (references included, labelled "(reference)"),
units on every axis, log axes where the values span decades, the median over
repetitions as a line with its CI as a band (bench.analysis.stats), saturated or
noisy repetitions drawn as hollow markers and left out of lines and fits, and
repetitions whose server used >= 90% of its core drawn as crosses and left out
of every CPU line.

`df` is the run's table the figure reads (points, micro, syscalls or memory,
see FIGURES); a figure whose data are absent draws a "no data" note.
save_all draws on matplotlib Figures directly (Agg canvas, no pyplot state),
so it is safe to call from servers, tests and notebooks alike.

Modules: common (colours, labels, data selections, drawing helpers),
point_figures, ready_figures, micro_figures, resource_figures and
threads_figures (the figures, by the data they read), registry (FIGURES,
save_all). A new figure is one plot_<name> in the module of its data plus
one FIGURES entry; this package re-exports both.
"""

from bench.report.plots.common import COLORS, ORDER, Selection, color, label, mechanisms_in
from bench.report.plots.micro_figures import (plot_micro_cpu_split, plot_micro_drain_1_ready,
                                              plot_micro_drain_all_ready, plot_micro_wait_0_ready,
                                              plot_micro_wait_1_ready,
                                              plot_micro_wait_all_ready)
from bench.report.plots.point_figures import (plot_capacity, plot_msgsize, plot_scan_cpu, plot_scan_latency,
                                              plot_scan_throughput, plot_scan_wait)
from bench.report.plots.ready_figures import (plot_ready_cpu, plot_ready_cpu_large_n, plot_ready_drain,
                                              plot_ready_events)
from bench.report.plots.registry import FIGURES, FigureSpec, has_data, save_all, table_for
from bench.report.plots.resource_figures import MIN_CALLS_PER_MSG, plot_fdlimit, plot_memory, plot_syscalls
from bench.report.plots.threads_figures import plot_threads_cpu, plot_threads_memory

__all__ = [
    "COLORS", "ORDER", "Selection", "color", "label", "mechanisms_in",
    "FIGURES", "FigureSpec", "has_data", "save_all", "table_for", "MIN_CALLS_PER_MSG",
    "plot_micro_wait_0_ready", "plot_micro_wait_1_ready", "plot_micro_wait_all_ready",
    "plot_micro_drain_1_ready", "plot_micro_drain_all_ready",
    "plot_scan_wait", "plot_scan_throughput", "plot_scan_latency", "plot_scan_cpu", "plot_capacity",
    "plot_msgsize", "plot_ready_cpu", "plot_ready_cpu_large_n", "plot_ready_events", "plot_ready_drain",
    "plot_fdlimit", "plot_syscalls", "plot_memory",
    "plot_micro_cpu_split", "plot_threads_cpu", "plot_threads_memory",
]
