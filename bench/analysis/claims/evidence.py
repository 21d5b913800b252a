"""What the claims read from a run, computed once, and the readers they share."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.analysis import ready
from bench.analysis import stats as an
from bench.analysis.claims.text import num
from bench.rundir.store import Run

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
        self.ready = ready.curves(self.agg)                 # K > 0, per mechanism and N
        self.ready_control = ready.control(self.agg)        # K = 0: stop/continue alone

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

    def losses(self, experiment: str, cpu: bool = False, mechanisms: tuple[str, ...] = ()) -> str:
        """Which mechanism lost how many rows of an experiment, in words ("" when none).

        Always the rows set aside because the load generator saturated (a mechanism
        with none left is named as removed); with cpu, also the usable rows whose
        server was at >= 90% of its core, which no CPU measure uses.
        """
        parts = []
        for mech, (lost, total, gone) in an.saturation_losses(self.points, experiment).items():
            if not mechanisms or mech in mechanisms:
                parts.append(f"{mech} {'removed: all ' if gone else ''}{lost} of {total} rows set aside "
                             "(load generator saturated)")
        if cpu:
            df = an.experiment(self.points, experiment)
            hot = df[df["usable"] & df["server_saturated"]]
            for mech, g in hot.groupby("mechanism", sort=True):
                if not mechanisms or mech in mechanisms:
                    at = ", ".join(num(n) for n in sorted(pd.to_numeric(g["connections"]).unique()))
                    parts.append(f"{mech} {len(g)} rows with the server saturated (N = {at}), not used "
                                 "for CPU")
        return f"{experiment}: " + "; ".join(parts) if parts else ""

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


def wait_bytes(ev: "Evidence") -> tuple[str, dict]:
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


def epoll_ctl_share(ev: "Evidence") -> tuple[list[str], dict]:
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


def probe_outcome(ev: Evidence, cid: str) -> tuple[dict | None, str]:
    """(the probe's outcome, "") when it ran; (None, why not) otherwise."""
    entry = ev.probes.get(cid)
    if entry is None:
        return None, f"the {cid} probe is not in this run (probes.json)"
    if entry.get("status") != "tested" or not isinstance(entry.get("outcome"), dict):
        return None, f"the {cid} probe did not run: {entry.get('reason', entry.get('status', '?'))}"
    return entry["outcome"], ""
