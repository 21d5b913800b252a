"""The experiments beyond the sweep, each run once per run directory.

micro (wait-call cost on socketpairs), probes (small kernel experiments),
syscalls (the syscall mix per message under strace or perf), memory (RSS
and slab bytes per connection), and their shared child-process plumbing:
procs (children in their own process group, killed on every exit path)
and child (run a function in a fresh process). May import rundir only.
"""
