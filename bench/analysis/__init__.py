"""From a run directory's tables to numbers and verdicts; reads files, starts nothing.

stats (medians with CIs, fits), claims (the verdict rules of CLAIMS.md, the
evidence readers, one function per claim), goals (the speed goals read off
the run), micro_summary (the per-descriptor slopes printed after a micro
run). May import rundir only.
"""
