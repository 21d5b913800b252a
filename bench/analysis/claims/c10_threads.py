"""C10: a thread per client: does client T + 1 block, and is it less efficient than epoll on one CPU?"""

from __future__ import annotations

import pandas as pd

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence, probe_outcome
from bench.analysis.claims.rules import (CLAIMS, NOT_TESTED, RULE_COMPARE, RULE_SET_ASIDE,
                                         THREADS_MEMORY_FACTOR, Verdict, combine, differs, untested)
from bench.analysis.claims.text import num

FIGURE = "threads_cpu"
CPU, CTX = "server_cpu_us_per_msg", "ctx_switches_per_msg"


def c10(ev: Evidence) -> Verdict:
    rule = ("blocks: the threads server capped at T threads leaves client T + 1 connected without an "
            "echo until a thread frees (the C10 probe); less efficient: in scan-rate (fixed rate, "
            f"one server CPU) threads' CPU per message above epoll's with the intervals apart ({RULE_COMPARE}), "
            "at each connection count both have; memory per connection (RSS + socket caches + "
            f"threads' kernel stacks and tasks, memory task) at least {THREADS_MEMORY_FACTOR:g}× epoll's "
            f"(ours: one measurement per point, no interval); {RULE_SET_ASIDE}, nor does a point "
            "where the server used 90% of its core (server_saturated) for CPU per message")
    parts, texts, values = {}, [], {}
    probe, why_not = probe_outcome(ev, "C10")
    if probe:
        t, c = probe["thread_limit"], probe["capped_server"]
        blocked = c["extra_outcome"] == "no answer"
        parts["client T + 1 blocks"] = blocked and c.get("extra_after_a_thread_freed") == "echoed"
        texts.append(f"threads started here: {'at least ' if t['at_least'] else ''}{num(t['started'])} "
                     f"(stopped by {t['stopped_by']})")
        texts.append(f"capped at {c['max_threads']} threads, client {c['max_threads'] + 1} connected and "
                     f"was {'left waiting' if blocked else c['extra_outcome']} after "
                     f"{num(c['extra_waited_s'] * 1000)} ms")
        values.update(threads_started=t["started"], threads_at_least=t["at_least"],
                      stopped_by=t["stopped_by"], extra_outcome=c["extra_outcome"],
                      extra_waited_s=c["extra_waited_s"])
    else:
        texts.append(why_not)
    more_cpu, cpu_texts, cpu_values = cpu_compare(ev)
    texts += cpu_texts
    values.update(cpu_values)
    if more_cpu:
        parts["more CPU per message"] = any(more_cpu.values())
        if any(more_cpu.values()) and not all(more_cpu.values()):
            parts["more CPU per message at every connection count"] = False
    else:
        parts["more CPU per message"] = None
    mem, mem_texts, mem_values = memory_compare(ev)
    texts += mem_texts
    values.update(mem_values)
    parts["more memory per connection"] = mem
    outcome = combine(parts)
    if outcome == NOT_TESTED:
        return untested("C10", f"no C10 probe ({why_not}), no scan-rate points for threads and epoll, "
                        "and no memory rows for both", FIGURE, rule, "; ".join(texts))
    said = "; ".join(f"{k}: {'yes' if v else 'no' if v is False else 'not tested'}" for k, v in parts.items())
    reason = said
    if parts.get("client T + 1 blocks") is False:
        reason += (". This server refuses client T + 1 (it closes a connection it has no thread for); "
                   "one that waited for a free thread before accept() would leave it blocked in the "
                   "listen backlog: blocking is the server's choice, not the threads'")
    if more_cpu:
        costly = [n for n, m in more_cpu.items() if m]
        reason += (f". Threads cost more CPU per message at {', '.join(num(n) for n in costly)} connections"
                   if costly else ". Threads never cost more CPU per message with the intervals apart")
    return Verdict("C10", CLAIMS["C10"], outcome, "; ".join(texts), rule, FIGURE, reason + ".", values)


def cpu_compare(ev: Evidence) -> tuple[dict[float, bool], list[str], dict]:
    """{connections: threads above epoll, intervals apart} in scan-rate, with texts and values."""
    df = an.experiment(ev.points, "scan-rate")
    df = df[df["usable"] & df["mechanism"].isin(["threads", "epoll"])]
    if "server_saturated" in df:
        df = df[~df["server_saturated"].astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])]
    if df.empty or df["mechanism"].nunique() < 2:
        return {}, [f"scan-rate: {ev.why_absent('scan-rate', ('threads', 'epoll'))}"], {}
    agg = an.aggregate(df, [m for m in (CPU, CTX) if m in df])
    agg["connections"] = pd.to_numeric(agg["connections"])
    more, texts, values = {}, [], {}
    for n, g in agg.groupby("connections"):
        g = g.set_index("mechanism")
        if not {"threads", "epoll"} <= set(g.index):
            continue
        th, ep = g.loc["threads"], g.loc["epoll"]
        apart = differs((th[f"{CPU}_lo"], th[f"{CPU}_hi"]), (ep[f"{CPU}_lo"], ep[f"{CPU}_hi"]))
        if apart is None:
            continue
        more[float(n)] = bool(apart and th[CPU] > ep[CPU])
        ctx = (f", {num(th[CTX])} vs {num(ep[CTX])} context switches per message"
               if CTX in g and pd.notna(th[CTX]) and pd.notna(ep[CTX]) else "")
        texts.append(f"scan-rate at {num(n)} connections: threads {num(th[CPU], 'µs/msg')} "
                     f"[{num(th[f'{CPU}_lo'])}, {num(th[f'{CPU}_hi'])}] vs epoll {num(ep[CPU], 'µs/msg')} "
                     f"[{num(ep[f'{CPU}_lo'])}, {num(ep[f'{CPU}_hi'])}]{ctx}")
        values[f"cpu_ratio_{int(n)}"] = float(th[CPU] / ep[CPU])
    if not more:
        texts.append("scan-rate: no connection count where threads and epoll both have an interval")
    return more, texts, values


def memory_compare(ev: Evidence) -> tuple[bool | None, list[str], dict]:
    """Is a threads connection at least THREADS_MEMORY_FACTOR × an epoll one, at the largest N both have?"""
    mem = ev.run.memory
    if mem is None or mem.empty:
        return None, ["no memory.csv"], {}
    m = mem[mem["mechanism"].isin(["threads", "epoll"])].copy()
    cols = ("connections", "per_conn_rss_bytes", "per_conn_kernel_bytes", "per_conn_thread_bytes")
    for c in cols:
        m[c] = pd.to_numeric(m[c], errors="coerce") if c in m else float("nan")
    m = m[m["per_conn_kernel_bytes"].notna()]
    shared = set(m.loc[m["mechanism"] == "threads", "connections"]) & set(m.loc[m["mechanism"] == "epoll",
                                                                             "connections"])
    if not shared:
        return None, ["memory: no connection count with kernel bytes for both threads and epoll"], {}
    n = max(shared)
    at = m[m["connections"] == n].groupby("mechanism")[list(cols[1:])].median()
    total = at.fillna(0).sum(axis=1)
    ratio = float(total["threads"] / total["epoll"])
    text = (f"memory at {num(n)} connections: threads {num(total['threads'], 'B')} per connection "
            f"(RSS {num(at.loc['threads', 'per_conn_rss_bytes'])}, threads' kernel stacks and tasks "
            f"{num(at.loc['threads', 'per_conn_thread_bytes'])}) vs epoll {num(total['epoll'], 'B')}: ×{ratio:.1f}")
    return ratio >= THREADS_MEMORY_FACTOR, [text], {"memory_ratio": ratio, "memory_connections": float(n)}
