"""C2: is select's cost the copying of its sets? select's slope next to poll's."""

from __future__ import annotations

import math

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence, wait_bytes
from bench.analysis.claims.rules import (CLAIMS, COPY_STEEPER, NOT_GROWING, PARTLY, REFUTED,
                                         RULE_LINEAR, SUPPORTED, TOO_FEW_N, Verdict, differs, is_flat,
                                         shape, slope_chance_text, untested)
from bench.analysis.claims.text import shape_text, slope_text



def c2(ev: Evidence) -> Verdict:
    rule = (f"{RULE_LINEAR}; grows: select's slope CI above 0; refuted when it does not grow and is flat; "
            f"copy-dominated if poll's slope ≥ {COPY_STEEPER}× select's with the slope CIs apart "
            "(ours: poll copies ~13× the bytes per fd); no slope CI: not tested")
    # CLAIMS.md: "nothing ready and timeout=0"; 1 ready is the nearest when a run has no 0
    ready, fits = ("0", ev.micro0) if an.fit_row(ev.micro0, "select") else ("1", ev.micro1)
    sel = an.fit_row(fits, "select")
    figure = f"micro_wait_{ready}_ready"          # the figure shows the data C2 decides on
    if not sel:
        return untested("C2", "no micro wait-call data for select", figure, rule)
    # poll over select's range only: both slopes must describe the same N
    pol = an.fit_row(an.micro_fits(ev.run.micro, ready, max_registered=sel["x_max"]), "poll")
    sh, flat = shape(sel), is_flat(sel["first"], sel["last"])
    numbers = f"{ready} ready, timeout 0: select {slope_text(sel)} ({shape_text(sel)})"
    values = {"ready": int(ready), "select_slope_ns": sel["slope"], "select_r2": sel["r2"],
              "select_shape": sh.kind}
    if sh.kind == TOO_FEW_N:
        return untested("C2", f"select's fit cannot decide: {sh.why}; with no slope CI, neither "
                         "growth nor flatness is shown", figure, rule, numbers)
    copy = None
    if pol:
        ratio = pol["slope"] / sel["slope"] if sel["slope"] else math.inf
        a, b = (sel["slope_lo"], sel["slope_hi"]), (pol["slope_lo"], pol["slope_hi"])
        apart = differs(a, b)
        copy = None if apart is None else bool(ratio >= COPY_STEEPER and apart)
        numbers += (f"; poll over the same N {slope_text(pol)}; "
                    f"poll/select slope ratio {ratio:.2f} ({slope_chance_text(a, b)})")
        values.update(poll_slope_ns=pol["slope"], slope_ratio=ratio)
    wb_text, wb_values = wait_bytes(ev)          # context: the verdict stays with the slopes
    if wb_text:
        numbers += "; " + wb_text
        values.update(wb_values)
    if sh.kind == NOT_GROWING:
        if flat:
            return Verdict("C2", CLAIMS["C2"], REFUTED, numbers, rule, figure,
                           "select's wait cost does not grow with the set: it is flat.", values)
        return untested("C2", "select's slope CI reaches 0 but its cost is not flat either: "
                         "the data cannot tell growth from noise", figure, rule, numbers)
    if copy:
        return Verdict("C2", CLAIMS["C2"], SUPPORTED, numbers, rule, figure,
                       f"select's cost grows ({sh.kind}) and poll, which copies far more per descriptor, "
                       "is far steeper, as a copy-dominated cost predicts.", values)
    if copy is None:
        why = (f"select's cost grows with the set ({sh.kind}); poll's slope over the same N, needed to tell "
               "copying from scanning, is not in the run or has no CI")
    else:
        why = (f"select's cost grows with the set ({sh.kind}), but poll, which copies ~13× more bytes per "
               "descriptor, is not far steeper: the per-descriptor work (each file's poll callback), "
               "not the copy, dominates. The sets are copied, but the copy is not the cost")
    return Verdict("C2", CLAIMS["C2"], PARTLY, numbers, rule, figure, why + ".", values)
