"""python -m bench report RUN_DIR: plots/, report.md and a self-contained report.html.

Order of the report: a summary that fits a laptop's first screen (one line
per claim: the claim in a few words, the verdict, the one number that
decides it, a thumbnail of its figure linking to the full one), the claims
table (verdict, deciding numbers, rule, figure), what was set aside, then each figure with a two-sentence reading
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
from bench.analysis import goals, uring
from bench.analysis.claims.text import headline
from bench.report import plots, readings
from bench.rundir.store import Run, load_run

METHODS = (
    "Medians are over repetitions; their CI is the exact order-statistic interval "
    "(coverage shown in each figure's legend: below 6 repetitions it is [min, max], 75% for 3). "
    "Two such intervals that do not overlap count as a difference; each comparison states how often "
    "that happens with no real difference for the repetitions it had (10% for 3 against 3, 0.8% for "
    "5 against 5). Slopes are ordinary least squares with a Student-t 95% CI; a cost's shape is its "
    "growth exponent with a profile-likelihood 95% CI and a two-segment fit for knees. "
    "Points measured with the load generator saturated, noisy and failed points are drawn hollow (or "
    "not at all) and never enter a median, a fit or a verdict; where the server used 90% or more of "
    "its core, the point never enters a CPU measure (drawn as a cross)."
)

TITLES = {
    "micro_wait_0_ready": "Wait-call cost vs registered descriptors, nothing ready, timeout 0 (micro)",
    "micro_wait_1_ready": "Wait-call cost vs registered descriptors, 1 ready (micro)",
    "micro_wait_all_ready": "Wait-call cost vs registered descriptors, all ready (micro)",
    "scan_wait": "Servers' own wall time per wait call (sleep included) vs total connections (scan)",
    "scan_throughput": "Throughput vs total connections, few active (scan)",
    "scan_latency": "p50 and p99 latency vs total connections (scan)",
    "scan_cpu": "Server CPU per message, user and system (scan)",
    "capacity": "Capacity per core derived from CPU per message (scan-rate) vs measured closed-loop "
                "throughput (scan)",
    "micro_drain_1_ready": "libevent bench.c loop (wait, read each ready, write the next), 1 ready (micro, drain)",
    "micro_drain_all_ready": "libevent bench.c loop, every descriptor ready (micro, drain)",
    "ready_cpu": "Server CPU per message vs measured ready fraction, smallest N (ready)",
    "ready_cpu_large_n": "Server CPU per message vs measured ready fraction, largest N (ready)",
    "ready_events": "Events per wait call vs burst size (ready)",
    "ready_drain": "Drain time per burst vs burst size (ready)",
    "fdlimit": "The FD_SETSIZE wall: connections echoing vs attempted (fdlimit)",
    "msgsize": "Message size effect (msgsize)",
    "syscalls": "System calls per message (syscall profile)",
    "memory": "Memory per connection (memory)",
    "micro_cpu_split": "User vs system CPU per wait call vs registered descriptors, 1 ready (micro)",
    "threads_cpu": "Thread per connection vs epoll: server CPU per message vs connections (scan-rate)",
    "threads_memory": "Thread per connection vs epoll: memory per connection (memory)",
}


# ---------------------------------------------------------------- blocks

def _refused_note(points: pd.DataFrame) -> str:
    """How many 'failed' rows were refused, never run: by design (select past
    FD_SETSIZE) or because a mechanism is not available here (io_uring)."""
    errors = an._text(points["error"]) if "error" in points else pd.Series(dtype=str)
    refused = int(errors.str.startswith("refused").sum())
    absent = int(errors.str.contains("not available here", regex=False).sum())
    if not refused:
        return ""
    if not absent:
        return f" ({refused} of them refused by design, e.g. select past FD_SETSIZE: never run)"
    by_design = f"{refused - absent} by design, e.g. select past FD_SETSIZE; " if refused > absent else ""
    return (f" ({refused} of them refused, never run: {by_design}"
            f"{absent} because the mechanism is not available here)")


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
        *(("p", f"Warning: {w}") for w in run.warnings),    # rows missing or torn
        ("p", f"Run state: {meta.get('state', 'unknown')}; started {meta.get('started_at', '?')}, "
              f"ended {meta.get('ended_at', '?')}; {len(points)} point rows, {len(run.micro)} micro rows."),
        ("summary", summary(vs, names)),
        ("h", 2, "Claims"),
        ("table", pd.DataFrame([{"claim": f"{v.id}: {v.claim}", "verdict": v.verdict,
                                 "deciding numbers": v.numbers, "why": v.reason, "rule": v.rule,
                                 "figure": v.figure if v.figure in names else f"{v.figure} (no data)"}
                                for v in vs])),
        ("p", f"Set aside and never used in a verdict: {aside['saturated']} saturated, "
              f"{aside['noisy']} noisy and {aside['failed']} failed point rows"
              f"{_refused_note(points)}. {METHODS}"),
    ]
    beyond = uring.section(run, points)
    if beyond:
        blocks += [("h", 2, "Beyond the explanation: io_uring"),
                   ("p", "io_uring (Linux 5.13+) learns readiness from multishot poll completions and "
                         "can submit and reap many in one io_uring_enter; the server "
                         "(servers/uring_loop.py) uses it for readiness only, over the same core, so "
                         "what differs from epoll is how readiness is learned. Its multishot poll is "
                         "edge-triggered, so epoll-et is its nearest peer. The same rules as the "
                         "claims: flat within 25%; dearer or cheaper only with the intervals apart."),
                   *(("p", text) for text in beyond)]
    blocks += [("h", 2, "Speed goals (measured in this run)"),
               ("table", goals.speed_goals(run.points, meta))]
    refs = goals.reference_ratios(run.points)
    if not refs.empty:
        blocks += [("h", 2, "The servers next to the references"),
                   ("p", "Every server at one open-loop load (experiment `references`: 100 active "
                         "connections, 64 B) that saturates neither side; medians over repetitions. "
                         "`epoll ÷ this` below 1 means the epoll server costs less per message."),
                   ("table", refs)]
    ready_text = _ready_note(points)
    if ready_text:
        blocks += [("h", 2, "The ready experiment: how bursts are made"), ("p", ready_text)]
    blocks.append(("h", 2, "Figures"))
    text = readings.by_figure(run, points)
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


def summary(vs: list, names: list[str]) -> pd.DataFrame:
    """One line per claim: id, the claim in a few words, verdict, the deciding number, its figure."""
    return pd.DataFrame([{"id": v.id, "claim": claims.CLAIMS_SHORT.get(v.id, v.claim), "verdict": v.verdict,
                          "number": headline(v), "figure": v.figure if v.figure in names else ""}
                         for v in vs])


READY_METHOD = (
    "N connections stay open; per burst the load generator stops the server (SIGSTOP, confirmed "
    "from /proc), writes one message on each of K connections spread over the N, continues it "
    "(SIGCONT) and verifies all K echoes, so the server's next wait call finds the whole burst "
    "ready whatever the load generator's speed (loadgen/burst.py). The ready fraction on the "
    "figures is measured: events per wait call ÷ N from the server's own counters, so a burst "
    "that epoll splits at MAXEVENTS shows below K/N. Server CPU per message is the server's "
    "getrusage over the bursts ÷ K·bursts; the load generator's CPU enters nothing, so no ready "
    "point is set aside for its saturation. The drain time runs from SIGCONT to the last echo "
    "verified."
)


def _ready_note(points: pd.DataFrame) -> str:
    """How the ready experiment works, and what its K = 0 control says the gate costs."""
    rows = an.experiment(points, "ready")
    if rows.empty:
        return ""
    agg = an.aggregate(rows[rows["usable"]], measures=["server_cpu_us_per_burst"],
                       by=["mechanism", "connections", "active"])
    if agg.empty:
        return READY_METHOD
    agg = agg[agg["n"] > 0].assign(active=lambda d: pd.to_numeric(d["active"], errors="coerce"))
    parts = []
    for (mech, n), g in agg.groupby(["mechanism", "connections"], sort=False):
        zero, one = g[g["active"] == 0], g[g["active"] > 0].sort_values("active").head(1)
        if zero.empty:
            continue
        c0 = zero["server_cpu_us_per_burst"].iloc[0]
        share = ""
        if len(one) and one["server_cpu_us_per_burst"].iloc[0] > 0:
            c1 = one["server_cpu_us_per_burst"].iloc[0]
            share = f" ({c0 / c1:.0%} of a burst of {one['active'].iloc[0]:,.0f})"
        parts.append(f"{plots.label(mech)} at N={float(n):,.0f}: {claims.num(c0, 'µs')}{share}")
    control = (" The K = 0 control, stop and continue with nothing written, costs the server per "
               "burst: " + "; ".join(parts) + ". It is shown, not subtracted: for select and poll "
               "it holds the blocking scan every burst needs anyway." if parts else "")
    return READY_METHOD + control


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
    if d("cluster"):
        rows.append(("cluster", f"load from the client hosts of {d('cluster').get('scheduler')}; "
                                f"server on {d('cluster').get('server_host')}"))
    for h in meta.get("client_hosts") or []:
        pk = h.get("packages") or {}
        rows.append((f"client host {h.get('host')}",
                     f"{h.get('hostname')}: kernel {h.get('kernel')}, {h.get('cpu_count')} CPUs, "
                     f"Python {h.get('python')}, iomux-bench {pk.get('iomux-bench')}, "
                     f"distributed {pk.get('distributed')}, "
                     f"{h.get('dask_worker_threads')} Dask worker threads"))
    if isinstance(meta.get("runs"), list):
        runs = meta["runs"]
        rows.append(("invocations", f"{len(runs)} (first + resumes), "
                     f"{sum(r.get('elapsed_s') or 0 for r in runs):.0f} s in all"))
    if d("points"):
        rows.append(("points", kv(d("points").items())))
    if d("tasks"):
        rows.append(("tasks", kv((k, (v or {}).get("state")) for k, v in d("tasks").items())))
    shown = {"format", "state", "started_at", "ended_at", "kernel", "cpu", "memory", "python", "git",
             "packages", "limits", "profile", "pinning", "runs", "points", "tasks", "cluster",
             "client_hosts"}
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
        elif b[0] == "summary":
            out.append("| claim | verdict | deciding number | figure |\n|---|---|---|---|")
            out += [f"| {r.id}: {_md_cell(r.claim)} | **{r.verdict}** | {_md_cell(r.number)} | "
                    + (f"[{r.figure}](plots/{r.figure}.svg)" if r.figure else "") + " |"
                    for r in b[1].itertuples(index=False)]
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
table.summary { font-size: 13px; margin: .6em 0; } table.summary td { vertical-align: middle; padding: .1em .5em; }
table.summary img { width: 60px; display: block; } h1 { font-size: 1.5em; margin: .2em 0; }
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
        elif b[0] == "summary":
            out.append('<table class="summary" id="summary"><thead><tr><th>claim</th><th>verdict</th>'
                       "<th>deciding number</th><th>figure</th></tr></thead><tbody>")
            for r in b[1].itertuples(index=False):
                v = str(r.verdict)
                thumb = ""
                if r.figure and (plots_dir / f"{r.figure}.png").exists():
                    png = base64.b64encode((plots_dir / f"{r.figure}.png").read_bytes()).decode("ascii")
                    thumb = (f'<a href="#fig-{e(r.figure)}"><img alt="{e(r.figure)} (thumbnail)" '
                             f'src="data:image/png;base64,{png}"></a>')
                out.append(f"<tr><td><b>{e(r.id)}</b> {e(r.claim)}</td>"
                           f'<td class="v-{v.replace(" ", "-")}">{e(v)}</td><td>{e(r.number)}</td>'
                           f"<td>{thumb}</td></tr>")
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
