"""The result files' formats: version and column order (see DESIGN.md, Formats).

Units live in the names: _s seconds, _us microseconds, _ns nanoseconds,
_msgs_s messages per second, msg_size and *_bytes in bytes. Columns may be
appended; none of these may be renamed or reordered.
"""

FORMAT = 1

POINT_COLUMNS = [
    "point_id", "experiment", "mechanism", "connections", "active", "msg_size",
    "rate", "rep", "throughput_msgs_s", "p50_us", "p90_us", "p99_us", "p999_us",
    "max_us", "server_cpu_user_s", "server_cpu_sys_s", "server_cpu_us_per_msg",
    "wait_calls", "wait_ns_per_call", "events_per_call", "loadgen_cpu_max",
    "saturated", "noisy", "errors", "corrupt", "rejected_fd_setsize",
    "duration_s", "error",
    # appended columns (allowed by DESIGN.md; never rename the ones above)
    "established", "echoing", "idle_open_at_end", "rate_achieved_msgs_s",
    "server_cpu_user_us_per_msg", "server_cpu_sys_us_per_msg",
    "loadgen_cpu_user_us_per_msg", "noise_cpu_pct", "reference", "ctl_calls_per_msg",
    "connect_s", "server_saturated",
    # the ready experiment (issue 10): bursts of K ready descriptors out of N
    "ready_fraction", "bursts", "wait_calls_per_burst", "server_cpu_us_per_burst",
    "drain_p50_us", "drain_p99_us",
    # C10: the server's context switches (voluntary + involuntary, all threads) per message
    "ctx_switches_per_msg",
]
# server_saturated: the server's CPU (user + system, from its window snapshots)
# over the window's seconds reached this share of one core. CLAIMS.md: such a
# point "never decides a CPU-per-message verdict"
SERVER_SATURATED_SHARE = 0.9

EXPERIMENTS = ("scan", "scan-rate", "activity", "msgsize", "fdlimit",
               # every server, references included, at one fixed open-loop load:
               # the epoll server's CPU per message as a ratio to each reference
               "references",
               # bursts that make K of N connections ready at one instant (loadgen/burst.py)
               "ready")
# the equivalent servers, then the references of issue 6 (labelled as such)
MECHANISMS = ("select", "poll", "epoll", "epoll-et", "io_uring")
REFERENCES = ("epoll-toggle", "threads", "asyncio", "uvloop")

MICRO_COLUMNS = [
    "op", "mechanism", "registered", "ready", "timeout_mode",
    "ns_median", "ns_p10", "ns_p90", "samples", "note",
    # appended (issue 10): wait = timed wait calls on descriptors never read; drain =
    # libevent bench.c's iteration (wait, read each ready, write the next)
    "mode",
    # appended (C11): CPU per timed call from getrusage around the loop, user + sys = cpu
    "user_ns_per_call", "sys_ns_per_call", "cpu_ns_per_call",
]

SYSCALL_COLUMNS = [
    "point_id", "mechanism", "syscall", "calls", "seconds", "errors",
    "calls_per_msg", "tracer",
]

MEMORY_COLUMNS = [
    "mechanism", "connections", "rss_bytes", "slab_bytes", "per_conn_rss_bytes",
    "per_conn_kernel_bytes", "eventpoll_epi", "eventpoll_pwq", "TCP",
    "sock_inode_cache",
    # appended: io_uring's requests (one per armed poll); empty where the kernel has no line
    "io_kiocb",
    # appended: the server's share of every slabinfo line that grows with the connections
    "slab_growing_bytes",
    # appended (C10): the server's threads and what they cost the kernel
    "threads", "kernel_stack_bytes", "task_bytes", "per_conn_thread_bytes",
]

# file name -> its columns, for the loader
TABLES = {
    "points.csv": POINT_COLUMNS,
    "micro.csv": MICRO_COLUMNS,
    "syscalls.csv": SYSCALL_COLUMNS,
    "memory.csv": MEMORY_COLUMNS,
}
