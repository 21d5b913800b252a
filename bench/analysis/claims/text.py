"""Numbers and fits as prose, the same way in every claim and in the report."""

from __future__ import annotations

import math

from bench.analysis.claims.rules import is_flat, shape

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


def shape_text(fit: dict | None, unit: str = "ns/fd") -> str:
    """The shape rule's outcome in words: kind (with the exponent), knee, flatness."""
    if not fit:
        return "no data"
    sh, flat = shape(fit), is_flat(fit["first"], fit["last"])
    words = [f"{sh.kind} ({sh.why})"]
    if sh.knee:
        at, below, above = sh.knee
        words.append(f"knee at N={num(at)}: {num(below)} → {num(above, unit)}")
    words.append("flat" if flat else
                 f"{change_text(fit['change'])} from N={num(fit['x_min'])} to {num(fit['x_max'])}")
    return ", ".join(words)


def headline(v) -> str:
    """The one number that decides a verdict, in a few words (the report's summary line)."""
    x = v.values or {}
    get = lambda k: x.get(k) if x.get(k) is not None else math.nan
    if v.id == "C1" and "select_max_echoing" in x:
        return f"select served at most {num(get('select_max_echoing'))} connections"
    if v.id == "C2" and "slope_ratio" in x:
        return f"poll/select slope ratio {get('slope_ratio'):.2f} (copy-dominated: ≥ 2)"
    if v.id == "C3" and "deciding_fits" in x:
        return f"{x['linear_fits']} of {x['deciding_fits']} deciding fits linear"
    if v.id == "C4" and "poll_max_echoing" in x:
        return f"poll echoed {num(get('poll_max_echoing'))}" + (
            f"; {x['probe_errno']} past RLIMIT_NOFILE" if x.get("probe_errno") else "")
    if v.id == "C5" and "et_writes_reported" in x:
        return f"edge-triggered reported {x['et_writes_reported']} of 2 writes"
    if v.id == "C6" and "mmap_per_msg" in x:
        return f"{num(get('mmap_per_msg'))} mmap per message in epoll's loop"
    if v.id == "C7" and "ready_epoll_cpu" in x:          # the server level decides when it ran
        return (f"all {num(get('ready_k'))} of {num(get('ready_n'))} ready: epoll "
                f"{num(get('ready_epoll_cpu'))} vs {x.get('ready_best')} {num(get('ready_best_cpu'), 'µs/msg')}")
    if v.id == "C7" and "all_ready_ratio" in x:
        return f"all ready: epoll's wait {get('all_ready_ratio'):.2f}× {x.get('all_ready_best')}'s"
    if v.id == "C8" and "conns_per_gb" in x:
        return f"{num(get('conns_per_gb'))} connections per GB (10⁹ B)"
    first = (v.numbers or "").split(";")[0]
    return first if len(first) <= 90 else first[:87] + "..."
