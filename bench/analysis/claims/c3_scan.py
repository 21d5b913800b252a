"""C3: do select and poll cost grow linearly with registered descriptors?"""

from __future__ import annotations

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence
from bench.analysis.claims.rules import (CLAIMS, PARTLY, REFUTED, RULE_LINEAR, SUPPORTED, Verdict,
                                         grows_linearly, is_flat, untested)
from bench.analysis.claims.text import shape_text, slope_text


def c3(ev: Evidence) -> Verdict:
    rule = RULE_LINEAR + ("; every available fit (micro with 1 ready, servers' wait time in scan, "
                          "server CPU per wait-loop pass in scan-rate) must be linear")
    parts, texts, values = {}, [], {}
    units = {"micro": "ns/fd", "scan": "ns per connection",
             "scan-rate": "µs CPU per wait call per connection"}
    for source, fits in (("micro", ev.micro1), ("scan", ev.scan), ("scan-rate", ev.scan_cpu_call)):
        for mech in ("select", "poll"):
            f = an.fit_row(fits, mech)
            if f:
                parts[f"{source} {mech}"] = grows_linearly(f)
                unit = units[source]
                texts.append(f"{source} {mech}: {slope_text(f, unit)} ({shape_text(f)})")
                values[f"{source}_{mech}_slope_ns"] = f["slope"]
                values[f"{source}_{mech}_r2"] = f["r2"]
                values[f"{source}_{mech}_flat"] = is_flat(f["first"], f["last"])
    if not parts:
        return untested("C3", "neither micro nor scan data for select or poll", "scan_wait", rule)
    figure = "micro_wait_1_ready" if any(k.startswith("micro") for k in parts) else "scan_wait"
    note = "" if any(k.startswith("scan") for k in parts) else f" Scan: {ev.why_absent('scan')}."
    no_ci = [k for k, v in parts.items() if v is None]   # one repetition: neither linear nor not
    if no_ci:
        note += f" No CI, so not tested: {', '.join(no_ci)}."
        parts = {k: v for k, v in parts.items() if v is not None}
        if not parts:
            return untested("C3", "no fit of select or poll has a confidence interval", figure, rule,
                             "; ".join(texts))
    linear = [k for k, v in parts.items() if v]
    if len(linear) == len(parts):
        return Verdict("C3", CLAIMS["C3"], SUPPORTED, "; ".join(texts), rule, figure,
                       "Every fit grows linearly with registered descriptors while the ready count stays fixed."
                       + note, values)
    flats = [k for k in parts if values[f"{k.replace(' ', '_')}_flat"]]
    if not linear and flats:
        return Verdict("C3", CLAIMS["C3"], REFUTED, "; ".join(texts), rule, figure,
                       f"No fit grows linearly; flat: {', '.join(flats)}." + note, values)
    others = [k for k in parts if k not in linear]
    return Verdict("C3", CLAIMS["C3"], PARTLY, "; ".join(texts), rule, figure,
                   f"Linear: {', '.join(linear) or 'none'}; not linear: {', '.join(others)}." + note, values)
