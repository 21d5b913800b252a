"""C4: poll past 1024 descriptors, past RLIMIT_NOFILE, and its cost."""

from __future__ import annotations

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence, probe_outcome
from bench.analysis.claims.rules import (CLAIMS, NOT_TESTED, RULE_LINEAR, Verdict, combine, grows,
                                         untested)
from bench.analysis.claims.text import num, shape_text, slope_text
from servers.sysutil import FD_SETSIZE


def c4(ev: Evidence) -> Verdict:
    rule = (f"poll must echo every connection past {FD_SETSIZE} (fdlimit), poll with more entries than "
            "RLIMIT_NOFILE must not fail (probe), and its wait cost must grow with the array (micro: "
            f"the slope's CI above 0, whatever the shape); shape: {RULE_LINEAR}")
    parts = {f"no limit at {FD_SETSIZE}": None, "no maximum at all": None,
             "cost grows with the whole array": None}
    texts, values = [], {}
    pol = ev.fdlimit("poll")
    past = pol[pol["usable"] & (pol["connections"] > FD_SETSIZE)]
    if len(past):
        served = bool((past["echoing"] >= past["connections"]).all())
        parts[f"no limit at {FD_SETSIZE}"] = served
        top = past[past["connections"] == past["connections"].max()]
        texts.append(f"poll echoed {num(top['echoing'].median())} of {num(top['connections'].max())} connections")
        values["poll_max_echoing"] = float(top["echoing"].median())
    probe, why_not = probe_outcome(ev, "C4")
    if probe:
        over = probe.get("nfds_above_soft_limit") or {}
        high = (probe.get("over_1024") or {}).get("highest_fd_reported")
        if high is not None and parts[f"no limit at {FD_SETSIZE}"] is None:
            parts[f"no limit at {FD_SETSIZE}"] = bool(high)
        parts["no maximum at all"] = over.get("result") != "error"
        texts.append(f"poll with {probe['nfds']} entries > soft RLIMIT_NOFILE {over.get('soft', '?')}: "
                     f"{over.get('errno') if over.get('result') == 'error' else 'accepted'}")
        values["probe_errno"] = over.get("errno") if over.get("result") == "error" else None
    else:
        texts.append(why_not)
    f = an.fit_row(ev.micro1, "poll")
    if f:
        parts["cost grows with the whole array"] = grows(f)
        texts.append(f"micro poll {slope_text(f)} ({shape_text(f)})")
        values["poll_slope_ns"] = f["slope"]
        sel = an.fit_row(ev.micro1, "select")
        same = sel and an.fit_row(an.micro_fits(ev.run.micro, "1", max_registered=sel["x_max"]), "poll")
        if same and sel["slope"]:
            texts.append(f"poll/select slope ratio over N ≤ {num(sel['x_max'])}: "
                         f"{same['slope'] / sel['slope']:.2f}")
    outcome = combine(parts)
    if outcome == NOT_TESTED:
        return untested("C4", f"no poll points past {FD_SETSIZE}, no C4 probe and no poll micro data",
                         "fdlimit", rule)
    held = [k for k, v in parts.items() if v]
    failed = [k for k, v in parts.items() if v is False]
    missing = [k for k, v in parts.items() if v is None]
    reason = (f"Holds: {', '.join(held) or 'nothing'}. Fails: {', '.join(failed) or 'nothing'}."
              + (f" Not tested: {', '.join(missing)}." if missing else ""))
    if past.empty:
        reason += f" Past {FD_SETSIZE} in fdlimit: {ev.why_absent('fdlimit', ('poll',))}."
    if values.get("probe_errno"):
        reason += (" The API is an array (the kernel chains page-sized copies of it); its bound is "
                   "the process's descriptor limit, not FD_SETSIZE.")
    return Verdict("C4", CLAIMS["C4"], outcome, "; ".join(texts), rule, "fdlimit", reason, values)
