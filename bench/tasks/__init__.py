"""The experiments beyond the sweep, each run once per run directory.

micro (wait-call cost on socketpairs; micro_child times one configuration),
probes (small kernel experiments; probes_child holds the probes themselves),
syscalls (the syscall mix per message; tracer attaches strace or perf),
memory (RSS and slab bytes per connection; kernel_mem reads /proc,
memory_child is the idle client and the bare control server), and their
shared child-process plumbing: procs (children in their own process group,
killed on every exit path) and child (run a function in a fresh process).
May import rundir only (and servers/, loadgen/).
"""
