"""The verdict rules: thresholds, outcomes and the rule functions every claim applies.

Every threshold is quoted from CLAIMS.md "Rules for verdicts", or marked
"ours" with the reason. The claim modules (c1_*.py ... ) only read evidence
and apply these; a rule changes here, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.analysis import stats as an

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


def untested(cid: str, reason: str, figure: str, rule: str, numbers: str = "") -> Verdict:
    return Verdict(cid, CLAIMS[cid], NOT_TESTED, numbers or "no data", rule, figure, reason + ".")
