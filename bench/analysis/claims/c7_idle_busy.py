"""C7: epoll with idle descriptors, and when nearly all are ready."""

from __future__ import annotations

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence, epoll_ctl_share
from bench.analysis.claims.rules import (CLAIMS, FLAT_WITHIN, NEARLY_ALL_ACTIVE, NEARLY_ALL_READY,
                                         NOT_TESTED, PARTLY, RULE_COMPARE, RULE_SET_ASIDE,
                                         SERVER_SATURATED, Verdict, busy_half, chance_text, combine,
                                         differs, is_flat, untested)
from bench.analysis.ready import crossings
from bench.analysis.claims.text import change_text, num


def c7(ev: Evidence) -> Verdict:
    rule = (f"idle part: epoll's wait cost is flat (within {FLAT_WITHIN:.0%}) in micro (1 ready) and in scan, "
            "and its CPU per message in scan-rate; "
            "busy part, at the server level (ready experiment): at the highest measured ready fraction "
            f"every mechanism reached (at least {NEARLY_ALL_READY}), epoll's server CPU per message "
            "lies above the best of select/poll with the intervals apart (supported), within them "
            "(partly: the curves converge) or below (refuted); the ready fractions where the curves "
            "cross are reported. Without a ready experiment, micro with every registered descriptor "
            "ready (largest N ≤ 1024 all three share) decides with the p10–p90 ranges apart; "
            "otherwise micro all-ready is kernel-level context. The activity experiment (fixed total "
            f"rate) never makes most descriptors ready at once and never decides; {RULE_COMPARE}; "
            f"{RULE_SET_ASIDE}")
    parts, texts, values = {}, [], {}
    idle = []
    for source, fits, unit in (("micro", ev.micro1, "ns per wait"), ("scan", ev.scan, "ns per wait"),
                               ("scan-rate", ev.scan_cpu, "µs CPU per message")):
        f = an.fit_row(fits, "epoll")
        if f:
            flat = is_flat(f["first"], f["last"])
            idle.append(flat)
            texts.append(f"{source} epoll: {num(f['first'])} → {num(f['last'])} {unit} "
                         f"({change_text(f['change'])}) from N={num(f['x_min'])} to {num(f['x_max'])}")
            values[f"{source}_epoll_change"] = f["change"]
    parts["no degradation with idle fds"] = None if not idle or None in idle else all(idle)
    for exp in ("scan", "scan-rate"):
        lost = ev.losses(exp, cpu=exp == "scan-rate", mechanisms=("epoll",))
        if lost:
            texts.append(lost)
    a = ev.agg_rows("activity")
    activity_worse = None
    if not a.empty and "server_cpu_us_per_msg" in a:
        top = a["active_ratio"].max()
        if top >= NEARLY_ALL_ACTIVE:
            at = a[a["active_ratio"] == top]
            conns = at["connections"].max()          # several counts: the largest, named below
            where = f" of {num(conns)} connections" if at["connections"].nunique() > 1 else ""
            at = at[at["connections"] == conns].set_index("mechanism")
            col = "server_cpu_us_per_msg"
            hot = [m for m in ("select", "poll", "epoll") if m in at.index and at.loc[m, "n_cpu"] == 0]
            if hot:   # CLAIMS.md: a saturated server never decides a CPU-per-message verdict
                texts.append(f"at {top:.0%} active{where}: server saturated (≥ {SERVER_SATURATED:.0%} of its "
                             f"core) in every repetition, no CPU per message: {', '.join(hot)}")
            base = [m for m in ("select", "poll") if m in at.index and m not in hot]
            if "epoll" in at.index and "epoll" not in hot and base:
                best = min(base, key=lambda m: at.loc[m, col])
                worse, compared = [], []
                for m in ("epoll", "epoll-toggle"):
                    if m in at.index and m not in hot and at.loc[m, "n_cpu"]:
                        d = differs((at.loc[m, f"{col}_lo"], at.loc[m, f"{col}_hi"]),
                                    (at.loc[best, f"{col}_lo"], at.loc[best, f"{col}_hi"]))
                        compared.append(d)
                        if d and at.loc[m, col] > at.loc[best, col]:
                            worse.append(m)
                        label = m + (" (reference)" if m == "epoll-toggle" else "")
                        texts.append(f"at {top:.0%} active{where}: {label} {num(at.loc[m, col], 'µs/msg')} "
                                     f"[{num(at.loc[m, f'{col}_lo'])}, {num(at.loc[m, f'{col}_hi'])}] vs "
                                     f"{best} {num(at.loc[best, col], 'µs/msg')} "
                                     f"[{num(at.loc[best, f'{col}_lo'])}, {num(at.loc[best, f'{col}_hi'])}] "
                                     f"({chance_text(at.loc[m, 'n_cpu'], at.loc[best, 'n_cpu'])})")
                # no CI (one repetition) cannot show a difference, nor its absence
                activity_worse = True if worse else None if all(d is None for d in compared) else False
                values.update(ratio=float(top), worse=worse, activity_connections=float(conns),
                              epoll_cpu=float(at.loc["epoll", col]), best_cpu=float(at.loc[best, col]))
    if activity_worse is not None:
        values["activity_worse"] = activity_worse  # server-level context, not the deciding part
    busy, micro_texts, micro_values = all_ready_busy(ev)
    server_busy, ready_texts, ready_values = ready_busy(ev)
    texts += ready_texts + micro_texts             # micro: kernel-level context once ready decides
    values.update(micro_values)
    values.update(ready_values)
    parts["worse when nearly all active"] = server_busy if ready_values else busy
    ctl_texts, ctl_values = epoll_ctl_share(ev)        # the cost Gammo et al. found: context, not a part
    texts += ctl_texts
    values.update(ctl_values)
    if "activity_worse" not in values and "ratio" in values:
        texts.append("activity: no CI at the highest ratio (one repetition)")
    elif not a.empty and a["active_ratio"].max() < NEARLY_ALL_ACTIVE:
        texts.append(f"activity: highest active ratio {a['active_ratio'].max():.2f} < {NEARLY_ALL_ACTIVE}")
    outcome = combine(parts)
    if outcome == NOT_TESTED:
        return untested("C7", "no epoll micro data and no scan data", "micro_wait_all_ready", rule)
    said = {True: "yes", False: "no", PARTLY: "they converge (intervals overlap)", None: "not tested"}
    reason = "; ".join(f"{k}: {said[v]}" for k, v in parts.items())
    if ready_values and "ready_k" in values:
        how = {True: "above", PARTLY: "within the intervals of", False: "below",
               None: "not comparable with"}[server_busy]
        reason += (f" (server level, N={num(values['ready_n'])}, bursts of {num(values['ready_k'])}, "
                   f"measured ready fraction ≥ {values['ready_fraction']:.2f}: epoll "
                   f"{num(values['ready_epoll_cpu'], 'µs/msg')} is {how} "
                   f"{values['ready_best']}'s {num(values['ready_best_cpu'], 'µs/msg')})")
    elif busy:
        reason += (f" (with all {num(values['all_ready_n'])} ready, epoll's wait costs "
                   f"{values['all_ready_ratio']:.2f}× {values['all_ready_best']}'s)")
    if "activity_worse" in values:
        reason += (". At the server level, the activity experiment (fixed total rate) never had most "
                   "descriptors ready at once, and there epoll was "
                   + ("worse" if values["activity_worse"] else "not worse"))
    figure = ("ready_cpu" if ready_values else
              "micro_wait_all_ready" if busy is not None else "micro_wait_1_ready")
    return Verdict("C7", CLAIMS["C7"], outcome, "; ".join(texts), rule, figure, reason + ".", values)


def all_ready_busy(ev: Evidence) -> tuple[bool | None, list[str], dict]:
    """C7's busy part from micro: every registered descriptor ready on each call.

    At the largest N ≤ 1024 (select's limit; epoll returns at most MAXEVENTS
    events) where epoll and select or poll all have a row: is epoll's median
    wait cost above the best of select/poll, with their p10–p90 ranges apart?
    """
    rows = an.micro_wait(ev.run.micro, "all")
    if rows.empty:
        return None, ["micro with all ready: not in this run"], {}
    rows = rows[rows["registered"] <= 1024]
    have = {m: set(rows.loc[rows["mechanism"] == m, "registered"]) for m in ("select", "poll", "epoll")}
    shared = have["epoll"] & (have["select"] | have["poll"])
    if not shared:
        return None, ["micro with all ready: no N that epoll shares with select or poll"], {}
    n = max(shared)
    at = rows[rows["registered"] == n].set_index("mechanism")
    base = [m for m in ("select", "poll") if m in at.index]
    best = min(base, key=lambda m: at.loc[m, "ns_median"])
    e, b = at.loc["epoll"], at.loc[best]
    apart = differs((e["ns_p10"], e["ns_p90"]), (b["ns_p10"], b["ns_p90"]))
    worse = None if apart is None else bool(apart and e["ns_median"] > b["ns_median"])
    text = (f"micro, all {num(n)} ready: epoll {num(e['ns_median'] / 1000, 'µs')} per wait "
            f"[p10 {num(e['ns_p10'] / 1000)}, p90 {num(e['ns_p90'] / 1000)}] vs {best} "
            f"{num(b['ns_median'] / 1000, 'µs')} [p10 {num(b['ns_p10'] / 1000)}, p90 {num(b['ns_p90'] / 1000)}] "
            "(one process's consecutive calls, not repetitions: no false-positive rate is claimed)")
    return worse, [text], {"all_ready_n": float(n), "all_ready_best": best,
                           "all_ready_ratio": float(e["ns_median"] / b["ns_median"])}


def ready_busy(ev: Evidence) -> tuple[bool | str | None, list[str], dict]:
    """C7's busy part at the server level, from the ready experiment.

    At each N, the largest burst size K that epoll shares with select or
    poll; the N kept is the one where the lowest measured ready fraction
    among them is highest (select and poll return a whole burst per call;
    epoll at most MAXEVENTS). There, `busy_half` compares epoll's server
    CPU per message with the best of select/poll. Below NEARLY_ALL_READY
    the part is not tested. Crossings of the median curves, per N and pair,
    and the K = 0 control are reported with it.
    """
    cur, col = ev.ready, "server_cpu_us_per_msg"
    if cur.empty:
        return None, [], {}
    cells = []
    for n, g in cur.groupby("connections"):
        ks = {m: set(g.loc[g["mechanism"] == m, "active"]) for m in ("select", "poll", "epoll")}
        shared = ks["epoll"] & (ks["select"] | ks["poll"])
        if shared:
            at = g[g["active"] == max(shared)].set_index("mechanism")
            rf = min(at.loc[m, "ready_fraction"] for m in ("select", "poll", "epoll") if m in at.index)
            cells.append((rf, -n, max(shared), at))
    texts, values = [], {"ready_decides": True}
    if not cells:
        return None, ["ready: no N where epoll and select or poll share a burst size"], values
    rf, neg_n, k, at = max(cells, key=lambda c: c[:2])
    base = [m for m in ("select", "poll") if m in at.index]
    best = min(base, key=lambda m: at.loc[m, col])

    def ci(m):
        return at.loc[m, col], at.loc[m, f"{col}_lo"], at.loc[m, f"{col}_hi"]

    def show(m):
        mid, lo, hi = ci(m)
        return f"{m} {num(mid, 'µs/msg')} [{num(lo)}, {num(hi)}]"
    values.update(ready_n=float(-neg_n), ready_k=float(k), ready_fraction=float(rf), ready_best=best,
                  ready_epoll_cpu=float(ci("epoll")[0]), ready_best_cpu=float(ci(best)[0]))
    refs = [f"; {show(m)} (reference)" for m in ("epoll-toggle",) if m in at.index]
    texts.append(f"ready, N={num(-neg_n)}, bursts of K={num(k)} (measured ready fraction ≥ {rf:.2f} "
                 f"for each): {show('epoll')} vs {show(best)}" + "".join(refs))
    crossed = {}
    for n, g in cur.groupby("connections"):
        for m, other in (("epoll", "select"), ("epoll", "poll"), ("epoll-toggle", "poll")):
            a, b = g[g["mechanism"] == m], g[g["mechanism"] == other]
            if len(a) < 2 or len(b) < 2:
                continue
            xs = crossings(a, b, col)
            crossed[f"{m}/{other}/N={n:.0f}"] = xs
            texts.append(f"N={num(n)}: {m} and {other} " + (
                "cross at ready fraction " + ", ".join(f"{x:.3g}" for x in xs) if xs else
                f"never cross (ready fraction {a['ready_fraction'].min():.3g}–"
                f"{a['ready_fraction'].max():.3g})"))
    values["ready_crossings"] = crossed
    ctl = ev.ready_control
    if not ctl.empty and "server_cpu_us_per_burst" in ctl:
        texts.append("stop/continue alone (K=0): " + ", ".join(
            f"{r.mechanism} {num(r.server_cpu_us_per_burst, 'µs')} per burst at N={num(r.connections)}"
            for r in ctl.itertuples()))
    if rf < NEARLY_ALL_READY:
        texts.append(f"ready: the highest ready fraction every mechanism reached is {rf:.2f} "
                     f"< {NEARLY_ALL_READY}")
        return None, texts, values
    return busy_half(ci("epoll"), ci(best)), texts, values
