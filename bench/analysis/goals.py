"""The speed goals and the references, read off one run's own rows.

Each goal is a ratio (or a duration) measured in the run it is reported
for, never a figure carried over from elsewhere:

- the epoll server costs no more CPU per message than uvloop's echo server
  (experiment `references`: every server at one open-loop load that
  saturates neither side);
- the load generator's user CPU per message is no more than the epoll
  server's (closed loop, 100 active, 64 B: `msgsize`, where both sides run
  flat out, as in `python -m loadgen.calibrate`);
- the sweep finishes within its profile's budget;
- 19,000 connections open in under a second (`connect_s` of the largest
  points).
"""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis import stats as an
from bench.rundir.schema import REFERENCES

BUDGET_S = {"quick": 120, "default": 900, "full": 3600}   # the profiles' promises
CONNECT_GOAL_S = 1.0
CONNECT_GOAL_N = 19000


def _median(rows: pd.DataFrame, col: str) -> float:
    v = pd.to_numeric(rows[col], errors="coerce").dropna() if col in rows else pd.Series([], dtype=float)
    return float(v.median()) if len(v) else math.nan


def _usable(points: pd.DataFrame, experiment: str, allow_saturated: bool = False) -> pd.DataFrame:
    df = an.experiment(an.classify(points), experiment)
    if df.empty:
        return df
    keep = ~df["failed"] & ~df["noisy"]
    if not allow_saturated:
        keep &= ~df["saturated"]
    return df[keep]


def reference_ratios(points: pd.DataFrame) -> pd.DataFrame:
    """Per server in `references`: median CPU per message (user, system) and epoll ÷ it."""
    df = _usable(points, "references")
    if df.empty or "epoll" not in set(df["mechanism"]):
        return pd.DataFrame()
    epoll = _median(df[df["mechanism"] == "epoll"], "server_cpu_us_per_msg")
    rows = []
    for mech, g in df.groupby("mechanism", sort=False):
        cpu = _median(g, "server_cpu_us_per_msg")
        rows.append({
            "server": mech + (" (reference)" if mech in REFERENCES else ""),
            "repetitions": len(g),
            "msg/s": round(_median(g, "throughput_msgs_s")),
            "CPU µs/msg": round(cpu, 2),
            "user µs/msg": round(_median(g, "server_cpu_user_us_per_msg"), 2),
            "system µs/msg": round(_median(g, "server_cpu_sys_us_per_msg"), 2),
            "epoll ÷ this": round(epoll / cpu, 3) if cpu else math.nan,
        })
    order = {m: i for i, m in enumerate(["select", "poll", "epoll", "epoll-et", *REFERENCES])}
    rows.sort(key=lambda r: order.get(r["server"].split(" ")[0], 99))
    return pd.DataFrame(rows)


def speed_goals(points: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """One row per goal: what was measured, the goal, and whether this run met it."""
    rows = []

    def add(goal, measured, ratio, limit, where):
        met = None if ratio is None or math.isnan(ratio) else ratio <= limit
        rows.append({"goal": goal, "measured": measured,
                     "met": {True: "yes", False: "no", None: "not measured"}[met], "where": where})

    ref = _usable(points, "references")
    e = _median(ref[ref["mechanism"] == "epoll"], "server_cpu_us_per_msg") if not ref.empty else math.nan
    u = _median(ref[ref["mechanism"] == "uvloop"], "server_cpu_us_per_msg") if not ref.empty else math.nan
    add("epoll CPU per message ≤ uvloop's", f"{e:.2f} vs {u:.2f} µs/msg: ratio {e / u:.3f}"
        if not (math.isnan(e) or math.isnan(u)) else "no usable references rows",
        e / u if u else math.nan, 1.0, "references (open loop, nothing saturated)")

    ms = _usable(points, "msgsize", allow_saturated=True)
    if not ms.empty:
        ms = ms[(ms["mechanism"] == "epoll") & (pd.to_numeric(ms["msg_size"], errors="coerce") == 64)]
    lg = _median(ms, "loadgen_cpu_user_us_per_msg") if not ms.empty else math.nan
    sv = _median(ms, "server_cpu_user_us_per_msg") if not ms.empty else math.nan
    add("load generator user CPU per message ≤ epoll server's",
        f"{lg:.2f} vs {sv:.2f} µs/msg: ratio {lg / sv:.3f} (user time is tick-sampled)"
        if not (math.isnan(lg) or math.isnan(sv)) else "no msgsize rows at 64 B for epoll",
        lg / sv if sv else math.nan, 1.0, "msgsize, 64 B, closed loop (both sides flat out)")

    name = (meta.get("profile") or {}).get("name")
    elapsed = sum(r.get("elapsed_s") or 0 for r in meta.get("runs") or [])
    budget = BUDGET_S.get(name)
    add(f"the {name or '?'} profile within {budget // 60 if budget else '?'} min",
        f"{elapsed / 60:.1f} min" + (" (over several resumes)" if len(meta.get("runs") or []) > 1 else ""),
        elapsed / budget if budget and elapsed else math.nan, 1.0, "meta.json runs[].elapsed_s")

    big = an.classify(points)
    big = big[pd.to_numeric(big.get("connections"), errors="coerce") >= CONNECT_GOAL_N] \
        if "connections" in big else big.iloc[0:0]
    c = pd.to_numeric(big["connect_s"], errors="coerce").dropna() if "connect_s" in big else pd.Series([], dtype=float)
    add(f"{CONNECT_GOAL_N:,} connections open in < {CONNECT_GOAL_S:.0f} s",
        f"median {c.median():.2f} s, max {c.max():.2f} s over {len(c)} points" if len(c) else
        f"no point with {CONNECT_GOAL_N:,} connections", c.max() / CONNECT_GOAL_S if len(c) else math.nan,
        1.0, "connect_s of every point with ≥ 19,000 connections")
    return pd.DataFrame(rows)
