"""What a person reads: figures, the report, and the comparison of two runs.

plots (one plot_<name>(df, ax) per figure), render (report.md and
report.html), compare (two runs side by side). May import analysis and
rundir; reads files only.
"""
