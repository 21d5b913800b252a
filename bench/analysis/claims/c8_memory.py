"""C8: connections per GB of memory."""

from __future__ import annotations

import pandas as pd

from bench.analysis.claims.evidence import Evidence, probe_outcome
from bench.analysis.claims.rules import (ABOUT_FACTOR, CLAIMED_CONNS_PER_GB, CLAIMS, GB, PARTLY,
                                         REFUTED, SUPPORTED, Verdict, untested)
from bench.analysis.claims.text import num


def c8(ev: Evidence) -> Verdict:
    rule = (f"connections per GiB from measured memory per epoll connection (kernel + RSS) within "
            f"{ABOUT_FACTOR:g}× of {CLAIMED_CONNS_PER_GB:,}: supported; otherwise partly supported when a "
            "kernel limit's default implies about that number, else refuted")
    mem, doc = ev.run.memory, ev.memory_doc
    if mem is None or mem.empty:
        why = (f"the memory task recorded no row: {doc.get('reason') or 'see memory.json'}" if doc
               else "no memory.csv in this run (add a memory task to the profile)")
        return untested("C8", why, "memory", rule)
    m = mem[mem["mechanism"].isin(["epoll", "epoll-et"])].copy()
    for c in ("connections", "per_conn_kernel_bytes", "per_conn_rss_bytes", "slab_bytes"):
        m[c] = pd.to_numeric(m[c], errors="coerce")
    m = m[m["per_conn_kernel_bytes"].notna()]
    if m.empty:
        return untested("C8", "memory.csv has no kernel bytes for epoll: "
                         + (doc.get("reason") or "no permission to read /proc/slabinfo?"), "memory", rule)
    top = m[m["connections"] == m["connections"].max()]
    per_conn = float((top["per_conn_kernel_bytes"] + top["per_conn_rss_bytes"].fillna(0)).median())
    per_gb = GB / per_conn
    ratio = per_gb / CLAIMED_CONNS_PER_GB
    texts = [f"{num(per_conn, 'B')} per connection at {num(top['connections'].max())} connections "
             f"(kernel {num(top['per_conn_kernel_bytes'].median(), 'B')}) → {num(per_gb)} connections per GiB"]
    if top["slab_bytes"].notna().any():
        texts.append(f"every slab cache (meminfo Slab; moves with the whole machine's file activity): "
                     f"{num((top['slab_bytes'] / top['connections']).median(), 'B')} per connection")
    lim = doc.get("limits") or {}
    implied = {**{k: float(v) for k, v in (lim.get("per_gib") or {}).items()
                  if k in ("fs.file-max", "fs.epoll.max_user_watches")},
               **limits_per_gb(ev.run.meta)}
    texts += [f"{k} implies {num(v)} per GiB" for k, v in implied.items()]
    caps = {k: v for k, v in (lim.get("values") or {}).items()
            if k in ("fs.nr_open", "RLIMIT_NOFILE") and v}
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
    values = {"bytes_per_conn": per_conn, "conns_per_gb": per_gb, **{f"limit {k}": v for k, v in implied.items()}}
    about = lambda x: 1 / ABOUT_FACTOR <= x / CLAIMED_CONNS_PER_GB <= ABOUT_FACTOR
    if about(per_gb):
        return Verdict("C8", CLAIMS["C8"], SUPPORTED, "; ".join(texts), rule, "memory",
                       f"Memory allows {num(per_gb)} connections per GiB, about the claimed 100k.", values)
    near = [k for k, v in implied.items() if about(v)]
    side = "more" if ratio > 1 else "fewer"
    if near:
        return Verdict("C8", CLAIMS["C8"], PARTLY, "; ".join(texts), rule, "memory",
                       f"Memory allows {ratio:.1f}× the claim ({side}); the 100k/GB figure matches "
                       f"the budget of {', '.join(near)}, not the memory a connection costs.", values)
    return Verdict("C8", CLAIMS["C8"], REFUTED, "; ".join(texts), rule, "memory",
                   f"Memory allows {ratio:.1f}× the claimed connections per GB ({side}).", values)


def limits_per_gb(meta: dict) -> dict[str, float]:
    """Connections per GiB implied by the kernel limits in meta.json (bench.rundir.meta):
    fs.file-max and fs.epoll.max_user_watches over memory.mem_total_bytes."""
    mem = (meta.get("memory") or {}).get("mem_total_bytes")
    limits = meta.get("limits") or {}
    out = {}
    for name in ("fs.file-max", "fs.epoll.max_user_watches"):
        try:
            out[name] = float(limits[name]) / (float(mem) / GB)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
    return out
