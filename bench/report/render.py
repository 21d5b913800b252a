"""python -m bench report RUN_DIR: plots/, report.md and a self-contained report.html.

Order of the report: the claims table (verdict, deciding numbers, rule,
figure), what was set aside, then each figure with a two-sentence reading
computed from the data, then the machine and software, then the flagged
points. Both documents are rendered from the same list of blocks, so the
Markdown and the HTML never disagree.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from bench.analysis import stats as an
from bench.analysis import claims
from bench.analysis import goals
from bench.report import plots
from bench.analysis.claims import num
from bench.rundir.store import Run, load_run

METHODS = (
    "Medians are over repetitions; their CI is the exact order-statistic interval "
    "(coverage shown in each figure's legend: below 6 repetitions it is [min, max], 75% for 3). "
    "Slopes are ordinary least squares with a Student-t 95% CI. "
    "Saturated, noisy and failed points are drawn hollow (or not at all) and never enter a "
    "median, a fit or a verdict."
)

TITLES = {
    "micro_wait_1_ready": "Wait-call cost vs registered descriptors, 1 ready (micro)",
    "micro_wait_all_ready": "Wait-call cost vs registered descriptors, all ready (micro)",
    "scan_wait": "Servers' own wall time per wait call (sleep included) vs total connections (scan)",
    "scan_throughput": "Throughput vs total connections, few active (scan)",
    "scan_latency": "p50 and p99 latency vs total connections (scan)",
    "scan_cpu": "Server CPU per message, user and system (scan)",
    "activity_throughput": "Throughput vs active ratio (activity)",
    "activity_cpu": "Server CPU per message vs active ratio (activity)",
    "events_per_call": "Events per wait call vs active ratio (activity)",
    "fdlimit": "The FD_SETSIZE wall: connections echoing vs attempted (fdlimit)",
    "msgsize": "Message size effect (msgsize)",
    "syscalls": "System calls per message (syscall profile)",
    "memory": "Memory per connection (memory)",
}


# ---------------------------------------------------------------- readings

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
    """At the largest x: the two ends, and whether their difference counts by the CI rule."""
    at = a[a[x] == a[x].max()].dropna(subset=[y])
    if len(at) < 2:
        return f"Only one mechanism reached {xname}={num(a[x].max()) if len(a) else 'n/a'}."
    at = at.sort_values(y, ascending=higher_is_better is False)
    top, bottom = at.iloc[0], at.iloc[-1]
    apart = claims.differs((top[f"{y}_lo"], top[f"{y}_hi"]), (bottom[f"{y}_lo"], bottom[f"{y}_hi"]))
    rule = {True: "their CIs do not overlap, so the difference counts",
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
    if a.empty or a.groupby("mechanism")[x].nunique().max() < 2:
        return ""                          # too few points for a line: readings() says so
    return _changes(a, x, y, xname, unit, what) + " " + _ranking(a, x, y, xname, unit, higher_is_better)


def _fits_reading(fits: pd.DataFrame, unit: str, where: str) -> str:
    fits = fits[fits["slope"].notna()] if fits is not None and not fits.empty else fits
    if fits is None or fits.empty:
        return ""
    lin = [f"{plots.label(r.mechanism)} {num(r.slope)} {unit} (R² {r.r2:.2f})"
           for r in fits.itertuples() if claims.grows_linearly(r._asdict())]
    flat = [f"{plots.label(r.mechanism)} ({r.change:+.0%})" for r in fits.itertuples()
            if claims.is_flat(r.first, r.last)]
    first = (f"{where}, the cost grows linearly for " + ", ".join(lin) + "." if lin
             else f"{where}, no mechanism's cost grows linearly by the rule.")
    second = (f"It is flat (within {claims.FLAT_WITHIN:.0%} from smallest to largest N) for "
              + ", ".join(flat) + "." if flat else "No mechanism's cost stays flat.")
    return f"{first} {second}"


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
    for c in ("connections", "per_conn_kernel_bytes", "per_conn_rss_bytes"):
        mem[c] = pd.to_numeric(mem[c], errors="coerce")
    parts = []
    for mech in plots.mechanisms_in(mem):
        g = mem[mem["mechanism"] == mech]
        top = g[g["connections"] == g["connections"].max()]
        per = (top["per_conn_kernel_bytes"] + top["per_conn_rss_bytes"].fillna(0)).median()
        parts.append(f"{plots.label(mech)} {num(per, 'B')} ({num(claims.GB / per)} per GiB)")
    text = ("Memory per connection at the largest N, kernel plus process: " + "; ".join(parts) + ". "
            f"The claim's figure is {claims.CLAIMED_CONNS_PER_GB:,} per GB.")
    doc = doc or {}
    ctl = [c for c in doc.get("control") or [] if c.get("per_conn_kernel_bytes")]
    if ctl:
        c = max(ctl, key=lambda c: c["connections"])
        text += (f" A bare TCP socket with no multiplexer (control, one side of the loopback pair) "
                 f"costs {num(c['per_conn_kernel_bytes'], 'B')} in these caches at {num(c['connections'])} "
                 "connections; what a mechanism adds over it is its own.")
    per_gib = (doc.get("limits") or {}).get("per_gib") or {}
    if per_gib:
        text += " Connections per GiB each limit implies: " + ", ".join(
            f"{k} {num(v)}" for k, v in per_gib.items()) + "."
    if doc.get("first_limits"):
        text += (" The limits as connections one epoll server holds, smallest first (predicted): "
                 + ", ".join(f"{f['limit']} {num(f['connections'])} ({f['errno']})"
                             for f in doc["first_limits"]) + ".")
    if doc.get("reason"):
        text += f" Kernel caches: {doc['reason']}."
    return text


FIGURE_EXPERIMENT = {"scan_wait": "scan", "scan_throughput": "scan", "scan_latency": "scan",
                     "scan_cpu": "scan", "activity_throughput": "activity", "activity_cpu": "activity",
                     "events_per_call": "activity", "fdlimit": "fdlimit", "msgsize": "msgsize"}


def _nothing_usable(points: pd.DataFrame, experiment: str) -> str:
    rows = an.experiment(points, experiment)
    aside = int((rows["saturated"] | rows["noisy"]).sum())
    return (f"Only {int(rows['usable'].sum())} of the {len(rows)} {experiment} point rows are usable "
            f"({aside} saturated or noisy, drawn hollow; {int(rows['failed'].sum())} failed), too few "
            "for a line or a fit. Rerun on a quieter machine or with more repetitions for a reading.")


def readings(run: Run, points: pd.DataFrame) -> dict[str, str]:
    """figure name -> two sentences read off the run's data."""
    text = _readings(run, points)
    for name, experiment in FIGURE_EXPERIMENT.items():
        if not text.get(name):
            text[name] = _nothing_usable(points, experiment)
    return text


def _readings(run: Run, points: pd.DataFrame) -> dict[str, str]:
    micro1, micro_all = an.micro_fits(run.micro, "1"), an.micro_fits(run.micro, "all")
    pr = lambda *a: _points_reading(points, *a)
    return {
        "micro_wait_1_ready": _fits_reading(micro1, "ns per registered descriptor", "With 1 descriptor ready"),
        "micro_wait_all_ready": _fits_reading(micro_all, "ns per ready descriptor", "With every descriptor ready"),
        "scan_wait": _fits_reading(an.scan_fits(points), "ns per connection",
                                   "In the servers' own wait-call time (scan)"),
        "scan_throughput": pr("scan", "connections", "throughput_msgs_s", "N", "msg/s", "throughput", True),
        "scan_latency": pr("scan", "connections", "p99_us", "N", "µs", "p99 latency", False),
        "scan_cpu": pr("scan", "connections", "server_cpu_sys_us_per_msg", "N", "µs",
                       "system CPU per message", False),
        "activity_throughput": pr("activity", "active_ratio", "throughput_msgs_s", "active ratio", "msg/s",
                                  "throughput", True),
        "activity_cpu": pr("activity", "active_ratio", "server_cpu_us_per_msg", "active ratio", "µs",
                           "server CPU per message", False),
        "events_per_call": pr("activity", "active_ratio", "events_per_call", "active ratio", "events",
                              "events per wait call", None),
        "fdlimit": _fdlimit_reading(points),
        "msgsize": pr("msgsize", "msg_size", "throughput_msgs_s", "size", "msg/s", "throughput", True),
        "syscalls": _syscalls_reading(run.syscalls, claims.read_task_json(run.path, "syscalls.json")),
        "memory": _memory_reading(run.memory, claims.read_task_json(run.path, "memory.json")),
    }


# ---------------------------------------------------------------- blocks

def _refused_note(points: pd.DataFrame) -> str:
    """How many 'failed' rows were refused by design (select past FD_SETSIZE), never run."""
    refused = int(an._text(points["error"]).str.startswith("refused").sum()) if "error" in points else 0
    return f" ({refused} of them refused by design, e.g. select past FD_SETSIZE: never run)" \
        if refused else ""


def _flag_table(points: pd.DataFrame, flag: str) -> pd.DataFrame:
    rows = points[points[flag]]
    cols = [c for c in ("point_id", "experiment", "mechanism", "connections", "rep",
                        "loadgen_cpu_max", "noise_cpu_pct", "error") if c in rows]
    return rows[cols]


def build(run: Run) -> list[tuple]:
    """The report as blocks: ("h", level, text) | ("p", text) | ("table", DataFrame)
    | ("figure", name, title, reading)."""
    points = an.classify(run.points)
    vs = claims.verdicts(run)
    names = plots.save_all(run, run.path / "plots")
    aside = an.set_aside(points)
    meta = run.meta
    blocks: list[tuple] = [
        ("h", 1, f"iomux-bench report: {run.path.name}"),
        ("p", f"Run state: {meta.get('state', 'unknown')}; started {meta.get('started_at', '?')}, "
              f"ended {meta.get('ended_at', '?')}; {len(points)} point rows, {len(run.micro)} micro rows."),
        ("h", 2, "Claims"),
        ("table", pd.DataFrame([{"claim": f"{v.id}: {v.claim}", "verdict": v.verdict,
                                 "deciding numbers": v.numbers, "why": v.reason, "rule": v.rule,
                                 "figure": v.figure if v.figure in names else f"{v.figure} (no data)"}
                                for v in vs])),
        ("p", f"Set aside and never used in a verdict: {aside['saturated']} saturated, "
              f"{aside['noisy']} noisy and {aside['failed']} failed point rows"
              f"{_refused_note(points)}. {METHODS}"),
        ("h", 2, "Speed goals (measured in this run)"),
        ("table", goals.speed_goals(run.points, meta)),
    ]
    refs = goals.reference_ratios(run.points)
    if not refs.empty:
        blocks += [("h", 2, "The servers next to the references"),
                   ("p", "Every server at one open-loop load (experiment `references`: 100 active "
                         "connections, 64 B) that saturates neither side; medians over repetitions. "
                         "`epoll ÷ this` below 1 means the epoll server costs less per message."),
                   ("table", refs)]
    blocks.append(("h", 2, "Figures"))
    text = readings(run, points)
    for name in names:
        blocks.append(("figure", name, TITLES.get(name, name), text.get(name) or ""))
    missing = [n for n in plots.FIGURES if n not in names]
    if missing:
        blocks.append(("p", "Not in this run (no data): " + ", ".join(missing) + "."))
    blocks.append(("h", 2, "Machine and software"))
    blocks.append(("table", _meta_table(meta)))
    blocks.append(("h", 2, "Flags"))
    for flag, title in (("saturated", "Saturated points (load generator CPU-bound)"),
                        ("noisy", "Noisy points (machine busy during the window)"),
                        ("failed", "Failed or refused points (no measures)")):
        t = _flag_table(points, flag)
        blocks.append(("h", 3, f"{title}: {len(t)}"))
        if len(t):
            blocks.append(("table", t))
    return blocks


def _meta_table(meta: dict) -> pd.DataFrame:
    """meta.json (bench.rundir.meta) as field/value rows a reader can scan."""
    def d(key):
        v = meta.get(key)
        return v if isinstance(v, dict) else {}

    def kv(items):
        return ", ".join(f"{k} {_short(v)}" for k, v in items)

    kernel, cpu, py, git = d("kernel"), d("cpu"), d("python"), d("git")
    rows = [
        ("kernel", f"{kernel.get('release', meta.get('kernel'))} ({kernel.get('machine', '?')}) "
                   f"{kernel.get('version', '')}".strip()),
        ("CPU", f"{cpu.get('model', '?')} × {cpu.get('count', '?')}; affinity {cpu.get('affinity', '?')}; "
                f"governors {kv(sorted((cpu.get('governors') or {}).items())) or 'not exposed'}"),
        ("memory", f"{d('memory').get('mem_total_bytes', 0) / 2 ** 30:.1f} GiB"
         if d("memory").get("mem_total_bytes") else "unknown"),
        ("Python", f"{py.get('version', meta.get('python'))} ({py.get('implementation', '?')})"),
        ("git", f"{git.get('rev')}{' (dirty)' if git.get('dirty') else ''}"),
        ("packages", kv(sorted((meta.get("packages") or {}).items()))),
    ]
    for k, v in sorted(d("limits").items()):
        if k == "rlimit_nofile" and isinstance(v, dict):
            rows += [(f"RLIMIT_NOFILE ({role})", _short(lim)) for role, lim in sorted(v.items())]
        else:
            rows.append((k, _short(v)))
    prof = d("profile")
    rows.append(("profile", f"{prof.get('name', meta.get('profile'))}, seed {prof.get('seed', '?')}"))
    if d("pinning"):
        rows.append(("pinning", kv(sorted(d("pinning").items()))))
    if isinstance(meta.get("runs"), list):
        runs = meta["runs"]
        rows.append(("invocations", f"{len(runs)} (first + resumes), "
                     f"{sum(r.get('elapsed_s') or 0 for r in runs):.0f} s in all"))
    if d("points"):
        rows.append(("points", kv(d("points").items())))
    if d("tasks"):
        rows.append(("tasks", kv((k, (v or {}).get("state")) for k, v in d("tasks").items())))
    shown = {"format", "state", "started_at", "ended_at", "kernel", "cpu", "memory", "python", "git",
             "packages", "limits", "profile", "pinning", "runs", "points", "tasks"}
    rows += [(k, _short(v)) for k, v in sorted(meta.items()) if k not in shown]
    return pd.DataFrame(rows, columns=["field", "value"])


def _short(v, limit: int = 160) -> str:
    text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------- rendering

def _md_cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_md(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            df = b[1]
            out.append("| " + " | ".join(df.columns) + " |")
            out.append("|" + "---|" * len(df.columns))
            out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
        elif b[0] == "figure":
            _, name, title, reading = b
            out.append(f"### {title}\n\n![{name}](plots/{name}.svg)\n\n{reading}")
        out.append("")
    return "\n".join(out)


CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.v-supported { background: #e3f4e1; } td.v-refuted { background: #f9dfdc; }
td.v-partly-supported { background: #fdf3d6; } td.v-not-tested { background: #eee; }
figure { margin: 2em 0; } figure img { width: 100%; max-width: 56em; } figcaption { max-width: 56em; }
"""


def render_html(blocks: list[tuple], plots_dir: Path) -> str:
    """HTML with every figure embedded as a base64 SVG data URI (no external files)."""
    e = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">']
    title = next((b[2] for b in blocks if b[0] == "h" and b[1] == 1), "iomux-bench report")
    out += [f"<title>{e(title)}</title>", f"<style>{CSS}</style>", "</head><body>"]
    for b in blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "table":
            df = b[1]
            is_claims = "verdict" in df.columns
            table_id = ' id="claims"' if is_claims else ""
            out.append(f"<table{table_id}><thead><tr>"
                       + "".join(f"<th>{e(str(c))}</th>" for c in df.columns) + "</tr></thead><tbody>")
            for row in df.itertuples(index=False):
                cells = []
                for col, v in zip(df.columns, row):
                    cls = f' class="v-{str(v).replace(" ", "-")}"' if col == "verdict" else ""
                    if col == "figure" and is_claims and not str(v).endswith("(no data)"):
                        v_html = f'<a href="#fig-{e(str(v))}">{e(str(v))}</a>'
                    else:
                        v_html = e(_md_cell(v))
                    cells.append(f"<td{cls}>{v_html}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
        elif b[0] == "figure":
            _, name, title, reading = b
            svg = base64.b64encode((plots_dir / f"{name}.svg").read_bytes()).decode("ascii")
            out.append(f'<figure id="fig-{e(name)}"><h3>{e(title)}</h3>'
                       f'<img alt="{e(name)}" src="data:image/svg+xml;base64,{svg}">'
                       f"<figcaption>{e(reading)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: Path | str) -> Path:
    """Write plots/, report.md and report.html into the run directory; return report.html's path."""
    run = load_run(run_dir)
    blocks = build(run)
    (run.path / "report.md").write_text(render_md(blocks))
    out = run.path / "report.html"
    out.write_text(render_html(blocks, run.path / "plots"))
    return out
