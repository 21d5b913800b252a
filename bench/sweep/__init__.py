"""The sweep: a profile becomes interleaved points, each point a server and a load generator.

profile (TOML -> Profile) and profile_check (errors that name the field and
the allowed values), plan (Profile -> [Point | Task]), run (the run loop,
resume, run-directory bookkeeping), point (one point: argv, watch, raw
dict), sampler (the /proc CPU and noise scan), taskrun (the tasks of a run),
tidy (raw -> one points.csv row), progress (the per-point line, ETA and
summary), profiles/ (the bundled TOML files). May import tasks, analysis and
rundir.
"""
