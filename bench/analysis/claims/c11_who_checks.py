"""C11: who checks every socket? User vs system CPU per wait call against registered descriptors."""

from __future__ import annotations

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence
from bench.analysis.claims.rules import (CLAIMS, NOT_TESTED, PARTLY, REFUTED, SUPPORTED, Verdict,
                                         combine, grows_linearly, is_flat, untested)
from bench.analysis.claims.text import shape_text, slope_text

FIGURE = "micro_cpu_split"


def grows(fit: dict) -> bool | None:
    """The slope's CI lies above zero; None without a CI."""
    lo = fit.get("slope_lo")
    return None if lo is None or lo != lo else bool(lo > 0)


def poll_walk(values: dict) -> str:
    """Why poll's user time grows, when it does: CPython's walk of its pollfd array."""
    if not values.get("poll_user_grows"):
        return ""
    ratio = values["poll_user_slope_ns"] / values["select_user_slope_ns"] \
        if values.get("select_user_slope_ns") else float("nan")
    text = (f": poll's user time grows too, at {ratio:.2f}× select's slope; CPython's poll walks its "
            "pollfd array in C after the call until it has found every ready entry "
            "(Modules/selectmodule.c poll_poll), and here the ready one is last")
    if values.get("poll_user_grows_none_ready") is False:
        text += "; with nothing ready it does not grow"
    return text


def c11(ev: Evidence) -> Verdict:
    rule = ("micro, 1 ready (the last registered) and timeout 0, over the N select reaches: CPU per "
            "wait call from getrusage, split into user (CPython building and walking its sets) and "
            "system (the kernel); a time grows when the 95% CI of its slope against N lies above "
            "zero (the split is sampled by timer ticks, so the flat rule's two end points are too "
            "noisy to decide): supported when select's user time grows and poll's and epoll's "
            "do not; system time and nothing ready are context")
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
            values[f"{mech}_{part}_grows"] = grows(f)
            values[f"{mech}_{part}_flat"] = is_flat(f["first"], f["last"])
    parts["select's user time grows"] = values.get("select_user_grows")
    for mech in ("poll", "epoll"):
        g = values.get(f"{mech}_user_grows")
        parts[f"{mech}'s user time does not grow"] = None if g is None else not g
    if ready == "1":                         # nothing ready: whether poll's growth is its walk to the ready entry
        f = an.fit_row(an.micro_fits(ev.run.micro, "0", max_registered=top, measure="user_ns_per_call"),
                       "poll")
        if f:
            texts.append(f"nothing ready, poll user: {slope_text(f)}")
            values["poll_user_grows_none_ready"] = grows(f)
    outcome = combine(parts)
    numbers = f"{ready} ready, timeout 0, N up to {top:,.0f}: " + "; ".join(texts)
    if outcome == NOT_TESTED:
        return untested("C11", "the user-time fits have no confidence interval", FIGURE, rule, numbers)
    said = "; ".join(f"{k}: {'yes' if v else 'no' if v is False else 'not tested'}"
                     for k, v in parts.items())
    kernel = []
    if values.get("poll_sys_grows"):
        kernel.append("poll's system time grows with N: its kernel side still checks "
                      "every registered descriptor (C3)")
    elif "poll_sys_grows" in values:
        kernel.append("poll's system time does not grow here")
    if values.get("epoll_sys_grows") is False:
        kernel.append("epoll's system time does not grow: only there does the kernel say which "
                      "descriptors are ready without checking them all")
    elif "epoll_sys_grows" in values:
        kernel.append("epoll's system time grows here too")
    what = {SUPPORTED: "CPython's select rebuilds and rescans its sets in user space on every "
                       "call; poll and epoll do not",
            PARTLY: "the user-space part holds only in part" + poll_walk(values),
            REFUTED: "select's user-space work does not grow while poll's and epoll's do"}[outcome]
    reason = f"{what} ({said}). " + "; ".join(kernel)
    if values.get("poll_sys_grows") and values.get("epoll_sys_grows") is False:
        reason += ", so \"the operating system says which\" is true of epoll alone"
    reason = reason.strip() + ("." if kernel else "")
    return Verdict("C11", CLAIMS["C11"], outcome, numbers, rule, FIGURE, reason.strip(), values)
