"""C5: does edge-triggered epoll report a descriptor only once?"""

from __future__ import annotations

from bench.analysis.claims.evidence import Evidence, probe_outcome
from bench.analysis.claims.rules import CLAIMS, PARTLY, SUPPORTED, Verdict, untested
from bench.analysis.claims.text import num


def c5(ev: Evidence) -> Verdict:
    rule = ("probe: two writes without a read; 'only once' means edge-triggered reports 1 of the "
            "2 writes, not both (EPOLLONESHOT shown alongside)")
    probe, why_not = probe_outcome(ev, "C5")
    servers = []
    for exp in ("scan", "activity", "ready"):
        a = ev.agg_rows(exp)
        for mech in ("epoll", "epoll-et"):
            g = a[a["mechanism"] == mech] if not a.empty else a
            if len(g) and "events_per_call" in g:
                servers.append(f"{exp} {mech}: median {num(g['events_per_call'].median())} events/wait, "
                               f"{num(g['wait_calls_per_msg'].median())} waits/msg")
    if probe is None:
        if servers:
            why_not += "; the servers' counts show both modes run but cannot tell 'only once'"
        return untested("C5", why_not, "ready_events", rule, "; ".join(servers))
    modes = probe["modes"]
    edge, oneshot, level = modes["edge"], modes.get("oneshot"), modes.get("level")
    et = edge["writes_with_an_event"]
    numbers = (f"two writes, no read: edge-triggered reported {et} of 2 writes "
               f"({edge['events_total']} events); "
               + (f"EPOLLONESHOT {oneshot['writes_with_an_event']} of 2; " if oneshot else "")
               + (f"level-triggered {level['events_total']} events" if level else "")
               + ("; " + "; ".join(servers) if servers else ""))
    values = {"et_writes_reported": et, "oneshot_writes_reported": oneshot and oneshot["writes_with_an_event"]}
    if et <= 1:
        return Verdict("C5", CLAIMS["C5"], SUPPORTED, numbers, rule, "ready_events",
                       "Both modes exist and edge-triggered reported the socket once for two writes.", values)
    once = (" Only EPOLLONESHOT reports once (until re-armed)."
            if oneshot and oneshot["writes_with_an_event"] <= 1 else "")
    return Verdict("C5", CLAIMS["C5"], PARTLY, numbers, rule, "ready_events",
                   "Both modes exist, but edge-triggered reports each new arrival of data, as epoll(7) "
                   "says, not a descriptor once." + once, values)
