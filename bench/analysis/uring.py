"""Beyond the explanation: io_uring's readiness next to epoll's, by the claims' own rules.

Three readings, each computed from the run's rows and stated with the rule
that produced it: server CPU per message as idle connections grow
(scan-rate: flat or not, CLAIMS.md's flat rule), the same against the
measured ready fraction (ready: dearer or cheaper at each burst size, the
comparison rule: intervals apart), and system calls per message (the
syscall profile). io_uring's multishot poll is edge-triggered, so each
reading names epoll-et beside level-triggered epoll.
"""

from __future__ import annotations

import pandas as pd

from bench.analysis import stats as an
from bench.analysis.claims.rules import differs, is_flat
from bench.analysis.claims.text import change_text, num
from bench.analysis.significance import fpr_text
from bench.rundir.store import Run

URING, PEERS = "io_uring", ("epoll", "epoll-et")
CPU = "server_cpu_us_per_msg"
WAIT_CALLS = {"io_uring": "io_uring_enter", "epoll": "epoll_wait", "epoll-et": "epoll_wait"}


def comparison(a: pd.Series, b: pd.Series) -> str:
    """'dearer' | 'cheaper' | 'not apart' | 'no CI' for a against b on CPU per message."""
    apart = differs((a[f"{CPU}_lo"], a[f"{CPU}_hi"]), (b[f"{CPU}_lo"], b[f"{CPU}_hi"]))
    if apart is None:
        return "no CI"
    if not apart:
        return "not apart"
    return "dearer" if a[CPU] > b[CPU] else "cheaper"


def _cells(agg: pd.DataFrame, experiment: str, x: str) -> pd.DataFrame:
    """io_uring's and its peers' medians in one experiment, one row per (mechanism, x)."""
    a = agg[(agg["experiment"] == experiment) & agg["mechanism"].isin((URING,) + PEERS)
            & agg[CPU].notna()]
    return a.assign(**{x: pd.to_numeric(a[x], errors="coerce")})


def _against(cells: pd.DataFrame, x: str, unit: str) -> list[str]:
    """Per peer: io_uring dearer/cheaper/not apart at each x both have, with the chance rate."""
    out = []
    mine = cells[cells["mechanism"] == URING].set_index(x)
    for peer in PEERS:
        theirs = cells[cells["mechanism"] == peer].set_index(x)
        shared = sorted(set(mine.index) & set(theirs.index))
        if not shared:
            continue
        words = [f"{comparison(mine.loc[v], theirs.loc[v])} at {num(v)}{unit}" for v in shared]
        n_a, n_b = int(mine.loc[shared[0], "n_cpu"]), int(theirs.loc[shared[0], "n_cpu"])
        out.append(f"against {peer}: " + ", ".join(words)
                   + f" (chance of intervals apart with no real difference {fpr_text(n_a, n_b)})")
    return out


def idle_growth(agg: pd.DataFrame) -> str:
    """scan-rate: each mechanism's CPU per message from the fewest to the most connections."""
    cells = _cells(agg, "scan-rate", "connections")
    if URING not in set(cells["mechanism"]):
        return ""
    parts = []
    for mech in (URING,) + PEERS:
        g = cells[cells["mechanism"] == mech].sort_values("connections")
        if len(g) < 2:
            continue
        first, last = g.iloc[0], g.iloc[-1]
        flat = is_flat(first[CPU], last[CPU])
        shape = "flat" if flat else "not flat" if flat is False else "no data"
        parts.append(f"{mech} {num(first[CPU])} → {num(last[CPU], 'µs/msg')} "
                     f"({change_text(last[CPU] / first[CPU] - 1)}, {shape}) from "
                     f"{num(first['connections'])} to {num(last['connections'])} connections")
    return ("As idle connections grow (scan-rate, fixed rate): " + "; ".join(parts) + ". io_uring "
            + "; ".join(_against(cells, "connections", " connections")) + ".")


def ready_growth(agg: pd.DataFrame) -> str:
    """ready at its smallest N: io_uring against its peers at each burst size K > 0."""
    cells = _cells(agg, "ready", "active")
    cells = cells[cells["active"] > 0]
    if cells.empty or URING not in set(cells["mechanism"]):
        return ""
    n = pd.to_numeric(cells["connections"]).min()
    cells = cells[pd.to_numeric(cells["connections"]) == n]
    top = cells[cells["active"] == cells["active"].max()]
    reached = ", ".join(f"{r.mechanism} {r.ready_fraction:.2f}" for r in top.itertuples()
                        if pd.notna(r.ready_fraction))
    return (f"As the ready fraction grows (ready, N = {num(n)}, bursts of K; measured ready "
            f"fraction at the largest K: {reached}): io_uring "
            + "; ".join(_against(cells, "active", "")).replace(" at ", " at K = ") + ".")


def syscalls_per_msg(sc: pd.DataFrame | None) -> str:
    """The syscall profile: all calls per message, and wait calls per message, per point."""
    if sc is None or sc.empty or URING not in set(sc["mechanism"]):
        return ""
    sc = sc.assign(calls_per_msg=pd.to_numeric(sc["calls_per_msg"], errors="coerce"))
    parts = []
    for point, g in sc[sc["mechanism"].isin((URING,) + PEERS)].groupby("point_id", sort=False):
        mech = g["mechanism"].iloc[0]
        wait = g.loc[g["syscall"] == WAIT_CALLS[mech], "calls_per_msg"].sum()
        where = str(point).removeprefix(f"syscalls-{mech}-")      # e.g. c100-a10-s64
        parts.append((where, mech, g["calls_per_msg"].sum(), wait))
    by_point: dict[str, list[str]] = {}
    for where, mech, total, wait in parts:
        by_point.setdefault(where, []).append(
            f"{mech} {num(total)} ({num(wait)} {WAIT_CALLS[mech]})")
    return ("System calls per message (syscall profile; all calls, of them the wait call): "
            + "; ".join(f"{where}: " + ", ".join(v) for where, v in by_point.items()) + ".")


def section(run: Run, points: pd.DataFrame | None = None) -> list[str]:
    """The section's paragraphs; [] when the run has no io_uring rows."""
    points = an.classify(run.points) if points is None else points
    if points.empty or URING not in set(points["mechanism"]):
        return []
    refused = points[(points["mechanism"] == URING) & points["error"].fillna("").str.startswith("refused")]
    if len(refused) and len(refused) == (points["mechanism"] == URING).sum():
        return [f"io_uring was not available here: {refused['error'].iloc[0]}."]
    agg = an.aggregate(points, [CPU, "ready_fraction"])
    texts = [idle_growth(agg), ready_growth(agg), syscalls_per_msg(run.syscalls)]
    return [t for t in texts if t]
