"""Run directories on disk: append rows, write JSON atomically, load a run.

A run directory is never overwritten: rows are only appended (and flushed
at once, so an interrupted run keeps every finished point) and JSON files
are replaced through a temporary file and a rename.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bench.rundir.schema import FORMAT, TABLES

if TYPE_CHECKING:
    import pandas as pd
from servers.sysutil import OutputPathError
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
    warnings: tuple[str, ...] = ()   # rows missing or torn: said on stderr and in the report


class Table(NamedTuple):
    """A CSV file split into its whole records and what follows them."""

    header: list[str]
    rows: list[list[str]]
    good_bytes: int       # length of the whole records, header included
    torn: bytes           # a last record cut short (kill -9, disk full), else b""


def check_out_dir(path: Path | str, option: str = "--out") -> None:
    """Raise OutputPathError unless a run directory can be written at path (made if new).

    A file where the directory goes is bad usage (exit 2); a path through a
    file, or a directory that takes no new entries (permissions, /proc, a
    read-only mount), cannot be written (exit 1). Probed by creating and removing an entry, since
    access() answers yes to root everywhere. Nothing is left behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file, not a directory: give a directory "
                              "(a new one for a new run)", 2)
    probe_in = path
    while not probe_in.exists():
        if probe_in.is_symlink():
            raise OutputPathError(f"{option} {path}: {probe_in} is a dangling link; remove it "
                                  "or choose another path", 2)
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise OutputPathError(f"{option} {path}: {probe_in} is not a directory; choose a "
                              f"writable {option}")
    probe = probe_in / f".iomux-probe{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise OutputPathError(f"{option} {path}: cannot create entries in {probe_in} "
                              f"({e.strerror}); choose a writable {option}") from None


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
    if not Path(run_dir).is_dir():
        raise NotARunError(f"{run_dir} is not a run directory (not a directory): give a "
                           "directory made by `python -m bench run`")
    try:
        meta = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotARunError(f"{run_dir} is not a run directory: no meta.json "
                             "(give a directory made by `python -m bench run`)") from None
    except IsADirectoryError:
        raise RunFormatError(f"{path} is a directory, not a file; the run is damaged") from None
    except PermissionError:
        raise RunFormatError(f"cannot read {path}: permission denied") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFormatError(f"{path} is not valid JSON ({e}); the run is damaged") from None
    if not isinstance(meta, dict):
        raise RunFormatError(f"{path} holds a JSON {type(meta).__name__}, not an object; "
                             "the run is damaged")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise RunFormatError(f"meta.json has format {fmt}; this bench reads {FORMAT}. "
                             "Upgrade iomux-bench.")
    return meta


def read_table(path: Path | str) -> Table:
    """Split a CSV file into whole records and a torn tail; RunFormatError if it is no CSV.

    The last record is torn when the file does not end with a newline or the
    record has another number of fields than the header (a half row, or a
    half row with the next one appended to it). Damage anywhere else is not
    a torn write and is refused.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode()
    except UnicodeDecodeError:
        raise RunFormatError(f"{path} is not a CSV table (not UTF-8 text); the run is "
                             "damaged: move the file aside") from None
    except OSError as e:
        raise RunFormatError(f"cannot read {path}: {e.strerror}") from None
    consumed = [0]

    def lines():
        for line in io.StringIO(text, newline=""):
            consumed[0] += len(line)
            yield line
    records = []                                        # (fields or None, end offset)
    try:
        for record in csv.reader(lines(), strict=True):
            records.append((record, consumed[0]))
    except csv.Error:
        records.append((None, len(text)))               # an unclosed quote: a cut record
    header = records[0][0] or [] if records else []
    rows, good_end = [], 0
    for i, (record, end) in enumerate(records):
        whole = record is not None and (i == 0 or len(record) == len(header))
        if i == len(records) - 1 and not (whole and text.endswith("\n")):
            break                                       # the torn tail
        if not whole:
            raise RunFormatError(f"{path}: record {i + 1} has {len(record or [])} fields, the "
                                 f"header {len(header)}; the file is damaged: move it aside")
        if i:
            rows.append(record)
        good_end = end
    good_bytes = len(text[:good_end].encode())
    return Table(header if good_end else [], rows, good_bytes, data[good_bytes:])


def set_torn_aside(path: Path | str) -> bytes:
    """Move a torn last record of a CSV file into <stem>.torn<suffix>; return it (b"" if none).

    The torn bytes are written (and synced) before the file is cut back to
    its whole records, so nothing is lost whenever this is interrupted.
    """
    path = Path(path)
    if not path.exists():
        return b""
    table = read_table(path)
    if not table.torn:
        return b""
    aside = path.with_name(f"{path.stem}.torn{path.suffix}")
    with open(aside, "ab") as f:
        f.write(table.torn.rstrip(b"\r\n") + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, table.good_bytes)
    return table.torn


def load_table(run_dir: Path | str, name: str, warnings: list[str] | None = None) -> pd.DataFrame:
    """One CSV of the run as a DataFrame; an empty frame with the columns if absent.

    A torn last record is left out (and named in `warnings`), never parsed.
    """
    import pandas as pd            # here: the command line's error paths never load it
    path = Path(run_dir) / name
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=TABLES[name])
    table = read_table(path)
    if table.torn and warnings is not None:
        warnings.append(f"{path}: the last line is torn ({len(table.torn)} bytes, a write "
                        "cut short) and left out; `python -m bench run --resume` re-runs it")
    if not table.header:
        return pd.DataFrame(columns=TABLES[name])
    need = TABLES[name][:TABLES[name].index("error") + 1] if name == "points.csv" \
        else TABLES[name][:1]
    missing = [c for c in need if c not in table.header]
    if missing:
        raise RunFormatError(f"{path} is not a {name} table: no column {missing[0]!r} in its "
                             "header; the run is damaged")
    try:
        with open(path, "rb") as f:
            return pd.read_csv(io.BytesIO(f.read(table.good_bytes)))
    except (pd.errors.ParserError, ValueError) as e:
        raise RunFormatError(f"{path} is not a readable CSV table ({e}); the run is "
                             "damaged") from None


def load_run(run_dir: Path | str, log=sys.stderr) -> Run:
    """Load a run directory: meta.json and every table, refusing unknown formats.

    Rows fewer than meta.json recorded, or a torn last line, are warnings:
    on `log` and in Run.warnings (the report repeats them in its header).
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    warnings: list[str] = []
    tables = [load_table(run_dir, n, warnings) for n in TABLES]
    recorded = (meta.get("points") or {}).get("recorded") if isinstance(meta.get("points"),
                                                                          dict) else None
    if isinstance(recorded, int) and len(tables[0]) < recorded:
        warnings.append(f"{run_dir / 'points.csv'} has {len(tables[0])} rows, meta.json "
                        f"recorded {recorded}: {recorded - len(tables[0])} missing "
                        "(a cut or edited file); the report covers only the rows present")
    for w in warnings:
        print(f"warning: {w}", file=log, flush=True)
    return Run(run_dir, meta, *tables, warnings=tuple(warnings))
