"""Run directories on disk: append rows, write JSON atomically, load a run.

A run directory is never overwritten: rows are only appended (and flushed
at once, so an interrupted run keeps every finished point) and JSON files
are replaced through a temporary file and a rename.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from bench.rundir.schema import FORMAT, TABLES
from servers.sysutil import write_json  # noqa: F401  (re-exported: the run directory's JSON writer)


class RunFormatError(ValueError):
    """A run directory this version cannot read (exit 1)."""


class NotARunError(RunFormatError):
    """A path given as a run directory that is none (bad usage: exit 2)."""


class Run(NamedTuple):
    path: Path
    meta: dict
    points: pd.DataFrame
    micro: pd.DataFrame
    syscalls: pd.DataFrame
    memory: pd.DataFrame


def append_row(path: Path | str, row: dict, columns: list[str]) -> None:
    """Append one row (header first if the file is new); flushed to disk at once.

    Keys outside `columns` are appended as extra columns only when the file
    is new; a value missing from `row` is written as an empty cell.
    """
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    if new:
        header = list(columns) + [k for k in row if k not in columns]
    else:
        with open(path, newline="") as f:
            header = next(csv.reader(f))
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        w.writerow(["" if row.get(k) is None else row.get(k) for k in header])
        f.flush()
        os.fsync(f.fileno())


def read_meta(run_dir: Path | str) -> dict:
    path = Path(run_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotARunError(f"{run_dir} is not a run directory: no meta.json "
                             "(give a directory made by `python -m bench run`)") from None
    except json.JSONDecodeError as e:
        raise RunFormatError(f"{path} is not valid JSON ({e}); the run is damaged") from None
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise RunFormatError(f"meta.json has format {fmt}; this bench reads {FORMAT}. "
                             "Upgrade iomux-bench.")
    return meta


def load_table(run_dir: Path | str, name: str) -> pd.DataFrame:
    """One CSV of the run as a DataFrame; an empty frame with the columns if absent."""
    path = Path(run_dir) / name
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=TABLES[name])
    return pd.read_csv(path)


def load_run(run_dir: Path | str) -> Run:
    """Load a run directory: meta.json and every table, refusing unknown formats."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    return Run(run_dir, meta, *(load_table(run_dir, n) for n in TABLES))
