"""The claims under test (CLAIMS.md): one module per claim over shared rules and evidence.

rules (thresholds, outcomes, the rule functions), text (numbers as prose),
evidence (what a run offers the claims, read once), and c1_* ... c11_* (one
function each: the run's evidence -> a Verdict). Data decide: a claim whose
data are absent is "not tested", with the reason, and no saturated, noisy or
failed point enters a number (bench.analysis.stats.classify).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.analysis.claims import (c1_fd_setsize, c2_copy, c3_scan, c4_poll_limit, c5_edge, c6_mmap,
                                   c7_idle_busy, c8_memory, c9_word_size, c10_threads,
                                   c11_who_checks)
from bench.analysis.claims.evidence import Evidence, read_task_json  # noqa: F401
from bench.analysis.claims.rules import (CLAIMED_CONNS_PER_GB, CLAIMS, CLAIMS_SHORT, FLAT_WITHIN, GB, GIB,  # noqa: F401
                                         NOT_TESTED, OUTCOMES, PARTLY, REFUTED, SUPPORTED, Verdict,
                                         combine, differs, grows_linearly, is_flat)
from bench.analysis.claims.text import num  # noqa: F401
from bench.rundir.store import Run, load_run

RULES = {"C1": c1_fd_setsize.c1, "C2": c2_copy.c2, "C3": c3_scan.c3, "C4": c4_poll_limit.c4,
         "C5": c5_edge.c5, "C6": c6_mmap.c6, "C7": c7_idle_busy.c7, "C8": c8_memory.c8,
         "C9": c9_word_size.c9, "C10": c10_threads.c10, "C11": c11_who_checks.c11}


def verdicts(run: Run | str | Path) -> list[Verdict]:
    """A verdict for each claim C1-C11, computed from the run's data only."""
    if not isinstance(run, Run):
        run = load_run(run)
    ev = Evidence(run)
    return [rule(ev) for rule in RULES.values()]


def verdicts_table(vs: list[Verdict]) -> pd.DataFrame:
    """The verdicts as a DataFrame (id, verdict, numbers, figure, reason, rule, claim)."""
    return pd.DataFrame([{"id": v.id, "verdict": v.verdict, "numbers": v.numbers, "figure": v.figure,
                          "reason": v.reason, "rule": v.rule, "claim": v.claim} for v in vs])
