"""What a person reads: figures, the report, and the comparison of two runs.

plots (a package: one plot_<name>(df, ax) per figure, FIGURES, save_all),
readings (each figure's two sentences read off the data), render (report.md
and report.html), compare (two runs side by side). May import analysis and
rundir; reads files only.
"""
