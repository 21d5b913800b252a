"""C1: select's FD_SETSIZE wall, and whether it bounds the descriptor's value or the count."""

from __future__ import annotations

import math

from bench.analysis.claims.evidence import Evidence, probe_outcome
from bench.analysis.claims.rules import (CLAIMS, PARTLY, REFUTED, RULE_SET_ASIDE, SUPPORTED,
                                         WALL_SLACK, Verdict, untested)
from bench.analysis.claims.text import num
from servers.sysutil import FD_SETSIZE


def c1(ev: Evidence) -> Verdict:
    rule = (f"wall: select echoes between {FD_SETSIZE - WALL_SLACK} and {FD_SETSIZE} connections at most "
            "and falls short past that; "
            "the dup2 probe tells a limit on the descriptor's value from one on the count; "
            + RULE_SET_ASIDE)
    sel = ev.fdlimit("select")
    if sel.empty:
        return untested("C1", ev.why_absent("fdlimit", ("select",)), "fdlimit", rule)
    attempted = float(sel["connections"].max())
    if attempted <= FD_SETSIZE:
        return untested("C1", f"fdlimit went only to {num(attempted)} connections, not past "
                         f"{FD_SETSIZE} (descriptor limit too low?)", "fdlimit", rule)
    ok = sel[sel["usable"]]
    short = sel[sel["failed"] | (sel["usable"] & (sel["echoing"] < sel["connections"]))]
    most = float(ok["echoing"].max()) if ok["echoing"].notna().any() else 0.0
    at_max = ok[ok["connections"] == attempted]
    echo_at_max = float(at_max["echoing"].median()) if len(at_max) else math.nan
    others = []
    for m in ("poll", "epoll"):
        o = ev.fdlimit(m)
        o = o[o["usable"] & (o["connections"] > FD_SETSIZE)]
        if len(o):
            top = o[o["connections"] == o["connections"].max()]
            others.append(f"{m} echoed {num(top['echoing'].median())} of {num(top['connections'].max())}")
    probe, why_not = probe_outcome(ev, "C1")
    value_limit = kernel_takes_it = None
    if probe:
        high, kern = probe["high_fd_select"], probe.get("kernel_select_high_fd") or {}
        value_limit = bool(high.get("exception")) and probe.get("low_fd_ready", True)
        kernel_takes_it = kern.get("returned") == 1 and bool(kern.get("fd_reported_ready"))
        probe_text = (f"select.select on one socket at fd {probe['high_fd']} with "
                      f"{probe['open_descriptors']} open: {high.get('exception') or 'accepted'}; "
                      f"the kernel's select(2) with nfds {kern.get('nfds', '?')}: "
                      + ("reported it ready" if kernel_takes_it else f"returned {kern.get('returned')}"))
    else:
        probe_text = why_not
    numbers = (f"select echoed at most {num(most)} connections; at {num(attempted)} attempted it echoed "
               f"{num(echo_at_max)}; " + ("; ".join(others) + "; " if others else "") + probe_text)
    values = {"select_max_echoing": most, "attempted": attempted,
              "value_limit": value_limit, "kernel_takes_high_fd": kernel_takes_it}
    if short.empty:
        return Verdict("C1", CLAIMS["C1"], REFUTED, numbers, rule, "fdlimit",
                       f"select served every connection up to {num(attempted)}: no wall at {FD_SETSIZE}.", values)
    if not FD_SETSIZE - WALL_SLACK <= most <= FD_SETSIZE:
        return untested("C1", f"select fell short at {num(short['connections'].min())} connections, "
                         f"far from FD_SETSIZE: something else limited this run", "fdlimit", rule, numbers)
    if value_limit or kernel_takes_it:
        parts = []
        if value_limit:
            parts.append(f"it bounds the descriptor's value, not how many are watched: one socket at "
                         f"fd {probe['high_fd']} is refused with only {probe['open_descriptors']} open "
                         "(CPython checks fd < FD_SETSIZE for glibc's fixed-size fd_set)")
        if kernel_takes_it:
            parts.append("no recompile is needed: the kernel's select(2) takes a larger bitmap "
                         "(any nfds up to the descriptor table)")
        return Verdict("C1", CLAIMS["C1"], PARTLY, numbers, rule, "fdlimit",
                       f"The wall at {num(most)} connections is real, but " + "; and ".join(parts) + ".",
                       values)
    why = (f"{why_not}, so whether the bound is on the value or the count is not tested."
           if probe is None else "The probe's high descriptor was accepted, so the bound is on the count.")
    return Verdict("C1", CLAIMS["C1"], SUPPORTED, numbers, rule, "fdlimit",
                   f"select stops serving at {num(most)} connections while poll and epoll go on. {why}", values)
