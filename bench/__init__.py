"""Sweeps, micro-benchmarks, storage, analysis, plots and the claims report."""
