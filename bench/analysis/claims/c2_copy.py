"""C2: is select's cost the copying of its sets? select's slope next to poll's."""

from __future__ import annotations

import math

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence, wait_bytes
from bench.analysis.claims.rules import (CLAIMS, COPY_STEEPER, PARTLY, REFUTED, RULE_LINEAR,
                                         SUPPORTED, Verdict, differs, grows_linearly, is_flat,
                                         untested)
from bench.analysis.claims.text import shape_text, slope_text


def c2(ev: Evidence) -> Verdict:
    rule = (f"{RULE_LINEAR}; copy-dominated if poll's slope ≥ {COPY_STEEPER}× select's "
            "with the slope CIs apart (ours: poll copies ~13× the bytes per fd)")
    # CLAIMS.md: "nothing ready and timeout=0"; 1 ready is the nearest when a run has no 0
    ready, fits = ("0", ev.micro0) if an.fit_row(ev.micro0, "select") else ("1", ev.micro1)
    sel = an.fit_row(fits, "select")
    if not sel:
        return untested("C2", "no micro wait-call data for select", "micro_wait_1_ready", rule)
    # poll over select's range only: both slopes must describe the same N
    pol = an.fit_row(an.micro_fits(ev.run.micro, ready, max_registered=sel["x_max"]), "poll")
    lin, flat = grows_linearly(sel), is_flat(sel["first"], sel["last"])
    numbers = f"{ready} ready, timeout 0: select {slope_text(sel)} ({shape_text(sel)})"
    values = {"ready": int(ready), "select_slope_ns": sel["slope"], "select_r2": sel["r2"]}
    copy = None
    if pol:
        ratio = pol["slope"] / sel["slope"] if sel["slope"] else math.inf
        apart = differs((sel["slope_lo"], sel["slope_hi"]), (pol["slope_lo"], pol["slope_hi"]))
        copy = None if apart is None else bool(ratio >= COPY_STEEPER and apart)
        numbers += (f"; poll over the same N {slope_text(pol)}; "
                    f"poll/select slope ratio {ratio:.2f}")
        values.update(poll_slope_ns=pol["slope"], slope_ratio=ratio)
    wb_text, wb_values = wait_bytes(ev)          # context: the verdict stays with the slopes
    if wb_text:
        numbers += "; " + wb_text
        values.update(wb_values)
    if lin is False and flat:
        return Verdict("C2", CLAIMS["C2"], REFUTED, numbers, rule, "micro_wait_1_ready",
                       "select's wait cost does not grow with the set: it is flat.", values)
    if lin and copy:
        return Verdict("C2", CLAIMS["C2"], SUPPORTED, numbers, rule, "micro_wait_1_ready",
                       "select's cost grows linearly and poll, which copies far more per descriptor, "
                       "is far steeper, as a copy-dominated cost predicts.", values)
    if not lin:
        why = "select's cost grows, but the linear fit does not explain it"
    elif copy is None:
        why = ("select's cost grows linearly with the set; poll's slope over the same N, needed to tell "
               "copying from scanning, is not in the run or has no CI")
    else:
        why = ("select's cost grows linearly with the set, but poll, which copies ~13× more bytes per "
               "descriptor, is not far steeper: the per-descriptor work (each file's poll callback), "
               "not the copy, dominates. The sets are copied, but the copy is not the cost")
    return Verdict("C2", CLAIMS["C2"], PARTLY, numbers, rule, "micro_wait_1_ready", why + ".", values)
