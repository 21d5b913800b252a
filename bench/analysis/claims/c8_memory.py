"""C8: connections per 10⁹ bytes of memory (the claim's GB), from the whole measured cost."""

from __future__ import annotations

import pandas as pd

from bench.analysis.claims.evidence import Evidence, probe_outcome
from bench.analysis.claims.rules import (ABOUT_FACTOR, CLAIMED_CONNS_PER_GB, CLAIMS, GB, GIB, REFUTED,
                                         SUPPORTED, Verdict, untested)
from bench.analysis.claims.text import num

# the complete kernel share, best first: every slab cache that grows with the
# connections (bench.tasks.memory, from /proc/slabinfo), else the Slab line of
# /proc/meminfo (every cache); both against the bare-socket control
COMPLETE = (("slab_growing_bytes", "every slab cache that grows with the connections"),
            ("slab_bytes", "every slab cache (meminfo Slab)"))


def complete_kernel(mem: pd.DataFrame) -> tuple[str, str] | None:
    """(column, words) of the most complete kernel measure memory.csv holds, or None."""
    return next(((c, what) for c, what in COMPLETE
                 if c in mem and pd.to_numeric(mem[c], errors="coerce").notna().any()), None)


def c8(ev: Evidence) -> Verdict:
    rule = (f"connections per GB (10⁹ B, the claim's unit) = 10⁹ / (server's share of every slab cache "
            f"against the bare-socket control + its RSS, per connection, at the largest N held); within "
            f"{ABOUT_FACTOR:g}× of {CLAIMED_CONNS_PER_GB:,}: supported, else refuted. Kernel limits that "
            "explain where 100k comes from are a note, never the rule")
    mem, doc = ev.run.memory, ev.memory_doc
    if mem is None or mem.empty:
        why = (f"the memory task recorded no row: {doc.get('reason') or 'see memory.json'}" if doc
               else "no memory.csv in this run (add a memory task to the profile)")
        return untested("C8", why, "memory", rule)
    m = mem[mem["mechanism"].isin(["epoll", "epoll-et"])].copy()
    cols = [c for c, _ in COMPLETE if c in m]
    for c in ("connections", "per_conn_kernel_bytes", "per_conn_rss_bytes", *cols):
        m[c] = pd.to_numeric(m[c], errors="coerce") if c in m else float("nan")
    source = complete_kernel(m)
    if source is None:
        return untested("C8", "memory.csv has no slab bytes for epoll: "
                         + (doc.get("reason") or "no permission to read /proc/slabinfo?"), "memory", rule)
    col, what = source
    m = m[m[col].notna()]
    top = m[m["connections"] == m["connections"].max()]
    n = float(top["connections"].max())
    kernel = float((top[col] / top["connections"]).median())
    rss = float(top["per_conn_rss_bytes"].fillna(0).median())
    per_conn = kernel + rss
    per_gb, per_gib = GB / per_conn, GIB / per_conn
    ratio = per_gb / CLAIMED_CONNS_PER_GB
    texts = [f"{num(per_conn, 'B')} per connection at {num(n)} connections ({what}: "
             f"{num(kernel, 'B')}, RSS {num(rss, 'B')}) → {num(per_gb)} connections per GB (10⁹ B), "
             f"{num(per_gib)} per GiB"]
    if top["per_conn_kernel_bytes"].notna().any():
        named = float(top["per_conn_kernel_bytes"].median())
        texts.append(f"the four named caches alone (eventpoll_epi, eventpoll_pwq, TCP, sock_inode_cache): "
                     f"{num(named, 'B')} per connection, {num(GB / (named + rss))} per GB with RSS: "
                     "an undercount, shown for comparison")
    values = {"bytes_per_conn": per_conn, "conns_per_gb": per_gb, "conns_per_gib": per_gib,
              "kernel_source": col}
    notes = limit_notes(ev, texts, values)
    side = "more" if ratio > 1 else "fewer"
    if 1 / ABOUT_FACTOR <= ratio <= ABOUT_FACTOR:
        return Verdict("C8", CLAIMS["C8"], SUPPORTED, "; ".join(texts), rule, "memory",
                       f"Memory allows {num(per_gb)} connections per GB ({ratio:.1f}× the claim, {side}), "
                       f"within {ABOUT_FACTOR:g}× of the claimed 100k." + notes, values)
    return Verdict("C8", CLAIMS["C8"], REFUTED, "; ".join(texts), rule, "memory",
                   f"Memory allows {ratio:.1f}× the claimed connections per GB ({side})." + notes, values)


def limit_notes(ev: Evidence, texts: list[str], values: dict) -> str:
    """Context: what the kernel limits imply per GB, the per-process caps, what stops a probe.

    Appends to texts and values; returns the note for the reason: which limit's
    default explains the folklore 100k (never the deciding rule).
    """
    doc = ev.memory_doc
    lim = doc.get("limits") or {}
    per_gib = {**{k: float(v) for k, v in (lim.get("per_gib") or {}).items()
                  if k in ("fs.file-max", "fs.epoll.max_user_watches")}, **limits_per_gib(ev.run.meta)}
    implied = {k: v * GB / GIB for k, v in per_gib.items()}
    texts += [f"{k} implies {num(v)} per GB" for k, v in implied.items()]
    values.update({f"limit {k}": v for k, v in implied.items()})
    caps = {k: v for k, v in (lim.get("values") or {}).items() if k in ("fs.nr_open", "RLIMIT_NOFILE") and v}
    if caps:                                      # fixed counts, not scaled by memory: context
        texts.append("per process at most " + ", ".join(f"{num(v)} ({k})" for k, v in caps.items()))
    probe, _ = probe_outcome(ev, "C8")
    cap = doc.get("capacity_probe") or {}
    if probe and probe.get("errno"):
        texts.append(f"capacity probe stopped by {probe['errno']}")
    elif cap.get("errno"):
        texts.append(f"capacity probe stopped by {cap['errno']} at {num(cap.get('connections'))}")
    elif doc.get("first_limits"):
        first = doc["first_limits"][0]
        texts.append(f"first limit a server here meets (predicted, not probed): {first['limit']} "
                     f"at {num(first['connections'])} connections ({first['errno']})")
    near = [k for k, v in implied.items() if 1 / ABOUT_FACTOR <= v / CLAIMED_CONNS_PER_GB <= ABOUT_FACTOR]
    if not near:
        return ""
    return (f" Note, not the rule: where 100k per GB likely comes from, {', '.join(near)} implies "
            f"{', '.join(num(implied[k]) for k in near)} per GB here (fs.file-max defaults to ~10% of "
            "memory at ~1 KiB per open file).")


def limits_per_gib(meta: dict) -> dict[str, float]:
    """Connections per GiB implied by the kernel limits in meta.json (bench.rundir.meta):
    fs.file-max and fs.epoll.max_user_watches over memory.mem_total_bytes."""
    mem = (meta.get("memory") or {}).get("mem_total_bytes")
    limits = meta.get("limits") or {}
    out = {}
    for name in ("fs.file-max", "fs.epoll.max_user_watches"):
        try:
            out[name] = float(limits[name]) / (float(mem) / GIB)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
    return out
