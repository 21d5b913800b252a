"""The verdict rules: thresholds, outcomes and the rule functions every claim applies.

Every threshold is quoted from CLAIMS.md "Rules for verdicts", or marked
"ours" with the reason. The claim modules (c1_*.py ... ) only read evidence
and apply these; a rule changes here, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from bench.analysis import stats as an
from bench.analysis.significance import false_positive_rate, fpr_text, normal_overlap_fpr
from bench.rundir.schema import SERVER_SATURATED_SHARE

# ---------------------------------------------------------------- thresholds
# CLAIMS.md: "the 95% confidence interval of the fitted slope excludes zero"
CONFIDENCE = an.CONFIDENCE
# CLAIMS.md: "the fit has at least 4 distinct N spanning at least a decade"
MIN_DISTINCT_N = 4
MIN_SPAN = 10.0
# CLAIMS.md: "the growth exponent (log–log slope of the cost above its N→0
# baseline) is consistent with 1"; ours: consistent = its 95% CI lies within
# 0.8–1.25 (a factor 1.25 either way); a CI that holds 1 but reaches past the
# band cannot tell, one that excludes 1 is faster or slower than linear
EXPONENT_BAND = (0.8, 1.25)
# CLAIMS.md: "A per-descriptor slope that changes by more than 2× between the
# lower and upper halves of N is reported as a knee, with both slopes"
KNEE_RATIO = 2.0
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
# ours (C7, server level): "nearly all descriptors active" = a measured ready fraction
# (events per wait call / connections, ready experiment) of at least 0.9 for every mechanism
NEARLY_ALL_READY = 0.9
# ours (C6): an mmap "tied to the loop" would recur with the wait calls;
# fewer than 0.01 mmap calls per message is the allocator, not the loop.
LOOP_MMAP_PER_MSG = 0.01
# CLAIMS.md, C8: "about 100k connections per GB of memory"
CLAIMED_CONNS_PER_GB = 100_000
# ours (C8): "about" = within a factor of 2
ABOUT_FACTOR = 2.0
# CLAIMS.md, C8: "decided in the claim's own unit (C8: per 10⁹ bytes)"; GiB shown beside it
GB = 10 ** 9
GIB = 2 ** 30
# CLAIMS.md: "the points that decide verdicts get at least 5 repetitions": the
# mechanisms the claims fit or compare, per experiment: select and poll in scan
# (C3; epoll's closed loop saturates the load generator on 2 cores), select, poll
# and epoll in scan-rate (C3, C7's idle half) and in ready up to N = 1,024 (C7's
# busy half, decided where select exists), threads in scan-rate (C10). Other
# mechanisms, larger N, ready's K = 0 control and the other experiments
# (msgsize, fdlimit's counts, the references) are context.
DECIDING = {"scan": ("select", "poll"), "scan-rate": ("select", "poll", "epoll", "threads"),
            "ready": ("select", "poll", "epoll")}
DECIDING_READY_MAX_N = 1024
MIN_DECIDING_REPETITIONS = 5


def decides(kind: str, mechanisms, connections, ready=()) -> bool:
    """Whether an experiment of a profile holds points a verdict is decided on (DECIDING)."""
    if not set(mechanisms) & set(DECIDING.get(kind, ())):
        return False
    if kind == "ready":
        return any(k > 0 for k in ready) and min(connections) <= DECIDING_READY_MAX_N
    return True
# CLAIMS.md: "A point where the server used 90% or more of its core
# (`server_saturated`) never decides a CPU-per-message verdict" (bench.rundir.schema)
SERVER_SATURATED = SERVER_SATURATED_SHARE
# ours (C10): memory per connection is one measurement per point (no interval),
# so threads "cost more" only from twice epoll's bytes per connection
THREADS_MEMORY_FACTOR = 2.0

SUPPORTED, PARTLY, REFUTED, NOT_TESTED = "supported", "partly supported", "refuted", "not tested"
OUTCOMES = (SUPPORTED, PARTLY, REFUTED, NOT_TESTED)

# linear, faster / slower than linear, and the two ways a fit cannot tell
LINEAR, FASTER, SLOWER, NOT_GROWING, TOO_FEW_N, UNDECIDED = (
    "linear", "faster than linear", "slower than linear", "not growing", "too few N",
    "shape not decided")

RULE_LINEAR = (f"linear: at least {MIN_DISTINCT_N} distinct N spanning at least {MIN_SPAN:g}×, the "
               f"slope's {CONFIDENCE:.0%} CI excludes 0, and the growth exponent k of cost = a + b·N^k "
               f"(log–log slope above the N→0 baseline a) has its {CONFIDENCE:.0%} CI within "
               f"{EXPONENT_BAND[0]}–{EXPONENT_BAND[1]}; faster / slower than linear when that CI lies "
               f"above / below 1; knee: the per-descriptor slope of a two-segment fit changes more than "
               f"{KNEE_RATIO:g}× at that N; flat: cost at largest N within {FLAT_WITHIN:.0%} of cost at "
               "smallest N")
RULE_COMPARE = ("a difference counts only when the confidence intervals of the medians do not "
                f"overlap (exact order-statistic intervals, {CONFIDENCE:.0%} where the repetitions allow, "
                "[min, max] below 6); each comparison states the chance of that with no real difference "
                f"for the repetitions it had ({fpr_text(3, 3)}, {fpr_text(2, 3)}, {fpr_text(5, 5)})")
RULE_SET_ASIDE = ("points measured while the load generator was saturated, noisy or failed points never "
                  f"decide; a server at ≥ {SERVER_SATURATED:.0%} of its core never decides a CPU measure")

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
    "C9": "FD_SETSIZE is \"the size of 32 integers\": 32×32 = 1024 on a 32-bit machine, "
          "32×64 = 2048 on a 64-bit one",
    "C10": "with blocking sockets and a thread per client, if threads are limited (say to 1024) "
           "the 1025th client blocks; and this style is less efficient on a single CPU",
    "C11": "epoll and poll beat select because the program need not check every socket: "
           "the operating system says which have events",
}


# the claims in a few words, for the report's first screen
CLAIMS_SHORT = {
    "C1": "select stops at FD_SETSIZE (1024)",
    "C2": "select's cost is copying its sets",
    "C3": "select/poll cost grows linearly with descriptors",
    "C4": "poll has no maximum, copies its array",
    "C5": "edge-triggered epoll reports once",
    "C6": "epoll shares memory with the kernel (mmap)",
    "C7": "epoll flat with idle fds, worse when all active",
    "C8": "epoll: ~100k connections per GB",
    "C9": "FD_SETSIZE is 32 words: 2048 on 64-bit",
    "C10": "thread per client: client T+1 blocks; less efficient",
    "C11": "poll/epoll: the OS says which sockets are ready",
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

class Shape(NamedTuple):
    kind: str             # LINEAR, FASTER, SLOWER, NOT_GROWING, TOO_FEW_N, UNDECIDED
    why: str              # the numbers behind it, in words
    knee: tuple | None    # (N, slope below, slope above) when the slope changes > KNEE_RATIO×


def shape(fit: dict | None) -> Shape:
    """CLAIMS.md linear rule, applied to one fit row (bench.analysis.stats._fits).

    too few N: fewer than 4 distinct N, or a span under a decade, or no slope
    CI; not growing: the slope's CI reaches 0; linear: the growth exponent's
    CI lies within EXPONENT_BAND; faster / slower: the CI lies above / below
    1; shape not decided: the CI holds 1 but reaches past the band.
    """
    if not fit:
        return Shape(TOO_FEW_N, "no fit", None)
    get = lambda k: fit.get(k, math.nan)
    distinct, lo, hi = get("distinct_n"), get("x_min"), get("x_max")
    if not distinct >= MIN_DISTINCT_N or not (lo > 0 and hi / lo >= MIN_SPAN) or math.isnan(get("slope_lo")):
        return Shape(TOO_FEW_N, f"{_n(distinct)} distinct N over {_n(lo)}–{_n(hi)} (needs "
                     f"{MIN_DISTINCT_N} spanning {MIN_SPAN:g}×)", None)
    if get("slope_lo") <= 0:
        return Shape(NOT_GROWING, "slope CI reaches 0", None)
    k, k_lo, k_hi = get("exponent"), get("exponent_lo"), get("exponent_hi")
    why = f"exponent {k:.2f} [{k_lo:.2f}, {k_hi:.2f}]"
    s1, s2 = get("slope_below"), get("slope_above")
    bent = (s2 > 0 and (s1 <= 0 or not 1 / KNEE_RATIO <= s2 / s1 <= KNEE_RATIO)) or (s1 > 0 and s2 <= 0)
    knee = (get("knee_at"), s1, s2) if bent else None
    lo_band, hi_band = EXPONENT_BAND
    if lo_band <= k_lo and k_hi <= hi_band:
        return Shape(LINEAR, why, knee)
    if k_lo > 1:
        return Shape(FASTER, why, knee)
    if k_hi < 1:
        return Shape(SLOWER, why, knee)
    return Shape(UNDECIDED, why + f", reaching past {lo_band}–{hi_band}", knee)


def grows_linearly(fit: dict | None) -> bool | None:
    """CLAIMS.md linear rule: True linear, False faster, slower or not growing,
    None when the fit cannot tell (too few N, no CI, exponent CI too wide)."""
    kind = shape(fit).kind
    return True if kind == LINEAR else None if kind in (TOO_FEW_N, UNDECIDED) else False


def grows(fit: dict | None) -> bool | None:
    """The cost grows with N, whatever its shape: the slope's CI lies above 0 (None: too few N)."""
    kind = shape(fit).kind
    return None if kind == TOO_FEW_N else kind != NOT_GROWING


def _n(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:,.0f}"


def is_flat(first: float, last: float) -> bool | None:
    """CLAIMS.md flat rule: cost at the largest N within 25% of the cost at the smallest."""
    if any(v is None or math.isnan(v) for v in (first, last)) or first <= 0:
        return None
    return abs(last - first) <= FLAT_WITHIN * first


def differs(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    """CLAIMS.md comparison rule: True when the CIs (lo, hi) do not overlap; None without CIs."""
    o = an.overlap(a[0], a[1], b[0], b[1])
    return None if o is None else not o


def chance_text(n_a: int, n_b: int) -> str:
    """CLAIMS.md: the chance that two median intervals miss each other with no real
    difference, for the repetitions each had (significance.false_positive_rate)."""
    return "chance apart with no real difference " + fpr_text(int(n_a), int(n_b))


def slope_chance_text(a: tuple[float, float], b: tuple[float, float]) -> str:
    """The same for two slopes' 95% CIs (normal theory: 0.56% for equal widths, ≤ 5%)."""
    rate = normal_overlap_fpr(a[0], a[1], b[0], b[1])
    return "no CI" if math.isnan(rate) else f"chance apart with no real difference {rate:.1%}"


def fpr(n_a: int, n_b: int) -> float:
    """false_positive_rate, for the claims' machine-readable values."""
    return false_positive_rate(int(n_a), int(n_b))


def combine(parts: dict[str, bool | str | None]) -> str:
    """Parts of a claim -> outcome: all true supported, all false refuted,
    a mix (or true parts with untested ones, or a part that is itself PARTLY)
    partly supported, none tested not tested."""
    known = [v for v in parts.values() if v is not None]
    if not known:
        return NOT_TESTED
    if any(v == PARTLY for v in known):
        return PARTLY
    if all(known):
        return SUPPORTED if len(known) == len(parts) else PARTLY
    if not any(known):
        return REFUTED
    return PARTLY


def busy_half(epoll: tuple[float, float, float], best: tuple[float, float, float]) -> bool | str | None:
    """C7's busy half at the server level: (median, lo, hi) of epoll and of the best of select/poll.

    Epoll above, CIs apart: True (the claim holds); CIs overlapping: PARTLY
    (the curves converge); epoll below, CIs apart: False; no CI: None.
    """
    apart = differs(epoll[1:], best[1:])
    if apart is None:
        return None
    if not apart:
        return PARTLY
    return bool(epoll[0] > best[0])


def untested(cid: str, reason: str, figure: str, rule: str, numbers: str = "") -> Verdict:
    return Verdict(cid, CLAIMS[cid], NOT_TESTED, numbers or "no data", rule, figure, reason + ".")
