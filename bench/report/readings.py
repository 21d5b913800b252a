"""Each figure's reading: two sentences computed from the run's data, the text under the figure in the report."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis import stats as an
from bench.analysis import claims
from bench.report import plots
from bench.analysis.claims import num, rules
from bench.analysis.claims.c8_memory import complete_kernel
from bench.rundir.store import Run


def _agg(points: pd.DataFrame, experiment: str, x: str, y: str) -> pd.DataFrame:
    rows = an.experiment(points, experiment)
    rows = rows[rows["usable"]]
    if rows.empty:
        return pd.DataFrame()
    a = an.aggregate(rows, measures=[y], by=["mechanism", x])
    return a[a["n"] > 0].sort_values(x)


def _changes(a: pd.DataFrame, x: str, y: str, xname: str, unit: str, what: str) -> str:
    """'From N=10 to 10,000, <what> went from A to B unit (+x%) for m; ...'."""
    parts = []
    for mech in plots.mechanisms_in(a):
        g = a[a["mechanism"] == mech]
        if len(g) < 2:
            continue
        first, last = g.iloc[0], g.iloc[-1]
        change = (last[y] - first[y]) / first[y] if first[y] else math.nan
        parts.append(f"{plots.label(mech)} {num(first[y])} → {num(last[y], unit)} ({change:+.0%}"
                     + (f", up to {xname}={num(last[x])}" if last[x] != a[x].max() else "") + ")")
    return f"From {xname}={num(a[x].min())} to {num(a[x].max())}, {what} went: " + "; ".join(parts) + "."


def _ranking(a: pd.DataFrame, x: str, y: str, xname: str, unit: str, higher_is_better: bool | None) -> str:
    """At the largest x: the two ends, and whether their difference counts by the CI rule,
    with the chance of that for their repetitions."""
    at = a[a[x] == a[x].max()].dropna(subset=[y])
    if len(at) < 2:
        who = plots.label(at.iloc[0]["mechanism"]) if len(at) else "no mechanism"
        return (f"Only {who} has usable points at {xname}={num(a[x].max()) if len(a) else 'n/a'}, "
                "so nothing is ranked there.")
    at = at.sort_values(y, ascending=higher_is_better is False)
    top, bottom = at.iloc[0], at.iloc[-1]
    apart = claims.differs((top[f"{y}_lo"], top[f"{y}_hi"]), (bottom[f"{y}_lo"], bottom[f"{y}_hi"]))
    n = "n_cpu" if y in an.CPU_MEASURES else "n"
    chance = rules.chance_text(top[n], bottom[n])
    rule = {True: f"their CIs do not overlap ({chance}), so the difference counts",
            False: "their CIs overlap, so by our rule this is no difference",
            None: "no CI (too few repetitions), so the difference does not count"}[apart]
    hi, lo = (top, bottom) if top[y] >= bottom[y] else (bottom, top)
    ratio = hi[y] / lo[y] if lo[y] else math.nan
    words = ("highest", "lowest") if higher_is_better is None else ("best", "worst")
    return (f"At {xname}={num(a[x].max())}, {plots.label(top['mechanism'])} is {words[0]} with "
            f"{num(top[y], unit)} and {plots.label(bottom['mechanism'])} {words[1]} with "
            f"{num(bottom[y], unit)} ({plots.label(hi['mechanism'])} at {ratio:.2f}× "
            f"{plots.label(lo['mechanism'])}); {rule}.")


def _points_reading(points, experiment, x, y, xname, unit, what, higher_is_better) -> str:
    a = _agg(points, experiment, x, y)
    a = a[a[y].notna()] if not a.empty else a
    if a.empty or a.groupby("mechanism")[x].nunique().max() < 2:
        return aside_note(points, experiment, y).strip()   # too few points: by_figure() says so
    return (_changes(a, x, y, xname, unit, what) + " " + _ranking(a, x, y, xname, unit, higher_is_better)
            + aside_note(points, experiment, y))


def aside_note(points: pd.DataFrame, experiment: str, y: str) -> str:
    """Which mechanism lost how many rows of this figure: to the load generator's saturation
    (removed when none is left), and, for a CPU measure, to its own server's."""
    parts = [f"{plots.label(m)} {'all ' if gone else ''}{lost} of {total} rows"
             + (" (removed from this figure)" if gone else "")
             for m, (lost, total, gone) in an.saturation_losses(points, experiment).items()]
    text = f" Set aside, load generator saturated: {'; '.join(parts)}." if parts else ""
    if y in an.CPU_MEASURES:
        rows = an.experiment(points, experiment)
        hot = rows[rows["usable"] & rows["server_saturated"]]
        if len(hot):
            per = [f"{plots.label(m)} {len(g)} of {int(rows['usable'][rows['mechanism'] == m].sum())} rows"
                   for m, g in hot.groupby("mechanism", sort=True)]
            text += (f" Left out of CPU per message, server at ≥ {rules.SERVER_SATURATED:.0%} of its core "
                     f"(its cost there is the offered rate's ceiling): {'; '.join(per)}.")
    return text


def _fits_reading(fits: pd.DataFrame, unit: str, where: str) -> str:
    """Every mechanism's fit by the shape rule: its kind and slope, a knee with both slopes, flatness."""
    fits = fits[fits["slope"].notna()] if fits is not None and not fits.empty else fits
    if fits is None or fits.empty:
        return ""
    parts = []
    for r in fits.itertuples():
        f = r._asdict()
        sh = rules.shape(f)
        text = f"{plots.label(r.mechanism)} {num(r.slope)} {unit}, {sh.kind} ({sh.why})"
        if sh.knee:
            text += f", knee at N={num(sh.knee[0])}: {num(sh.knee[1])} → {num(sh.knee[2])} {unit}"
        if claims.is_flat(r.first, r.last):
            text += f", flat ({r.change:+.0%})"
        parts.append(text + f", over N={num(r.x_min)}–{num(r.x_max)}")
    kinds = {}
    for r in fits.itertuples():
        kinds.setdefault(rules.shape(r._asdict()).kind, []).append(plots.label(r.mechanism))
    return (f"{where}, by the shape rule: " + "; ".join(parts) + ". In short: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in kinds.items()) + ".")


def _fdlimit_reading(points) -> str:
    rows = an.experiment(points, "fdlimit")
    rows = rows[rows["usable"]]
    if rows.empty:
        return ""
    out = []
    for mech in plots.mechanisms_in(rows):
        g = rows[rows["mechanism"] == mech]
        c = pd.to_numeric(g["connections"], errors="coerce")
        e = pd.to_numeric(g["echoing"], errors="coerce")
        top = e[c == c.max()].median()
        out.append(f"{plots.label(mech)} echoed at most {num(e.max())} (at {num(c.max())} attempted: {num(top)})")
    short = [m for m in plots.mechanisms_in(rows) if (pd.to_numeric(rows[rows["mechanism"] == m]["echoing"])
                                               < pd.to_numeric(rows[rows["mechanism"] == m]["connections"])).any()]
    second = (f"Mechanisms that fell short of the attempted connections: {', '.join(short)}."
              if short else "Every mechanism echoed every connection it was given.")
    return "; ".join(out) + ". " + second


def _syscalls_reading(sc: pd.DataFrame, doc: dict | None = None) -> str:
    if sc is None or sc.empty:
        return ""
    sc = sc.assign(calls_per_msg=pd.to_numeric(sc["calls_per_msg"], errors="coerce"))
    tops = []
    for mech in plots.mechanisms_in(sc):
        g = sc[sc["mechanism"] == mech].sort_values("calls_per_msg", ascending=False)
        if len(g):
            tops.append(f"{plots.label(mech)}: {g.iloc[0]['syscall']} {num(g.iloc[0]['calls_per_msg'])}")
    mm = sc[sc["syscall"] == "mmap"]
    mm_text = (f"mmap runs at most {num(mm['calls_per_msg'].max())} times per message."
               if len(mm) else "No server called mmap during the window.")
    return "Busiest system call per message: " + "; ".join(tops) + ". " + mm_text + _perturbation(doc)


def _perturbation(doc: dict | None) -> str:
    """What tracing did to the servers (syscalls.json): throughput and wait calls, untraced vs traced."""
    pts = [p for p in ((doc or {}).get("points") or {}).values() if p.get("traced_over_untraced")]
    if not pts:
        return ""
    ratio = pd.Series([p["traced_over_untraced"] for p in pts])
    w_u = pd.Series([p["untraced"]["wait_calls_per_msg"] for p in pts], dtype=float)
    w_t = pd.Series([p["traced"]["wait_calls_per_msg"] for p in pts], dtype=float)
    return (f" Tracing ({doc.get('tracer')}) slowed the servers to {ratio.median():.1%} of their "
            f"untraced throughput (median over {len(pts)} points, range {ratio.min():.1%} to "
            f"{ratio.max():.1%}), and a slower server finds more connections ready per wait: "
            f"{num(w_u.median())} wait calls per message untraced (the servers' own counters) vs "
            f"{num(w_t.median())} traced. Counts per message of recv and send hold; those of the "
            "wait call describe the traced, slower server.")


def _memory_reading(mem: pd.DataFrame, doc: dict | None = None) -> str:
    if mem is None or mem.empty:
        return ""
    mem = mem.copy()
    source = complete_kernel(mem)
    col, what = source if source else ("per_conn_kernel_bytes", "the four named caches")
    for c in ("connections", "per_conn_kernel_bytes", "per_conn_rss_bytes", col):
        mem[c] = pd.to_numeric(mem[c], errors="coerce")
    parts = []
    for mech in plots.mechanisms_in(mem):
        g = mem[mem["mechanism"] == mech]
        top = g[g["connections"] == g["connections"].max()]
        kernel = (top[col] / top["connections"]) if source else top[col]
        per = (kernel + top["per_conn_rss_bytes"].fillna(0)).median()
        parts.append(f"{plots.label(mech)} {num(per, 'B')} ({num(claims.GB / per)} per GB, "
                     f"{num(claims.GIB / per)} per GiB)")
    text = (f"Memory per connection at the largest N, kernel ({what}, against the bare-socket control) "
            "plus process RSS: " + "; ".join(parts) + ". "
            f"The claim's figure is {claims.CLAIMED_CONNS_PER_GB:,} per GB (10⁹ B).")
    doc = doc or {}
    ctl = [c for c in doc.get("control") or [] if c.get("per_conn_kernel_bytes")]
    if ctl:
        c = max(ctl, key=lambda c: c["connections"])
        text += (f" A bare TCP socket with no multiplexer (control, one side of the loopback pair) "
                 f"costs {num(c['per_conn_kernel_bytes'], 'B')} in these caches at {num(c['connections'])} "
                 "connections; what a mechanism adds over it is its own.")
    per_gib = (doc.get("limits") or {}).get("per_gib") or {}
    if per_gib:
        text += (" Connections per GiB each limit implies (a note on where 100k may come from, not "
                 "a rule): " + ", ".join(f"{k} {num(v)}" for k, v in per_gib.items()) + ".")
    if doc.get("first_limits"):
        text += (" The limits as connections one epoll server holds, smallest first (predicted): "
                 + ", ".join(f"{f['limit']} {num(f['connections'])} ({f['errno']})"
                             for f in doc["first_limits"]) + ".")
    if doc.get("reason"):
        text += f" Kernel caches: {doc['reason']}."
    return text


def _capped_note(micro: pd.DataFrame) -> str:
    rows = an.micro_wait(micro, "all")
    capped = rows[rows["capped"]] if not rows.empty else rows
    if capped.empty:
        return ""
    where = ", ".join(f"{plots.label(m)} at N={', '.join(num(n) for n in g['registered'])}"
                      for m, g in capped.groupby("mechanism", sort=True))
    return (f" Left out of the fits, ringed: calls that returned fewer events than were ready "
            f"(MAXEVENTS): {where}; each slope is a cost per returned event.")


def _capacity_reading(points: pd.DataFrame) -> str:
    """Derived capacity per core (scan-rate, server unsaturated) at the largest N, next to the closed loop."""
    rows = an.experiment(points, "scan-rate")
    rows = rows[rows["cpu_usable"]].copy()
    if rows.empty:
        return ""
    rows["capacity_msgs_s"] = 1e6 / pd.to_numeric(rows["server_cpu_us_per_msg"], errors="coerce")
    parts = []
    for mech in plots.mechanisms_in(rows):
        g = rows[rows["mechanism"] == mech]
        top = pd.to_numeric(g["connections"]).max()
        parts.append(f"{plots.label(mech)} {num(g.loc[pd.to_numeric(g['connections']) == top, 'capacity_msgs_s'].median(), 'msg/s')}"
                     f" at N={num(top)}")
    return ("Every mechanism's capacity per core, derived from CPU per message (10⁶ / server CPU µs per "
            "message at the fixed rate, server below 90% of its core), at its largest unsaturated N: "
            + "; ".join(parts) + ". The dashed lines are the closed loop's measured throughput, bounded "
            "by the load generator where it saturated (hollow)." + aside_note(points, "scan-rate",
                                                                            "server_cpu_us_per_msg"))


def _ready_reading(points, largest: bool, y: str, unit: str, what: str,
                   higher_is_better: bool | None) -> str:
    """The ready experiment at its smallest (or largest) N, over the burst size K > 0,
    with the measured ready fraction each mechanism reached at the largest K."""
    rows = an.experiment(points, "ready")
    rows = rows[rows["usable"] & (pd.to_numeric(rows["active"], errors="coerce") > 0)]
    if rows.empty:
        return ""
    conns = pd.to_numeric(rows["connections"], errors="coerce")
    n = conns.max() if largest else conns.min()
    rows = rows[conns == n].assign(active=lambda d: pd.to_numeric(d["active"], errors="coerce"))
    a = _agg(rows, "ready", "active", y)
    b = _agg(rows, "ready", "active", "ready_fraction")
    if a.empty or a.groupby("mechanism")["active"].nunique().max() < 2:
        return ""
    top = b[b["active"] == b["active"].max()].dropna(subset=["ready_fraction"])
    reached = ", ".join(f"{plots.label(r.mechanism)} {r.ready_fraction:.3g}" for r in top.itertuples())
    return (f"N = {num(n)}. " + _changes(a, "active", y, "K", unit, what) + " "
            + _ranking(a, "active", y, "K", unit, higher_is_better)
            + (f" Measured ready fraction at K={num(b['active'].max())}: {reached}." if reached else ""))


def _split_reading(micro: pd.DataFrame) -> str:
    """C11's figure: the user and the system slopes per mechanism, 1 ready, over select's range."""
    user = an.micro_fits(micro, "1", measure="user_ns_per_call")
    sel = an.fit_row(user, "select")
    if not sel:
        return ""
    top = sel["x_max"]
    parts = []
    for part in ("user", "sys"):
        fits = an.micro_fits(micro, "1", max_registered=top, measure=f"{part}_ns_per_call")
        parts.append(_fits_reading(fits, "ns per registered descriptor",
                                   f"{'User' if part == 'user' else 'System'} time per wait call up to "
                                   f"N={num(top)}"))
    return " ".join(p for p in parts if p)


def _threads_reading(points: pd.DataFrame, mem: pd.DataFrame) -> tuple[str, str]:
    """C10's figures: threads' CPU per message and memory per connection as multiples of epoll's."""
    cpu_text = mem_text = ""
    rows = plots.threads_figures.threads_cpu_rows(points)
    if not rows.empty:
        a = an.aggregate(rows[rows["usable"]], ["server_cpu_us_per_msg", "ctx_switches_per_msg"],
                         by=["mechanism", "connections"])
        wide = a.pivot_table(index="connections", columns="mechanism", values="server_cpu_us_per_msg")
        if {"threads", "epoll"} <= set(wide.columns):
            cpu_text = ("Server CPU per message, threads as a multiple of epoll: " + ", ".join(
                f"×{r['threads'] / r['epoll']:.2f} at {num(n)}" for n, r in wide.dropna().iterrows())
                + " connections. Each threads connection is a thread blocked in recv(), woken by the "
                "kernel for its own data; epoll's are one interest set in one thread.")
            ctx = a.pivot_table(index="connections", columns="mechanism", values="ctx_switches_per_msg")
            if {"threads", "epoll"} <= set(ctx.columns) and len(ctx.dropna()):
                n, r = next(iter(ctx.dropna().iloc[::-1].iterrows()))
                cpu_text += (f" Context switches per message at {num(n)}: threads {num(r['threads'])}, "
                             f"epoll {num(r['epoll'])}.")
    m = plots.threads_figures.threads_memory_rows(mem)
    if not m.empty:
        wide = m.pivot_table(index="connections", columns="mechanism", values="per_conn_total_bytes")
        if {"threads", "epoll"} <= set(wide.columns):
            mem_text = ("Memory per connection, threads vs epoll: " + ", ".join(
                f"{num(r['threads'], 'B')} vs {num(r['epoll'], 'B')} at {num(n)}"
                for n, r in wide.dropna().iterrows()) + " connections. ")
            top = m[(m["mechanism"] == "threads") & (m["connections"] == m["connections"].max())]
            mem_text += (f"Of a threads connection's bytes, {num(top['per_conn_thread_bytes'].median(), 'B')} "
                         "are its thread's kernel stack and task structures (dashed), the rest its "
                         "stack pages (RSS) and socket.")
    return cpu_text, mem_text


FIGURE_EXPERIMENT = {"scan_wait": "scan", "scan_throughput": "scan", "scan_latency": "scan",
                     "scan_cpu": "scan", "ready_cpu": "ready", "ready_cpu_large_n": "ready",
                     "ready_events": "ready", "ready_drain": "ready", "fdlimit": "fdlimit",
                     "msgsize": "msgsize"}


def _nothing_usable(points: pd.DataFrame, experiment: str) -> str:
    rows = an.experiment(points, experiment)
    aside = int((rows["saturated"] | rows["noisy"]).sum())
    return (f"Only {int(rows['usable'].sum())} of the {len(rows)} {experiment} point rows are usable "
            f"({aside} saturated or noisy, drawn hollow; {int(rows['failed'].sum())} failed), too few "
            "for a line or a fit. Rerun on a quieter machine or with more repetitions for a reading.")


def by_figure(run: Run, points: pd.DataFrame) -> dict[str, str]:
    """figure name -> two sentences read off the run's data."""
    text = _from_data(run, points)
    for name, experiment in FIGURE_EXPERIMENT.items():
        said = text.get(name) or ""
        if said.count(". ") + said.endswith(".") < 2:   # no trend left, at most what was set aside
            text[name] = (_nothing_usable(points, experiment) + " " + said).strip()
    return text


def _from_data(run: Run, points: pd.DataFrame) -> dict[str, str]:
    micro1, micro_all = an.micro_fits(run.micro, "1"), an.micro_fits(run.micro, "all")
    pr = lambda *a: _points_reading(points, *a)
    threads = _threads_reading(points, run.memory)
    return {
        "micro_wait_0_ready": _fits_reading(an.micro_fits(run.micro, "0"), "ns per registered descriptor",
                                            "With nothing ready and timeout 0 (C2 decides here)"),
        "micro_wait_1_ready": _fits_reading(micro1, "ns per registered descriptor", "With 1 descriptor ready"),
        "micro_wait_all_ready": _fits_reading(micro_all, "ns per returned event",
                                              "With every descriptor ready") + _capped_note(run.micro),
        "scan_wait": _fits_reading(an.scan_fits(points), "ns of wall time per wait call (sleep included) "
                                   "per connection", "In the servers' own wait-call time (scan)")
        + aside_note(points, "scan", "wait_ns_per_call"),
        "capacity": _capacity_reading(points),
        "scan_throughput": pr("scan", "connections", "throughput_msgs_s", "N", "msg/s", "throughput", True),
        "scan_latency": pr("scan", "connections", "p99_us", "N", "µs", "p99 latency", False),
        "scan_cpu": pr("scan", "connections", "server_cpu_sys_us_per_msg", "N", "µs",
                       "system CPU per message", False),
        "micro_drain_1_ready": _fits_reading(an.micro_fits(run.micro, "1", mode="drain"),
                                             "ns per registered descriptor",
                                             "In bench.c's loop (each ready read, the next written), 1 ready"),
        "micro_drain_all_ready": _fits_reading(an.micro_fits(run.micro, "all", mode="drain"),
                                               "ns per ready descriptor",
                                               "In bench.c's loop with every descriptor ready"),
        "ready_cpu": _ready_reading(points, False, "server_cpu_us_per_msg", "µs",
                                    "server CPU per message", False),
        "ready_cpu_large_n": _ready_reading(points, True, "server_cpu_us_per_msg", "µs",
                                            "server CPU per message", False),
        "ready_events": _ready_reading(points, False, "events_per_call", "events",
                                       "events per wait call", None),
        "ready_drain": _ready_reading(points, False, "drain_p50_us", "µs",
                                      "the median drain time per burst", False),
        "fdlimit": _fdlimit_reading(points),
        "msgsize": pr("msgsize", "msg_size", "throughput_msgs_s", "size", "msg/s", "throughput", True),
        "syscalls": _syscalls_reading(run.syscalls, claims.read_task_json(run.path, "syscalls.json")),
        "memory": _memory_reading(run.memory, claims.read_task_json(run.path, "memory.json")),
        "micro_cpu_split": _split_reading(run.micro),
        "threads_cpu": threads[0], "threads_memory": threads[1],
    }
