"""C3: do select and poll cost grow linearly with registered descriptors?"""

from __future__ import annotations

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence
from bench.analysis.claims.rules import (CLAIMS, PARTLY, REFUTED, RULE_LINEAR, RULE_SET_ASIDE, SUPPORTED,
                                         Verdict, differs, grows_linearly, is_flat, shape, untested)
from bench.analysis.claims.text import num, shape_text, slope_text

UNITS = {"micro": "ns/fd", "scan": "ns of wall time per wait call (sleep included) per connection",
         "scan-rate": "µs CPU per wait call per connection"}


def c3(ev: Evidence) -> Verdict:
    rule = RULE_LINEAR + ("; every fit that can decide (micro with 1 ready, servers' wait time in scan, "
                          "server CPU per wait-loop pass in scan-rate) must be linear; at the server "
                          "level (ready experiment), select/poll's CPU per burst must grow with N at "
                          "a fixed burst size and their CPU per message fall as the burst grows at a "
                          "fixed N (one scan serves the whole burst), intervals apart; " + RULE_SET_ASIDE)
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
    server, server_texts, server_values = ready_scan(ev)
    texts += server_texts
    values.update(server_values)
    server = {k: v for k, v in server.items() if v is not None}
    failing_server = [k for k, v in server.items() if not v]
    if not parts and not undecided and not server:
        return untested("C3", "neither micro nor scan nor ready data for select or poll", "scan_wait",
                        rule, "; ".join(texts))
    figure = ("micro_wait_1_ready" if any(t.startswith("micro") for t in texts)
              else "scan_wait" if parts or undecided else "ready_cpu")
    note = "" if any(t.startswith("scan") for t in texts) else f" Scan: {ev.why_absent('scan')}."
    if undecided:
        note += f" Cannot decide, so not counted: {'; '.join(undecided)}."
    if losses:
        note += f" Set aside: {' | '.join(losses)}."
        texts += losses
    if server:
        note += (" Server level (ready): " + ("as the claim predicts" if not failing_server else
                                              "not as predicted: " + ", ".join(failing_server)) + ".")
    if not parts:
        if not server:
            return untested("C3", "no fit of select or poll can decide its shape." + note, figure, rule,
                            "; ".join(texts))
        # two N show growth, not its shape: the server level alone is at most partial support
        outcome = REFUTED if len(failing_server) == len(server) else PARTLY
        return Verdict("C3", CLAIMS["C3"], outcome, "; ".join(texts), rule, figure,
                       "No linear fit could decide (the ready experiment's N cannot show linearity)."
                       + note, values)
    linear = [k for k, v in parts.items() if v]
    values.update(linear_fits=len(linear), deciding_fits=len(parts))
    if knees:
        note += f" Knee (slope changes > 2×): {', '.join(knees)}."
    if len(linear) == len(parts):
        return Verdict("C3", CLAIMS["C3"], PARTLY if failing_server else SUPPORTED, "; ".join(texts),
                       rule, figure,
                       "Every fit that can decide grows linearly with registered descriptors while the "
                       "ready count stays fixed." + note, values)
    flats = [k for k in parts if values[f"{k.replace(' ', '_')}_flat"]]
    if not linear and flats:
        return Verdict("C3", CLAIMS["C3"], REFUTED, "; ".join(texts), rule, figure,
                       f"No fit grows linearly; flat: {', '.join(flats)}." + note, values)
    others = [f"{k} ({values[k.replace(' ', '_') + '_shape']})" for k in parts if k not in linear]
    return Verdict("C3", CLAIMS["C3"], PARTLY, "; ".join(texts), rule, figure,
                   f"Linear: {', '.join(linear) or 'none'}; not linear: {', '.join(others)}." + note, values)


def ready_scan(ev: Evidence) -> tuple[dict, list[str], dict]:
    """C3's server-level form from the ready experiment, for select and poll.

    Grows with N: at the smallest burst size measured at two or more N, the
    CPU per burst at the largest N above the smallest, intervals apart (and
    the difference per added descriptor, in ns per burst). Falls with K: at
    the largest N with two or more burst sizes, the CPU per message at the
    largest K below the smallest K's, intervals apart. None without CIs.
    """
    cur = ev.ready
    parts, texts, values = {}, [], {}
    if cur.empty:
        return parts, texts, values
    for mech in ("select", "poll"):
        g = cur[cur["mechanism"] == mech]
        if g.empty:
            continue
        n_per_k = g.groupby("active")["connections"].nunique()
        if (n_per_k >= 2).any():
            k = n_per_k[n_per_k >= 2].index.min()
            at = g[g["active"] == k].sort_values("connections")
            lo, hi, col = at.iloc[0], at.iloc[-1], "server_cpu_us_per_burst"
            apart = differs((lo[f"{col}_lo"], lo[f"{col}_hi"]), (hi[f"{col}_lo"], hi[f"{col}_hi"]))
            parts[f"ready {mech}: CPU per burst grows with N"] = \
                None if apart is None else bool(apart and hi[col] > lo[col])
            per_fd_ns = (hi[col] - lo[col]) * 1000 / (hi["connections"] - lo["connections"])
            values[f"ready_{mech}_ns_per_fd_per_burst"] = float(per_fd_ns)
            texts.append(f"ready {mech}, bursts of {num(k)}: {num(lo[col], 'µs')} → {num(hi[col], 'µs')} "
                         f"CPU per burst from N={num(lo['connections'])} to {num(hi['connections'])} "
                         f"({num(per_fd_ns, 'ns')} per added descriptor per burst)")
        k_per_n = g.groupby("connections")["active"].nunique()
        if (k_per_n >= 2).any():
            n = k_per_n[k_per_n >= 2].index.max()
            at = g[g["connections"] == n].sort_values("active")
            first, last, col = at.iloc[0], at.iloc[-1], "server_cpu_us_per_msg"
            apart = differs((first[f"{col}_lo"], first[f"{col}_hi"]), (last[f"{col}_lo"], last[f"{col}_hi"]))
            parts[f"ready {mech}: CPU per message falls as K grows"] = \
                None if apart is None else bool(apart and last[col] < first[col])
            texts.append(f"ready {mech}, N={num(n)}: {num(first[col], 'µs/msg')} at K={num(first['active'])} "
                         f"→ {num(last[col], 'µs/msg')} at K={num(last['active'])}")
    return parts, texts, values
