"""python -m bench compare RUN_A RUN_B: measure by measure, is B different from A?

One table per measure, hyperfine style: each point's median in A and in B
with its CI, the ratio B/A, the ratio to epoll at the same point in each run
("relative"), and whether the difference counts. It counts when it is both
significant (the CIs do not overlap: CLAIMS.md's comparison rule,
bench.analysis.claims.differs, with the chance of that happening by accident
for the repetitions each side had) and larger than a practical threshold
(|B/A - 1| > 5% by default, --threshold): 40,000 vs 40,001 msg/s is not a
difference worth reporting however tight the intervals. With one repetition
there is no CI and nothing counts. Micro rows have no CI (micro.csv keeps
p10/p90 of the samples), so there the stricter test is used: the p10–p90
ranges do not overlap. A warning comes first when the two runs differ in
machine or software.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.analysis import stats as an
from bench.analysis import claims
from bench.analysis.claims import num
from bench.analysis.claims.rules import chance_text
from bench.rundir.meta import differences
from bench.rundir.store import Run, load_run

# measure -> (unit, better: "higher" | "lower")
MEASURES = {
    "throughput_msgs_s": ("msg/s", "higher"),
    "p50_us": ("µs", "lower"),
    "p99_us": ("µs", "lower"),
    "server_cpu_us_per_msg": ("µs/msg", "lower"),
    "wait_ns_per_call": ("ns", "lower"),
}

def environment_warnings(meta_a: dict, meta_b: dict) -> list[str]:
    """One line per machine/software field that differs between the runs (rundir.meta.differences)."""
    return [f"warning: the runs differ in {field}: A {_short(a)} vs B {_short(b)}; "
            "a difference below may come from that, not from the mechanisms"
            for field, (a, b) in differences(meta_a, meta_b).items()]


def _short(v) -> str:
    text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(row) -> str:
    parts = [str(row["experiment"]), str(row["mechanism"]), f"c={num(row['connections'])}",
             f"a={num(row['active'])}", f"s={num(row['msg_size'])}"]
    if not pd.isna(row.get("rate")):
        parts.append(f"rate={num(row['rate'])}")
    return " ".join(parts)


def _value(row, m: str) -> str:
    if pd.isna(row[m]):
        return "n/a"
    if pd.isna(row[f"{m}_lo"]):
        return f"{num(row[m])} (n={row['n']})"
    return f"{num(row[m])} [{num(row[f'{m}_lo'])}, {num(row[f'{m}_hi'])}]"


def _relative(agg: pd.DataFrame, m: str) -> pd.Series:
    """Each row's median over epoll's median at the same point of the same run."""
    keys = [k for k in an.POINT_KEYS if k != "mechanism"]
    ep = agg[agg["mechanism"] == "epoll"].set_index(keys)[m]
    idx = agg.set_index(keys).index
    base = pd.Series([ep.get(k, math.nan) if k in ep.index else math.nan for k in idx], index=agg.index)
    return agg[m] / base


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


THRESHOLD = 0.05     # ours: the smallest relative difference worth reporting (bench compare --threshold)


def counts(apart: bool | None, ratio: float, threshold: float) -> bool:
    """A difference counts when significant and |ratio - 1| > threshold."""
    return bool(apart) and not math.isnan(ratio) and abs(ratio - 1) > threshold


def compare_points(a: Run, b: Run, threshold: float = THRESHOLD) -> tuple[str, int, int]:
    """The per-measure tables over the points both runs have; (text, counted, compared)."""
    agg_a, agg_b = an.aggregate(a.points), an.aggregate(b.points)
    if agg_a.empty or agg_b.empty:
        return "No points to compare (a run has no points.csv rows).", 0, 0
    keys = [k for k in an.POINT_KEYS if k in agg_a and k in agg_b]
    out, sig_total, total = [], 0, 0
    for m, (unit, better) in MEASURES.items():
        if m not in agg_a or m not in agg_b:
            continue
        ra, rb = agg_a.assign(rel=_relative(agg_a, m)), agg_b.assign(rel=_relative(agg_b, m))
        both = ra.merge(rb, on=keys, suffixes=("_a", "_b"))
        both = both[both[f"{m}_a"].notna() & both[f"{m}_b"].notna()]
        if both.empty:
            continue
        rows = []
        for _, r in both.iterrows():
            va = {k[:-2]: r[k] for k in r.index if k.endswith("_a")} | {k: r[k] for k in keys}
            vb = {k[:-2]: r[k] for k in r.index if k.endswith("_b")} | {k: r[k] for k in keys}
            apart = claims.differs((va[f"{m}_lo"], va[f"{m}_hi"]), (vb[f"{m}_lo"], vb[f"{m}_hi"]))
            ratio = vb[m] / va[m] if va[m] else math.nan
            total += 1
            n = "n_cpu" if m in an.CPU_MEASURES else "n"
            verdict = {True: "yes", False: "no", None: "no CI"}[apart]
            if counts(apart, ratio, threshold):
                sig_total += 1
                good = (ratio > 1) == (better == "higher")
                verdict += f" ({'better' if good else 'worse'} in B; {chance_text(va[n], vb[n])})"
            elif apart:
                verdict = f"no (significant, but within {threshold:.0%})"
            rows.append([_key(va), _value(va, m), _value(vb, m), f"{ratio:.2f}",
                         _rel(va["rel"]), _rel(vb["rel"]), verdict])
        out.append(f"## {m} ({unit}, {better} is better)\n\n"
                   + _table(["point", "A median [CI]", "B median [CI]", "B/A", "A vs epoll",
                             "B vs epoll", "significant"], rows))
    return "\n\n".join(out), sig_total, total


def _rel(v) -> str:
    return "n/a" if pd.isna(v) else f"{v:.2f}"


def compare_micro(a: Run, b: Run, threshold: float = THRESHOLD) -> tuple[str, int, int]:
    """Wait-call cost per (mechanism, registered, ready), p10–p90 ranges apart = significant."""
    cols = ["mechanism", "registered", "ready", "timeout_mode"]
    parts = []
    for run in (a, b):
        m = an.micro_wait(run.micro, "1")
        parts.append(m[cols + ["ns_median", "ns_p10", "ns_p90"]] if not m.empty else None)
    if parts[0] is None or parts[1] is None:
        return "", 0, 0
    both = parts[0].merge(parts[1], on=cols, suffixes=("_a", "_b"))
    rows, sig = [], 0
    for _, r in both.iterrows():
        apart = claims.differs((r["ns_p10_a"], r["ns_p90_a"]), (r["ns_p10_b"], r["ns_p90_b"]))
        ratio = r["ns_median_b"] / r["ns_median_a"] if r["ns_median_a"] else math.nan
        sig += counts(apart, ratio, threshold)
        rows.append([f"{r['mechanism']} N={num(r['registered'])}",
                     f"{num(r['ns_median_a'])} [{num(r['ns_p10_a'])}, {num(r['ns_p90_a'])}]",
                     f"{num(r['ns_median_b'])} [{num(r['ns_p10_b'])}, {num(r['ns_p90_b'])}]",
                     f"{ratio:.2f}", "yes" if counts(apart, ratio, threshold) else
                     f"no (apart, but within {threshold:.0%})" if apart else "no"])
    if not rows:
        return "", 0, 0
    return ("## micro wait call, 1 ready, timeout 0 (ns, lower is better; bracket: p10–p90)\n\n"
            + _table(["point", "A median [p10, p90]", "B median [p10, p90]", "B/A", "significant"], rows),
            sig, len(rows))


def compare_verdicts(a: Run, b: Run) -> str:
    va, vb = claims.verdicts(a), claims.verdicts(b)
    rows = [[x.id, x.verdict, y.verdict, "" if x.verdict == y.verdict else "changed"]
            for x, y in zip(va, vb)]
    return "## claims\n\n" + _table(["claim", "A", "B", ""], rows)


def compare_runs(run_a: Path | str | Run, run_b: Path | str | Run, threshold: float = THRESHOLD) -> str:
    """The comparison of two runs as text (warnings, claims, one table per measure)."""
    a = run_a if isinstance(run_a, Run) else load_run(run_a)
    b = run_b if isinstance(run_b, Run) else load_run(run_b)
    head = [f"A: {a.path}", f"B: {b.path}", *environment_warnings(a.meta, b.meta),
            *(f"warning: {name}: {w}" for name, run in (("A", a), ("B", b)) for w in run.warnings)]
    points, sig_p, n_p = compare_points(a, b, threshold)
    micro, sig_m, n_m = compare_micro(a, b, threshold)
    summary = (f"{sig_p} of {n_p} point comparisons and {sig_m} of {n_m} micro comparisons differ: "
               f"significant (CIs, or p10–p90 for micro, do not overlap) and more than {threshold:.0%} apart.")
    return "\n\n".join(x for x in ["\n".join(head), compare_verdicts(a, b), points, micro, summary] if x) + "\n"
