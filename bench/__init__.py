"""iomux-bench's orchestration and analysis, in layers whose imports run one way.

    cli ──> sweep ──> tasks ──> rundir
       └──> report ──> analysis ──> rundir

rundir (the run-directory format) is at the bottom; nothing below imports
anything above it (tests/test_layout.py checks this). analysis and report
read run directories only; they never start a process.
"""
