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
