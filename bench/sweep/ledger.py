"""points.csv as the run's ledger: what is done, what failed, what to re-run.

Resume reads it to decide what to run; a torn last row (a write cut short)
and the failed rows are moved aside first, kept in their own files, so
their points run again.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

from bench.rundir.store import append_row, read_table, set_torn_aside
from bench.sweep import plan


def set_torn_aside_and_say(run_dir: Path, log) -> None:
    """A torn last row of points.csv goes to points.torn.csv; its point runs again."""
    torn = set_torn_aside(run_dir / "points.csv")
    if torn:
        text = torn.decode(errors="replace").strip()
        print(f"resume: the last row of points.csv was torn ({len(torn)} bytes: "
              f"{text[:40]}{'...' if len(text) > 40 else ''}); kept in "
              f"{run_dir / 'points.torn.csv'}, its point runs again", file=log, flush=True)


def rows(run_dir: Path) -> list[dict]:
    """The whole rows of points.csv as dicts (a torn tail left out)."""
    path = run_dir / "points.csv"
    if not path.exists():
        return []
    table = read_table(path)
    return [dict(zip(table.header, r)) for r in table.rows]


def set_failed_aside(run_dir: Path, ids: set[str]) -> list[str]:
    """Move the failed rows among ids out of points.csv (into retried.csv, raw JSON into
    raw/retried/) so that the run re-measures them; return their ids."""
    path = run_dir / "points.csv"
    if not path.exists():
        return []
    header = read_table(path).header
    all_rows = rows(run_dir)
    failed = [r for r in all_rows if r["point_id"] in ids and r.get("error")
              and not r["error"].startswith("refused:")]
    if not failed:
        return []
    for r in failed:
        append_row(run_dir / "retried.csv", r, header)
        raw = run_dir / "raw" / f"{r['point_id']}.json"
        if raw.exists():
            (run_dir / "raw" / "retried").mkdir(exist_ok=True)
            os.replace(raw, run_dir / "raw" / "retried" / f"{r['point_id']}.{int(time.time())}.json")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, header)
            w.writeheader()
            w.writerows(r for r in all_rows if r not in failed)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return [r["point_id"] for r in failed]


def done_ids(run_dir: Path, meta: dict) -> set[str]:
    """Ids already recorded: rows of points.csv and tasks that finished."""
    done = {t for t, r in meta.get("tasks", {}).items() if r.get("state") == "done"}
    return done | {r["point_id"] for r in rows(run_dir) if r.get("point_id")}


def counts(run_dir: Path, all_points, meta: dict) -> dict:
    planned = [p for p in all_points if isinstance(p, plan.Point)]
    recorded_rows = rows(run_dir)
    recorded = {r["point_id"] for r in recorded_rows}
    refused = sum(1 for r in recorded_rows if r["error"].startswith("refused:"))
    failed = sum(1 for r in recorded_rows if r["error"] and not r["error"].startswith("refused:"))
    tasks = [p.id for p in all_points if isinstance(p, plan.Task)]
    states = {t: meta["tasks"].get(t, {}).get("state") for t in tasks}
    return {
        "planned": len(planned), "recorded": len(recorded_rows), "refused": refused,
        "failed": failed, "measured": len(recorded_rows) - refused - failed,
        "saturated": sum(1 for r in recorded_rows if r["saturated"] == "True"),
        "noisy": sum(1 for r in recorded_rows if r["noisy"] == "True"),
        "missing": sum(1 for p in planned if p.id not in recorded)
        + sum(1 for s in states.values() if s is None),
        "tasks_failed": sum(1 for s in states.values() if s == "failed"),
    }
