"""The sweep: a profile becomes interleaved points, each point a server and a load generator.

profile (TOML -> Profile, with errors naming the field), plan (Profile ->
[Point | Task]), run (the run loop, resume, run-directory bookkeeping),
point (one point: argv, watch, raw dict), sampler (the /proc CPU and noise
scan), tidy (raw -> one points.csv row), progress (the per-point line, ETA
and summary), profiles/ (the bundled TOML files). May import tasks and rundir.
"""
