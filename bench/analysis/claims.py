"""The verdict rules: how a run's numbers become a verdict on each claim (CLAIMS.md).

Everything that decides a verdict is in this module: the thresholds (each
quoted from CLAIMS.md "Rules for verdicts", or marked "ours" with the reason),
three rule functions (`grows_linearly`, `is_flat`, `differs`), and one
function per claim that reads the run and applies them. Data decide: a claim
whose data are absent from the run is "not tested", with the reason, and no
point measured while saturated or noisy, and no failed point, enters a number
(see bench.analysis.stats.classify).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.analysis import stats as an
from bench.rundir.store import Run, load_run
from servers.sysutil import FD_SETSIZE

# ---------------------------------------------------------------- thresholds
# CLAIMS.md: "the 95% confidence interval of the fitted slope excludes zero"
CONFIDENCE = an.CONFIDENCE
# CLAIMS.md: "and the linear fit explains the data (R² ≥ 0.9)"
LINEAR_R2_MIN = 0.9
# CLAIMS.md: "flat when the cost at the largest N is within 25% of the cost at the smallest N"
FLAT_WITHIN = 0.25
# CLAIMS.md: "A comparison between mechanisms counts only when the confidence
# intervals of their medians do not overlap" -> differs()
# CLAIMS.md, C1: "FD_SETSIZE descriptors (1024 on Linux)"
# ours (C1): descriptors a server holds besides its connections (stdio, the
# listener, the wakeup socketpair, files): select's wall is this close below 1024
WALL_SLACK = 16
# ours (C2, C4): a copy-dominated cost predicts poll's slope ~13x select's,
# since poll moves 10 bytes per descriptor (8 in, 2 out) and select 6 bits
# (3 sets, in and out); we call poll "far steeper" from 2x, CIs apart.
COPY_STEEPER = 2.0
# ours (C7): "nearly all descriptors active" = an active ratio of at least 0.9
NEARLY_ALL_ACTIVE = 0.9
# ours (C6): an mmap "tied to the loop" would recur with the wait calls;
# fewer than 0.01 mmap calls per message is the allocator, not the loop.
LOOP_MMAP_PER_MSG = 0.01
# CLAIMS.md, C8: "about 100k connections per GB of memory"
CLAIMED_CONNS_PER_GB = 100_000
# ours (C8): "about" = within a factor of 2
ABOUT_FACTOR = 2.0
GB = 2 ** 30

SUPPORTED, PARTLY, REFUTED, NOT_TESTED = "supported", "partly supported", "refuted", "not tested"
OUTCOMES = (SUPPORTED, PARTLY, REFUTED, NOT_TESTED)

RULE_LINEAR = (f"linear: slope's {CONFIDENCE:.0%} CI excludes 0 and R² ≥ {LINEAR_R2_MIN}; "
               f"flat: cost at largest N within {FLAT_WITHIN:.0%} of cost at smallest N")
RULE_COMPARE = ("a difference counts only when the confidence intervals of the medians do not "
                f"overlap (exact order-statistic intervals, {CONFIDENCE:.0%} where the repetitions allow; "
                "below 6 repetitions the interval is [min, max], 75% coverage with 3: the figures' "
                "legends give each one's coverage)")
RULE_SET_ASIDE = "saturated, noisy and failed points never decide"

CLAIMS = {
    "C1": "select watches at most FD_SETSIZE descriptors (1024 on Linux); raising it needs a recompile",
    "C2": "select copies its descriptor sets between user and kernel space on every call, "
          "a cost that grows with the set",
    "C3": "select and poll scan every registered descriptor on every call, so their cost "
          "grows linearly with the number of descriptors, active or not",
    "C4": "poll has no maximum descriptor count (it is \"based on a linked list\"), "
          "but copies its whole array on every call",
    "C5": "epoll offers level- and edge-triggered modes; edge-triggered reports a descriptor only once",
    "C6": "epoll shares memory with the kernel through mmap to avoid copies",
    "C7": "epoll does not degrade as idle descriptors grow, but may do worse than "
          "select/poll when nearly all descriptors are active",
    "C8": "epoll can hold about 100k connections per GB of memory (200k per 2 GB)",
}


@dataclass(frozen=True)
class Verdict:
    id: str
    claim: str
    verdict: str          # one of OUTCOMES
    numbers: str          # the deciding number(s), in words with units
    rule: str             # the rule that turned them into the verdict
    figure: str           # plots/<figure>.svg, "" when none applies
    reason: str           # why, in a sentence or two
    values: dict = field(default_factory=dict)   # the deciding numbers, machine-readable


# ---------------------------------------------------------------- rules

def grows_linearly(fit: dict | None) -> bool | None:
    """CLAIMS.md linear rule: the slope's CI excludes zero (above it) and R² ≥ 0.9."""
    if not fit or math.isnan(fit.get("slope_lo", math.nan)):
        return None
    return fit["slope_lo"] > 0 and fit["r2"] >= LINEAR_R2_MIN


def is_flat(first: float, last: float) -> bool | None:
    """CLAIMS.md flat rule: cost at the largest N within 25% of the cost at the smallest."""
    if any(v is None or math.isnan(v) for v in (first, last)) or first <= 0:
        return None
    return abs(last - first) <= FLAT_WITHIN * first


def differs(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    """CLAIMS.md comparison rule: True when the CIs (lo, hi) do not overlap; None without CIs."""
    o = an.overlap(a[0], a[1], b[0], b[1])
    return None if o is None else not o


def combine(parts: dict[str, bool | None]) -> str:
    """Parts of a claim -> outcome: all true supported, all false refuted,
    a mix (or true parts with untested ones) partly supported, none tested not tested."""
    known = [v for v in parts.values() if v is not None]
    if not known:
        return NOT_TESTED
    if all(known):
        return SUPPORTED if len(known) == len(parts) else PARTLY
    if not any(known):
        return REFUTED
    return PARTLY


# ---------------------------------------------------------------- formatting

def num(x: float, unit: str = "") -> str:
    """A number for prose: 3 significant figures, thousands separated from 1,000 up."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    s = f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return f"{s} {unit}".strip()


def slope_text(fit: dict | None, unit: str = "ns/fd") -> str:
    if not fit:
        return "no fit"
    ci = (f" [{num(fit['slope_lo'])}, {num(fit['slope_hi'])}]"
          if not math.isnan(fit["slope_lo"]) else " (no CI)")
    return f"{num(fit['slope'], unit)}{ci}, R² {fit['r2']:.3f}"


def change_text(change: float) -> str:
    """+25% for modest changes, ×45 past +900% (a percentage of a tiny start is unreadable)."""
    if change is None or math.isnan(change):
        return "n/a"
    return f"×{1 + change:,.0f}" if change > 9 else f"{change:+.0%}"


def shape_text(fit: dict | None) -> str:
    if not fit:
        return "no data"
    lin, flat = grows_linearly(fit), is_flat(fit["first"], fit["last"])
    words = ["linear" if lin else "not linear" if lin is not None else "no CI",
             "flat" if flat else f"{change_text(fit['change'])} from N={num(fit['x_min'])} to {num(fit['x_max'])}"]
    return ", ".join(words)


# ---------------------------------------------------------------- the run's evidence

class Evidence:
    """What the claims read from a run, computed once."""

    def __init__(self, run: Run):
        self.run = run
        self.points = an.classify(run.points)
        self.agg = an.aggregate(self.points) if not self.points.empty else pd.DataFrame()
        self.micro0 = an.micro_fits(run.micro, "0")
        self.micro1 = an.micro_fits(run.micro, "1")
        self.micro_all = an.micro_fits(run.micro, "all")
        self.scan = an.scan_fits(self.points)
        # open loop at a fixed rate: nothing saturates. Per wait-loop pass, the
        # server's CPU carries the per-call scan (C3); per message, whether a
        # mechanism degrades (C7). Per message alone hides the scan at large N:
        # longer calls batch more of the fixed rate's messages per call.
        self.scan_cpu = an.scan_fits(self.points, "server_cpu_us_per_msg", "scan-rate")
        self.scan_cpu_call = an.scan_fits(self.points, "server_cpu_us_per_wait", "scan-rate")
        self.probes = read_probes(run.path)
        self.syscalls_doc = read_task_json(run.path, "syscalls.json")
        self.memory_doc = read_task_json(run.path, "memory.json")
        self.set_aside = an.set_aside(self.points)

    def fdlimit(self, mechanism: str) -> pd.DataFrame:
        """fdlimit rows of one mechanism that may decide: usable, or refused outright."""
        df = an.experiment(self.points, "fdlimit")
        df = df[(df["mechanism"] == mechanism) & (df["usable"] | df["failed"])].copy()
        df["connections"] = pd.to_numeric(df["connections"], errors="coerce")
        for col in ("echoing", "rejected_fd_setsize"):
            df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else math.nan
        return df

    def why_absent(self, experiment: str, mechanisms: tuple[str, ...] = ()) -> str:
        """Why an experiment's points cannot decide: absent, or all set aside."""
        df = an.experiment(self.points, experiment)
        if mechanisms:
            df = df[df["mechanism"].isin(mechanisms)]
        who = f" for {'/'.join(mechanisms)}" if mechanisms else ""
        if df.empty:
            return f"the run has no {experiment} points{who}"
        flagged = int((df["saturated"] | df["noisy"]).sum())
        usable = int(df["usable"].sum())
        head = (f"only {usable} of {len(df)} {experiment} points{who} usable, too few"
                if usable else f"all {len(df)} {experiment} points{who} were set aside")
        return f"{head} ({flagged} saturated or noisy, {int(df['failed'].sum())} failed)"

    def agg_rows(self, experiment: str) -> pd.DataFrame:
        if self.agg.empty:
            return self.agg
        a = self.agg[(self.agg["experiment"] == experiment) & (self.agg["n"] > 0)]
        return a


def read_probes(run_dir: Path) -> dict:
    """probes.json (bench.tasks.probes) as {claim id: entry}; {} when absent or unreadable."""
    try:
        doc = json.loads((Path(run_dir) / "probes.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in (doc.get("probes") or {}).items() if isinstance(v, dict)}


def read_task_json(run_dir: Path, name: str) -> dict:
    """syscalls.json (bench.tasks.syscalls) or memory.json (bench.tasks.memory); {} when absent or unreadable."""
    try:
        doc = json.loads((Path(run_dir) / name).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def no_profile_reason(ev: "Evidence") -> str:
    """Why the run has no syscall profile: the task's recorded reason, or its absence."""
    doc = ev.syscalls_doc
    if doc.get("reason"):
        return f"the syscall profile was not taken: {doc['reason']}"
    if doc:
        return "the syscall profile recorded no point (see syscalls.json)"
    return "the run has no syscall profile (add a syscalls task to the profile)"


def _wait_bytes(ev: "Evidence") -> tuple[str, dict]:
    """C2 context from the syscall profile: bytes one wait call passes, per mechanism, at its largest N."""
    best: dict[str, dict] = {}
    for p in (ev.syscalls_doc.get("points") or {}).values():
        wb, mech = p.get("wait_bytes_per_call"), p.get("mechanism")
        if mech in ("select", "poll", "epoll") and wb and (
                mech not in best or p["connections"] > best[mech]["connections"]):
            best[mech] = {"connections": p["connections"], **wb}
    if not best:
        return "", {}
    parts = []
    for mech, b in best.items():
        what = (f"{b['nfds']} fds" if "nfds" in b
                else f"{num(b.get('events_per_wait'))} ready events")
        parts.append(f"{mech} {num(b['total'], 'B')} at {num(b['connections'])} connections ({what})")
    return ("bytes one wait call passes in and out (syscall profile; select: 6 sets of "
            "ceil(nfds/64) words, poll: 8 B in + 2 B out per fd, epoll_wait: 12 B per ready "
            "event): " + ", ".join(parts)), {f"{m}_wait_bytes": b["total"] for m, b in best.items()}


def _epoll_ctl(ev: "Evidence") -> tuple[list[str], dict]:
    """C7 context from the syscall profile: epoll_ctl per message and its share of calls and time."""
    sc = ev.run.syscalls
    if sc is None or sc.empty:
        return [], {}
    texts, values = [], {}
    tracer = ", ".join(sorted(set(sc["tracer"].astype(str))))
    for mech in ("epoll", "epoll-et", "epoll-toggle"):
        g = sc[sc["mechanism"] == mech]
        if g.empty:
            continue
        calls = pd.to_numeric(g["calls"], errors="coerce")
        secs = pd.to_numeric(g["seconds"], errors="coerce")
        ctl = g["syscall"] == "epoll_ctl"
        per_point = pd.to_numeric(g["calls_per_msg"], errors="coerce").where(ctl, 0).groupby(g["point_id"]).sum()
        per_msg = float(per_point.median())
        call_share = float(calls[ctl].sum() / calls.sum()) if calls.sum() else math.nan
        time_share = float(secs[ctl].sum() / secs.sum()) if secs.sum() else math.nan
        label = mech + (" (reference)" if mech == "epoll-toggle" else "")
        texts.append(f"{label}: {num(per_msg)} epoll_ctl per message, {call_share:.0%} of its system "
                     f"calls and {time_share:.0%} of their time ({tracer})")
        values.update({f"{mech}_epoll_ctl_per_msg": per_msg, f"{mech}_epoll_ctl_time_share": time_share})
    return texts, values


def _probe(ev: Evidence, cid: str) -> tuple[dict | None, str]:
    """(the probe's outcome, "") when it ran; (None, why not) otherwise."""
    entry = ev.probes.get(cid)
    if entry is None:
        return None, f"the {cid} probe is not in this run (probes.json)"
    if entry.get("status") != "tested" or not isinstance(entry.get("outcome"), dict):
        return None, f"the {cid} probe did not run: {entry.get('reason', entry.get('status', '?'))}"
    return entry["outcome"], ""


# ---------------------------------------------------------------- the claims

def _c1(ev: Evidence) -> Verdict:
    rule = (f"wall: select echoes between {FD_SETSIZE - WALL_SLACK} and {FD_SETSIZE} connections at most "
            "and falls short past that; "
            "the dup2 probe tells a limit on the descriptor's value from one on the count; "
            + RULE_SET_ASIDE)
    sel = ev.fdlimit("select")
    if sel.empty:
        return _untested("C1", ev.why_absent("fdlimit", ("select",)), "fdlimit", rule)
    attempted = float(sel["connections"].max())
    if attempted <= FD_SETSIZE:
        return _untested("C1", f"fdlimit went only to {num(attempted)} connections, not past "
                         f"{FD_SETSIZE} (descriptor limit too low?)", "fdlimit", rule)
    ok = sel[sel["usable"]]
    short = sel[sel["failed"] | (sel["usable"] & (sel["echoing"] < sel["connections"]))]
    most = float(ok["echoing"].max()) if ok["echoing"].notna().any() else 0.0
    at_max = ok[ok["connections"] == attempted]
    echo_at_max = float(at_max["echoing"].median()) if len(at_max) else math.nan
    others = []
    for m in ("poll", "epoll"):
        o = ev.fdlimit(m)
        o = o[o["usable"] & (o["connections"] > FD_SETSIZE)]
        if len(o):
            top = o[o["connections"] == o["connections"].max()]
            others.append(f"{m} echoed {num(top['echoing'].median())} of {num(top['connections'].max())}")
    probe, why_not = _probe(ev, "C1")
    value_limit = kernel_takes_it = None
    if probe:
        high, kern = probe["high_fd_select"], probe.get("kernel_select_high_fd") or {}
        value_limit = bool(high.get("exception")) and probe.get("low_fd_ready", True)
        kernel_takes_it = kern.get("returned") == 1 and bool(kern.get("fd_reported_ready"))
        probe_text = (f"select.select on one socket at fd {probe['high_fd']} with "
                      f"{probe['open_descriptors']} open: {high.get('exception') or 'accepted'}; "
                      f"the kernel's select(2) with nfds {kern.get('nfds', '?')}: "
                      + ("reported it ready" if kernel_takes_it else f"returned {kern.get('returned')}"))
    else:
        probe_text = why_not
    numbers = (f"select echoed at most {num(most)} connections; at {num(attempted)} attempted it echoed "
               f"{num(echo_at_max)}; " + ("; ".join(others) + "; " if others else "") + probe_text)
    values = {"select_max_echoing": most, "attempted": attempted,
              "value_limit": value_limit, "kernel_takes_high_fd": kernel_takes_it}
    if short.empty:
        return Verdict("C1", CLAIMS["C1"], REFUTED, numbers, rule, "fdlimit",
                       f"select served every connection up to {num(attempted)}: no wall at {FD_SETSIZE}.", values)
    if not FD_SETSIZE - WALL_SLACK <= most <= FD_SETSIZE:
        return _untested("C1", f"select fell short at {num(short['connections'].min())} connections, "
                         f"far from FD_SETSIZE: something else limited this run", "fdlimit", rule, numbers)
    if value_limit or kernel_takes_it:
        parts = []
        if value_limit:
            parts.append(f"it bounds the descriptor's value, not how many are watched: one socket at "
                         f"fd {probe['high_fd']} is refused with only {probe['open_descriptors']} open "
                         "(CPython checks fd < FD_SETSIZE for glibc's fixed-size fd_set)")
        if kernel_takes_it:
            parts.append("no recompile is needed: the kernel's select(2) takes a larger bitmap "
                         "(any nfds up to the descriptor table)")
        return Verdict("C1", CLAIMS["C1"], PARTLY, numbers, rule, "fdlimit",
                       f"The wall at {num(most)} connections is real, but " + "; and ".join(parts) + ".",
                       values)
    why = (f"{why_not}, so whether the bound is on the value or the count is not tested."
           if probe is None else "The probe's high descriptor was accepted, so the bound is on the count.")
    return Verdict("C1", CLAIMS["C1"], SUPPORTED, numbers, rule, "fdlimit",
                   f"select stops serving at {num(most)} connections while poll and epoll go on. {why}", values)


def _c2(ev: Evidence) -> Verdict:
    rule = (f"{RULE_LINEAR}; copy-dominated if poll's slope ≥ {COPY_STEEPER}× select's "
            "with the slope CIs apart (ours: poll copies ~13× the bytes per fd)")
    # CLAIMS.md: "nothing ready and timeout=0"; 1 ready is the nearest when a run has no 0
    ready, fits = ("0", ev.micro0) if an.fit_row(ev.micro0, "select") else ("1", ev.micro1)
    sel = an.fit_row(fits, "select")
    if not sel:
        return _untested("C2", "no micro wait-call data for select", "micro_wait_1_ready", rule)
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
    wb_text, wb_values = _wait_bytes(ev)          # context: the verdict stays with the slopes
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


def _c3(ev: Evidence) -> Verdict:
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
        return _untested("C3", "neither micro nor scan data for select or poll", "scan_wait", rule)
    figure = "micro_wait_1_ready" if any(k.startswith("micro") for k in parts) else "scan_wait"
    note = "" if any(k.startswith("scan") for k in parts) else f" Scan: {ev.why_absent('scan')}."
    no_ci = [k for k, v in parts.items() if v is None]   # one repetition: neither linear nor not
    if no_ci:
        note += f" No CI, so not tested: {', '.join(no_ci)}."
        parts = {k: v for k, v in parts.items() if v is not None}
        if not parts:
            return _untested("C3", "no fit of select or poll has a confidence interval", figure, rule,
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


def _c4(ev: Evidence) -> Verdict:
    rule = (f"poll must echo every connection past {FD_SETSIZE} (fdlimit), poll with more entries than "
            "RLIMIT_NOFILE must not fail (probe), and its wait cost must grow linearly (micro); "
            f"{RULE_LINEAR}")
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
    probe, why_not = _probe(ev, "C4")
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
        parts["cost grows with the whole array"] = grows_linearly(f)
        texts.append(f"micro poll {slope_text(f)}")
        values["poll_slope_ns"] = f["slope"]
        sel = an.fit_row(ev.micro1, "select")
        same = sel and an.fit_row(an.micro_fits(ev.run.micro, "1", max_registered=sel["x_max"]), "poll")
        if same and sel["slope"]:
            texts.append(f"poll/select slope ratio over N ≤ {num(sel['x_max'])}: "
                         f"{same['slope'] / sel['slope']:.2f}")
    outcome = combine(parts)
    if outcome == NOT_TESTED:
        return _untested("C4", f"no poll points past {FD_SETSIZE}, no C4 probe and no poll micro data",
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


def _c5(ev: Evidence) -> Verdict:
    rule = ("probe: two writes without a read; 'only once' means edge-triggered reports 1 of the "
            "2 writes, not both (EPOLLONESHOT shown alongside)")
    probe, why_not = _probe(ev, "C5")
    servers = []
    for exp in ("scan", "activity"):
        a = ev.agg_rows(exp)
        for mech in ("epoll", "epoll-et"):
            g = a[a["mechanism"] == mech] if not a.empty else a
            if len(g) and "events_per_call" in g:
                servers.append(f"{exp} {mech}: median {num(g['events_per_call'].median())} events/wait, "
                               f"{num(g['wait_calls_per_msg'].median())} waits/msg")
    if probe is None:
        if servers:
            why_not += "; the servers' counts show both modes run but cannot tell 'only once'"
        return _untested("C5", why_not, "events_per_call", rule, "; ".join(servers))
    modes = probe["modes"]
    edge, oneshot, level = modes["edge"], modes.get("oneshot"), modes.get("level")
    et = edge["writes_with_an_event"]
    numbers = (f"two writes, no read: edge-triggered reported {et} of 2 writes "
               f"({edge['events_total']} events); "
               + (f"EPOLLONESHOT {oneshot['writes_with_an_event']} of 2; " if oneshot else "")
               + (f"level-triggered {level['events_total']} events" if level else "")
               + ("; " + "; ".join(servers) if servers else ""))
    values = {"et_writes_reported": et, "oneshot_writes_reported": oneshot and oneshot["writes_with_an_event"]}
    if et <= 1:
        return Verdict("C5", CLAIMS["C5"], SUPPORTED, numbers, rule, "events_per_call",
                       "Both modes exist and edge-triggered reported the socket once for two writes.", values)
    once = (" Only EPOLLONESHOT reports once (until re-armed)."
            if oneshot and oneshot["writes_with_an_event"] <= 1 else "")
    return Verdict("C5", CLAIMS["C5"], PARTLY, numbers, rule, "events_per_call",
                   "Both modes exist, but edge-triggered reports each new arrival of data, as epoll(7) "
                   "says, not a descriptor once." + once, values)


def _c6(ev: Evidence) -> Verdict:
    rule = (f"refuted when the maps probe shows no mapping tied to eventpoll (and mmap on the epoll fd "
            f"fails) or the syscall profile shows "
            f"< {LOOP_MMAP_PER_MSG} mmap per message for epoll; supported when either shows one")
    against, for_, texts, values = [], [], [], {}
    probe, why_not = _probe(ev, "C6")
    if probe:
        mapped = bool(probe.get("eventpoll_mappings_after")) or \
            (probe.get("mmap_epoll_fd") or {}).get("result") == "ok"
        paths = sorted({m.get("path") or "anonymous" for m in probe.get("new_mappings") or []})
        texts.append(f"/proc/self/maps after an epoll set with {probe.get('registered', '?')} fds: "
                     f"{probe.get('new_mapping_count', 0)} new mapping(s) ({', '.join(paths) or 'none'}), "
                     f"{len(probe.get('eventpoll_mappings_after') or [])} mentioning eventpoll; "
                     f"mmap on the epoll fd: {(probe.get('mmap_epoll_fd') or {}).get('errno') or 'ok'}")
        (for_ if mapped else against).append("maps probe")
        values["eventpoll_mapped"] = mapped
    sc = ev.run.syscalls
    if sc is not None and not sc.empty:
        ep = sc[sc["mechanism"].isin(["epoll", "epoll-et"])]
        if len(ep):
            maps = ep[ep["syscall"].isin(["mmap", "munmap"])]
            per = pd.to_numeric(maps["calls_per_msg"], errors="coerce").groupby(maps["point_id"]).sum()
            mm = float(per.max()) if len(per) and per.notna().any() else 0.0
            texts.append(f"epoll servers: {num(mm)} mmap + munmap calls per message "
                         f"(syscall profile, {', '.join(sorted(set(ep['tracer'].astype(str))))})")
            (for_ if mm >= LOOP_MMAP_PER_MSG else against).append("syscall profile")
            values["mmap_per_msg"] = mm
    f = an.fit_row(ev.micro_all, "epoll")
    if f:
        texts.append(f"epoll_wait with all ready: {slope_text(f, 'ns per ready fd')} "
                     "(each ready event is copied out)")
        values["per_ready_ns"] = f["slope"]
    if not (against or for_):
        return _untested("C6", f"{why_not}, and {no_profile_reason(ev)}",
                         "micro_wait_all_ready", rule, "; ".join(texts))
    figure = "syscalls" if "syscall profile" in against + for_ else "micro_wait_all_ready"
    if for_ and not against:
        return Verdict("C6", CLAIMS["C6"], SUPPORTED, "; ".join(texts), rule, figure,
                       f"Shared mapping seen by: {', '.join(for_)}.", values)
    if for_:
        return Verdict("C6", CLAIMS["C6"], PARTLY, "; ".join(texts), rule, figure,
                       f"Evidence splits: mmap seen by {', '.join(for_)}, absent in {', '.join(against)}.", values)
    return Verdict("C6", CLAIMS["C6"], REFUTED, "; ".join(texts), rule, figure,
                   "epoll maps nothing into the process: the set is an anonymous-inode file and "
                   "epoll_wait copies the ready events into the caller's buffer (fs/eventpoll.c has no mmap).",
                   values)


def _c7(ev: Evidence) -> Verdict:
    rule = (f"idle part: epoll's wait cost is flat (within {FLAT_WITHIN:.0%}) in micro (1 ready) and in scan, "
            "and its CPU per message in scan-rate; "
            "busy part: with every registered descriptor ready on each call (micro, all ready, the "
            "largest N ≤ 1024 all three share), epoll's wait cost lies above the best of select/poll "
            "with their p10–p90 ranges apart; the activity experiment (fixed total rate) is shown "
            f"but does not decide, since it never makes most descriptors ready at once; {RULE_COMPARE}")
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
    a = ev.agg_rows("activity")
    busy = None
    if not a.empty and "server_cpu_us_per_msg" in a:
        top = a["active_ratio"].max()
        if top >= NEARLY_ALL_ACTIVE:
            at = a[a["active_ratio"] == top].set_index("mechanism")
            col = "server_cpu_us_per_msg"
            base = [m for m in ("select", "poll") if m in at.index]
            if "epoll" in at.index and base:
                best = min(base, key=lambda m: at.loc[m, col])
                worse, compared = [], []
                for m in ("epoll", "epoll-toggle"):
                    if m in at.index:
                        d = differs((at.loc[m, f"{col}_lo"], at.loc[m, f"{col}_hi"]),
                                    (at.loc[best, f"{col}_lo"], at.loc[best, f"{col}_hi"]))
                        compared.append(d)
                        if d and at.loc[m, col] > at.loc[best, col]:
                            worse.append(m)
                        label = m + (" (reference)" if m == "epoll-toggle" else "")
                        texts.append(f"at {top:.0%} active: {label} {num(at.loc[m, col], 'µs/msg')} "
                                     f"[{num(at.loc[m, f'{col}_lo'])}, {num(at.loc[m, f'{col}_hi'])}] vs "
                                     f"{best} {num(at.loc[best, col], 'µs/msg')} "
                                     f"[{num(at.loc[best, f'{col}_lo'])}, {num(at.loc[best, f'{col}_hi'])}]")
                # no CI (one repetition) cannot show a difference, nor its absence
                busy = True if worse else None if all(d is None for d in compared) else False
                values.update(ratio=float(top), worse=worse,
                              epoll_cpu=float(at.loc["epoll", col]), best_cpu=float(at.loc[best, col]))
    if busy is not None:
        values["activity_worse"] = busy           # server-level context, not the deciding part
    busy, micro_texts, micro_values = _all_ready_busy(ev)
    texts += micro_texts
    values.update(micro_values)
    parts["worse when nearly all active"] = busy
    ctl_texts, ctl_values = _epoll_ctl(ev)        # the cost Gammo et al. found: context, not a part
    texts += ctl_texts
    values.update(ctl_values)
    if "activity_worse" not in values and not a.empty:
        texts.append("activity: no CI at the highest ratio (one repetition)" if "worse" in values else
                     f"activity: highest active ratio {a['active_ratio'].max():.2f} < {NEARLY_ALL_ACTIVE}, "
                     "or epoll/select/poll missing there")
    outcome = combine(parts)
    if outcome == NOT_TESTED:
        return _untested("C7", "no epoll micro data and no scan data", "micro_wait_all_ready", rule)
    reason = "; ".join(f"{k}: {'yes' if v else 'no' if v is False else 'not tested'}" for k, v in parts.items())
    if busy:
        reason += (f" (with all {num(values['all_ready_n'])} ready, epoll's wait costs "
                   f"{values['all_ready_ratio']:.2f}× {values['all_ready_best']}'s)")
    if "activity_worse" in values:
        reason += (". At the server level, the activity experiment (fixed total rate) never had most "
                   "descriptors ready at once, and there epoll was "
                   + ("worse" if values["activity_worse"] else "not worse"))
    figure = "micro_wait_all_ready" if busy is not None else "micro_wait_1_ready"
    return Verdict("C7", CLAIMS["C7"], outcome, "; ".join(texts), rule, figure, reason + ".", values)


def _all_ready_busy(ev: Evidence) -> tuple[bool | None, list[str], dict]:
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
            f"{num(b['ns_median'] / 1000, 'µs')} [p10 {num(b['ns_p10'] / 1000)}, p90 {num(b['ns_p90'] / 1000)}]")
    return worse, [text], {"all_ready_n": float(n), "all_ready_best": best,
                           "all_ready_ratio": float(e["ns_median"] / b["ns_median"])}


def _c8(ev: Evidence) -> Verdict:
    rule = (f"connections per GiB from measured memory per epoll connection (kernel + RSS) within "
            f"{ABOUT_FACTOR:g}× of {CLAIMED_CONNS_PER_GB:,}: supported; otherwise partly supported when a "
            "kernel limit's default implies about that number, else refuted")
    mem, doc = ev.run.memory, ev.memory_doc
    if mem is None or mem.empty:
        why = (f"the memory task recorded no row: {doc.get('reason') or 'see memory.json'}" if doc
               else "no memory.csv in this run (add a memory task to the profile)")
        return _untested("C8", why, "memory", rule)
    m = mem[mem["mechanism"].isin(["epoll", "epoll-et"])].copy()
    for c in ("connections", "per_conn_kernel_bytes", "per_conn_rss_bytes", "slab_bytes"):
        m[c] = pd.to_numeric(m[c], errors="coerce")
    m = m[m["per_conn_kernel_bytes"].notna()]
    if m.empty:
        return _untested("C8", "memory.csv has no kernel bytes for epoll: "
                         + (doc.get("reason") or "no permission to read /proc/slabinfo?"), "memory", rule)
    top = m[m["connections"] == m["connections"].max()]
    per_conn = float((top["per_conn_kernel_bytes"] + top["per_conn_rss_bytes"].fillna(0)).median())
    per_gb = GB / per_conn
    ratio = per_gb / CLAIMED_CONNS_PER_GB
    texts = [f"{num(per_conn, 'B')} per connection at {num(top['connections'].max())} connections "
             f"(kernel {num(top['per_conn_kernel_bytes'].median(), 'B')}) → {num(per_gb)} connections per GiB"]
    if top["slab_bytes"].notna().any():
        texts.append(f"every slab cache (meminfo Slab; moves with the whole machine's file activity): "
                     f"{num((top['slab_bytes'] / top['connections']).median(), 'B')} per connection")
    lim = doc.get("limits") or {}
    implied = {**{k: float(v) for k, v in (lim.get("per_gib") or {}).items()
                  if k in ("fs.file-max", "fs.epoll.max_user_watches")},
               **_limits_per_gb(ev.run.meta)}
    texts += [f"{k} implies {num(v)} per GiB" for k, v in implied.items()]
    caps = {k: v for k, v in (lim.get("values") or {}).items()
            if k in ("fs.nr_open", "RLIMIT_NOFILE") and v}
    if caps:                                      # fixed counts, not scaled by memory: context
        texts.append("per process at most " + ", ".join(f"{num(v)} ({k})" for k, v in caps.items()))
    probe, _ = _probe(ev, "C8")
    cap = doc.get("capacity_probe") or {}
    if probe and probe.get("errno"):
        texts.append(f"capacity probe stopped by {probe['errno']}")
    elif cap.get("errno"):
        texts.append(f"capacity probe stopped by {cap['errno']} at {num(cap.get('connections'))}")
    elif doc.get("first_limits"):
        first = doc["first_limits"][0]
        texts.append(f"first limit a server here meets (predicted, not probed): {first['limit']} "
                     f"at {num(first['connections'])} connections ({first['errno']})")
    values = {"bytes_per_conn": per_conn, "conns_per_gb": per_gb, **{f"limit {k}": v for k, v in implied.items()}}
    about = lambda x: 1 / ABOUT_FACTOR <= x / CLAIMED_CONNS_PER_GB <= ABOUT_FACTOR
    if about(per_gb):
        return Verdict("C8", CLAIMS["C8"], SUPPORTED, "; ".join(texts), rule, "memory",
                       f"Memory allows {num(per_gb)} connections per GiB, about the claimed 100k.", values)
    near = [k for k, v in implied.items() if about(v)]
    side = "more" if ratio > 1 else "fewer"
    if near:
        return Verdict("C8", CLAIMS["C8"], PARTLY, "; ".join(texts), rule, "memory",
                       f"Memory allows {ratio:.1f}× the claim ({side}); the 100k/GB figure matches "
                       f"the budget of {', '.join(near)}, not the memory a connection costs.", values)
    return Verdict("C8", CLAIMS["C8"], REFUTED, "; ".join(texts), rule, "memory",
                   f"Memory allows {ratio:.1f}× the claimed connections per GB ({side}).", values)


def _limits_per_gb(meta: dict) -> dict[str, float]:
    """Connections per GiB implied by the kernel limits in meta.json (bench.rundir.meta):
    fs.file-max and fs.epoll.max_user_watches over memory.mem_total_bytes."""
    mem = (meta.get("memory") or {}).get("mem_total_bytes")
    limits = meta.get("limits") or {}
    out = {}
    for name in ("fs.file-max", "fs.epoll.max_user_watches"):
        try:
            out[name] = float(limits[name]) / (float(mem) / GB)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
    return out


def _untested(cid: str, reason: str, figure: str, rule: str, numbers: str = "") -> Verdict:
    return Verdict(cid, CLAIMS[cid], NOT_TESTED, numbers or "no data", rule, figure, reason + ".")


RULES = {"C1": _c1, "C2": _c2, "C3": _c3, "C4": _c4, "C5": _c5, "C6": _c6, "C7": _c7, "C8": _c8}


def verdicts(run: Run | str | Path) -> list[Verdict]:
    """A verdict for each claim C1-C8, computed from the run's data only."""
    if not isinstance(run, Run):
        run = load_run(run)
    ev = Evidence(run)
    return [rule(ev) for rule in RULES.values()]


def verdicts_table(vs: list[Verdict]) -> pd.DataFrame:
    """The verdicts as a DataFrame (id, verdict, numbers, figure, reason, rule, claim)."""
    return pd.DataFrame([{"id": v.id, "verdict": v.verdict, "numbers": v.numbers, "figure": v.figure,
                          "reason": v.reason, "rule": v.rule, "claim": v.claim} for v in vs])
