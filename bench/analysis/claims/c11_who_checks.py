"""C11: who checks every socket? User vs system CPU per wait call against registered descriptors."""

from __future__ import annotations

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence
from bench.analysis.claims.rules import (CLAIMS, FLAT_WITHIN, NOT_TESTED, PARTLY, REFUTED,
                                         RULE_LINEAR, SUPPORTED, Verdict, combine, grows_linearly,
                                         is_flat, untested)
from bench.analysis.claims.text import shape_text, slope_text

FIGURE = "micro_wait_1_ready"


def c11(ev: Evidence) -> Verdict:
    rule = (f"{RULE_LINEAR}; micro, CPU per wait call from getrusage split into user (CPython "
            "building and scanning its sets) and system (the kernel's scan), over the N select "
            "reaches: supported when select's user time grows linearly and poll's and epoll's "
            f"user time stays flat (within {FLAT_WITHIN:.0%}); system time is the context that "
            "says whether the kernel checks every descriptor")
    ready = "1" if an.fit_row(an.micro_fits(ev.run.micro, "1", measure="user_ns_per_call"),
                              "select") else "0"
    sel = an.fit_row(an.micro_fits(ev.run.micro, ready, measure="user_ns_per_call"), "select")
    if not sel:
        return untested("C11", "no user/system CPU per wait call for select in micro.csv "
                        "(a run from before the split, or no micro task)", FIGURE, rule)
    top = sel["x_max"]                       # select stops at FD_SETSIZE: compare over its range
    fits = {part: an.micro_fits(ev.run.micro, ready, max_registered=top, measure=f"{part}_ns_per_call")
            for part in ("user", "sys")}
    parts, texts, values = {}, [], {"ready": int(ready), "max_registered": top}
    for mech in ("select", "poll", "epoll"):
        for part in ("user", "sys"):
            f = an.fit_row(fits[part], mech)
            if not f:
                continue
            texts.append(f"{mech} {part}: {slope_text(f)} ({shape_text(f)})")
            values[f"{mech}_{part}_slope_ns"] = f["slope"]
            values[f"{mech}_{part}_change"] = f["change"]
            values[f"{mech}_{part}_linear"] = grows_linearly(f)
            values[f"{mech}_{part}_flat"] = is_flat(f["first"], f["last"])
    parts["select's user time grows"] = values.get("select_user_linear")
    for mech in ("poll", "epoll"):
        parts[f"{mech}'s user time flat"] = values.get(f"{mech}_user_flat")
    outcome = combine(parts)
    numbers = f"{ready} ready, timeout 0, N up to {top:,.0f}: " + "; ".join(texts)
    if outcome == NOT_TESTED:
        return untested("C11", "the user-time fits have no confidence interval", FIGURE, rule, numbers)
    said = "; ".join(f"{k}: {'yes' if v else 'no' if v is False else 'not tested'}"
                     for k, v in parts.items())
    kernel = []
    if values.get("poll_sys_linear"):
        kernel.append("poll's system time grows linearly with N: its kernel side still checks "
                      "every registered descriptor (C3)")
    elif "poll_sys_linear" in values:
        kernel.append("poll's system time does not grow linearly here")
    if values.get("epoll_sys_flat"):
        kernel.append("epoll's system time is flat: only there does the kernel say which "
                      "descriptors are ready without checking them all")
    elif "epoll_sys_flat" in values:
        kernel.append("epoll's system time is not flat here either")
    what = {SUPPORTED: "CPython's select rebuilds and rescans its sets in user space on every "
                       "call; poll and epoll do not",
            PARTLY: "the user-space part holds only in part",
            REFUTED: "select's user-space work does not grow while poll's and epoll's do"}[outcome]
    reason = f"{what} ({said}). " + "; ".join(kernel)
    if values.get("poll_sys_linear") and values.get("epoll_sys_flat"):
        reason += ", so \"the operating system says which\" is true of epoll alone"
    reason = reason.strip() + ("." if kernel else "")
    return Verdict("C11", CLAIMS["C11"], outcome, numbers, rule, FIGURE, reason.strip(), values)
