"""CPU seconds by whom, from one scan of /proc: the server, the load generator, the noise."""

from __future__ import annotations

import os
import time

import psutil

from bench.tasks import procs

SAMPLE_EVERY_S = 0.1             # orchestrator CPU samples while the load generator runs

_TICK = os.sysconf("SC_CLK_TCK")
_PF_KTHREAD = 0x00200000


def sample(server_pid: int, loadgen_pid: int) -> dict:
    """CPU seconds so far, by whom: one scan of /proc (about 1 ms for 100 processes).

    Each process counts utime + stime + cutime + cstime, so the sum over live
    processes also holds descendants already reaped. `others_s` is every
    user-space process but the server, the load generator's tree and this
    orchestrator (whose own sampling is recorded as `self_s`); kernel
    threads are `kernel_s`. Machine-wide irq/softirq time is not charged to
    processes consistently (loopback traffic is processed in softirq, partly
    on idle CPUs), so it is recorded apart and left out of the noise; steal
    (the hypervisor running someone else) is noise.
    """
    table = _proc_table()
    ours = {"server_s": _tree(table, server_pid), "loadgen_s": _tree(table, loadgen_pid)}
    me = os.getpid()
    skip = ours["server_s"] | ours["loadgen_s"] | {me}
    t = psutil.cpu_times()
    sample = {"t": time.monotonic()}
    sample.update({k: round(sum(table[p][2] for p in pids) / _TICK, 3) for k, pids in ours.items()})
    sample.update(
        others_s=round(sum(c for p, (_, fl, c) in table.items()
                           if p not in skip and not fl & _PF_KTHREAD) / _TICK, 3),
        kernel_s=round(sum(c for _, fl, c in table.values() if fl & _PF_KTHREAD) / _TICK, 3),
        self_s=round(table.get(me, (0, 0, 0))[2] / _TICK, 3),
        steal_s=t.steal, softirq_s=t.softirq + t.irq,
        machine_s=round(t.user + t.nice + t.system + t.irq + t.softirq + t.steal, 3),
    )
    return sample


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, flags, utime + stime + cutime + cstime in ticks) for every process."""
    table = {}
    for pid, fields in procs.proc_stats():
        table[pid] = (int(fields[1]), int(fields[6]), sum(map(int, fields[11:15])))
    return table


def _tree(table: dict, root: int) -> set[int]:
    """root and its descendants (zombies included: their counters still read)."""
    if root not in table:
        return set()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = set(), [root]
    while stack:
        pid = stack.pop()
        tree.add(pid)
        stack.extend(children.get(pid, ()))
    return tree


