"""The run directory's format, which every other part reads or writes.

schema (column lists, FORMAT, the experiment and mechanism names), store
(atomic JSON, appended CSV rows, load_run), meta (what machine and software
a run was made on). Imports nothing from bench's other packages.
"""
