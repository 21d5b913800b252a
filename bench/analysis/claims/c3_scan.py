"""C3: do select and poll cost grow linearly with registered descriptors?"""

from __future__ import annotations

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence
from bench.analysis.claims.rules import (CLAIMS, PARTLY, REFUTED, RULE_LINEAR, RULE_SET_ASIDE, SUPPORTED,
                                         Verdict, grows_linearly, is_flat, shape, untested)
from bench.analysis.claims.text import shape_text, slope_text

UNITS = {"micro": "ns/fd", "scan": "ns of wall time per wait call (sleep included) per connection",
         "scan-rate": "µs CPU per wait call per connection"}


def c3(ev: Evidence) -> Verdict:
    rule = RULE_LINEAR + ("; every fit that can decide (micro with 1 ready, servers' wait time in scan, "
                          "server CPU per wait-loop pass in scan-rate) must be linear; " + RULE_SET_ASIDE)
    parts, texts, values, undecided, knees = {}, [], {}, [], []
    for source, fits in (("micro", ev.micro1), ("scan", ev.scan), ("scan-rate", ev.scan_cpu_call)):
        for mech in ("select", "poll"):
            f = an.fit_row(fits, mech)
            if not f:
                continue
            sh, key = shape(f), f"{source}_{mech}"
            lin = grows_linearly(f)
            texts.append(f"{source} {mech}: {slope_text(f, UNITS[source])} ({shape_text(f, UNITS[source])})")
            values.update({f"{key}_slope_ns": f["slope"], f"{key}_r2": f["r2"], f"{key}_shape": sh.kind,
                           f"{key}_exponent": f["exponent"], f"{key}_flat": is_flat(f["first"], f["last"])})
            if sh.knee:
                values.update({f"{key}_knee_at": sh.knee[0], f"{key}_slope_below": sh.knee[1],
                               f"{key}_slope_above": sh.knee[2]})
                knees.append(f"{source} {mech} at N={sh.knee[0]:,.0f}")
            if lin is None:
                undecided.append(f"{source} {mech} ({sh.kind}: {sh.why})")
            else:
                parts[f"{source} {mech}"] = lin
    losses = [t for t in (ev.losses("scan", mechanisms=("select", "poll")),
                          ev.losses("scan-rate", cpu=True, mechanisms=("select", "poll"))) if t]
    if not parts and not undecided:
        return untested("C3", "neither micro nor scan data for select or poll", "scan_wait", rule)
    figure = "micro_wait_1_ready" if any(t.startswith("micro") for t in texts) else "scan_wait"
    note = "" if any(t.startswith("scan") for t in texts) else f" Scan: {ev.why_absent('scan')}."
    if undecided:
        note += f" Cannot decide, so not counted: {'; '.join(undecided)}."
    if losses:
        note += f" Set aside: {' | '.join(losses)}."
        texts += losses
    if not parts:
        return untested("C3", "no fit of select or poll can decide its shape." + note, figure, rule,
                        "; ".join(texts))
    linear = [k for k, v in parts.items() if v]
    values.update(linear_fits=len(linear), deciding_fits=len(parts))
    if knees:
        note += f" Knee (slope changes > 2×): {', '.join(knees)}."
    if len(linear) == len(parts):
        return Verdict("C3", CLAIMS["C3"], SUPPORTED, "; ".join(texts), rule, figure,
                       "Every fit that can decide grows linearly with registered descriptors while the "
                       "ready count stays fixed." + note, values)
    flats = [k for k in parts if values[f"{k.replace(' ', '_')}_flat"]]
    if not linear and flats:
        return Verdict("C3", CLAIMS["C3"], REFUTED, "; ".join(texts), rule, figure,
                       f"No fit grows linearly; flat: {', '.join(flats)}." + note, values)
    others = [f"{k} ({values[k.replace(' ', '_') + '_shape']})" for k in parts if k not in linear]
    return Verdict("C3", CLAIMS["C3"], PARTLY, "; ".join(texts), rule, figure,
                   f"Linear: {', '.join(linear) or 'none'}; not linear: {', '.join(others)}." + note, values)
