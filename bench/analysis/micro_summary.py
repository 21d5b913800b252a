"""The per-fd slope lines printed after a micro run (C2, C3, C7), fitted by stats.linear_fit."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from bench.analysis import stats
from bench.rundir.store import load_table

MECHANISMS = ("select", "poll", "epoll", "io_uring")   # the ones micro measures (bench.tasks.micro)
CASES = ((0, "zero"), (1, "zero"), (1, "blocking"))   # (ready, timeout_mode) summarised


def summary_lines(micro: pd.DataFrame) -> list[str]:
    """Per-fd slopes of the wait cost (ns per registered fd), one line per case and span.

    Every mechanism that ran is fitted over the sizes all of them ran (select
    stops at FD_SETSIZE), then the others again over all their sizes.
    """
    lines = []
    for ready, mode in CASES:
        rows = stats.micro_wait(micro, str(ready), mode)
        cost = {m: rows[rows["mechanism"] == m] for m in MECHANISMS}
        present = tuple(m for m in MECHANISMS if len(cost[m]))   # io_uring may be refused here
        if not present:
            continue
        sizes = {m: {int(n) for n in cost[m]["registered"]} for m in present}
        common = sorted(set.intersection(*sizes.values()))
        spans = [(common, present)]
        if any(s != set(common) for s in sizes.values()):
            rest = tuple(m for m in present if m != "select")   # past FD_SETSIZE
            spans.append((sorted(set().union(*(sizes[m] for m in rest))), rest))
        for span, mechs in spans:
            parts = []
            for m in mechs:
                c = cost[m][cost[m]["registered"].isin(span)]
                if len(c) >= 2:
                    fit = stats.linear_fit(c["registered"], c["ns_median"])
                    parts.append(f"{m} {fit.slope:7.2f} ns/fd (R2 {fit.r2:.2f})")
            if parts:
                lines.append(f"micro slope ready={ready} {mode:8} N<={span[-1]:<5}: "
                             + "  ".join(parts))
    return lines


def run_summary_lines(run_dir: Path | str) -> list[str]:
    """summary_lines of run_dir/micro.csv (none when it is absent or empty)."""
    return summary_lines(load_table(run_dir, "micro.csv"))


def print_summary(run_dir: Path | str, file=None) -> None:
    """Print run_summary_lines(run_dir) to file (default stderr), one line each."""
    for line in run_summary_lines(run_dir):
        print(line, file=file or sys.stderr, flush=True)
