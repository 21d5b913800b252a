"""Kernel probes for claims C1, C4, C5, C6, C9 and C10: small experiments, one fresh child each.

Each probe runs in its own spawned interpreter (descriptor limits and
descriptors never leak into the next one) and returns what it observed; the
parent turns that outcome into a short reading and writes run_dir/probes.json.
A probe that cannot run here is recorded as "not tested" with the reason.
The probes themselves (what runs in the child) are bench.tasks.probes_child.

    python -m bench.tasks.probes RUN_DIR
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from bench.rundir.schema import FORMAT
from bench.tasks.child import ChildFailed, run_in_child
from bench.tasks.probes_child import NotTested, probe_c1, probe_c4, probe_c5, probe_c6, probe_c9
from bench.tasks.threads_probe import probe_c10
from servers.sysutil import utc_now

PROBE_TIMEOUT_S = 120.0


# ------------------------------------------------------------------ readings

def read_c1(o: dict) -> str:
    """A reading of the C1 outcome: is select's limit on the value or the count?"""
    high = o["high_fd_select"]
    if high["exception"]:
        seen = f"raised {high['exception']}(\"{high['message']}\") for descriptor {o['high_fd']}"
    else:
        seen = f"accepted descriptor {o['high_fd']}"
    text = (f"With {o['open_descriptors']} descriptors open, select.select {seen}, "
            f"and {'reported' if o['low_fd_ready'] else 'did not report'} descriptor "
            f"{o['low_fd']} (the same socket) ready.")
    if high["exception"] and o["low_fd_ready"]:
        text += (f" The limit is on the descriptor's value (< FD_SETSIZE = {o['fd_setsize']}), "
                 "not on how many are watched.")
    k = o["kernel_select_high_fd"]
    if k["returned"] == 1 and k["fd_reported_ready"]:
        text += (f" The kernel's select(2), given a {k['bitmap_bytes']}-byte set and nfds "
                 f"{k['nfds']}, reported descriptor {o['high_fd']} ready: the bound is the C "
                 "library's fixed-size fd_set, which CPython checks, not the kernel.")
    else:
        text += f" The kernel's select(2) with nfds {k['nfds']} returned {k['returned']} ({k['errno']})."
    return text


def read_c4(o: dict) -> str:
    """A reading of the C4 outcome: poll's real bound is RLIMIT_NOFILE."""
    over = o["nfds_above_soft_limit"]
    at = o["nfds_equal_to_soft_limit"]
    text = (f"poll() over {o['nfds']} entries (descriptors up to {o['highest_fd']}) "
            f"{'reported' if o['over_1024']['highest_fd_reported'] else 'did not report'} "
            f"descriptor {o['highest_fd']} ready: no 1024 bound. ")
    if over["result"] == "error":
        text += (f"With the soft RLIMIT_NOFILE lowered to {over['soft']} (one below nfds, "
                 f"descriptors still open) it failed with {over['errno']} ({over['message']}); ")
    else:
        text += f"With the soft limit at {over['soft']} it still returned {over['ready']} ready; "
    text += (f"at {at['soft']} (= nfds) it returned "
             f"{at['result'] if at['result'] == 'ok' else at['errno']}. ")
    if over["result"] == "error" and at["result"] == "ok":
        text += ("So poll has a maximum: nfds may not exceed RLIMIT_NOFILE "
                 "(fs/select.c do_sys_poll); the array itself is copied in page-sized chunks.")
    return text


def read_c5(o: dict) -> str:
    """A reading of the C5 outcome: does edge-triggered report a descriptor only once?"""
    m = o["modes"]
    edge, one, lvl = m["edge"], m["oneshot"], m["level"]
    text = (f"Two {o['chunk_bytes']}-byte writes, nothing read, {o['calls_per_write']} "
            f"epoll_wait calls after each: edge-triggered returned {edge['events_total']} "
            f"events ({edge['events_per_call']}), EPOLLONESHOT {one['events_total']} "
            f"({one['events_per_call']}; {one['events_after_rearm']} after re-arming with "
            f"EPOLL_CTL_MOD), level-triggered {lvl['events_total']} ({lvl['events_per_call']}). ")
    if edge["writes_with_an_event"] == 2 and one["writes_with_an_event"] == 1:
        text += ("Edge-triggered reports each new arrival of data, not a descriptor once; "
                 "only EPOLLONESHOT is once-only, until re-armed (epoll(7)).")
    return text


def read_c6(o: dict) -> str:
    """A reading of the C6 outcome: does epoll share memory with the kernel through mmap?"""
    b, a, c = o["maps_before"], o["maps_after"], o["maps_control"]
    paths = sorted({m["path"] or "anonymous" for m in o["new_mappings"]})
    text = (f"Creating an epoll set and registering {o['registered']} descriptors "
            f"({o['fdinfo_watches']} watches in /proc/self/fdinfo) changed /proc/self/maps "
            f"from {b['count']} mappings / {b['bytes']} bytes to {a['count']} / {a['bytes']} "
            f"({o['new_mapping_count']} new: {', '.join(paths) or 'none'}; reading maps twice "
            f"with nothing done in between gave {c['count']} / {c['bytes']}). "
            f"{len(o['eventpoll_mappings_after'])} mappings mention eventpoll. "
            f"The epoll descriptor is {o['epoll_fd_link']}")
    mm = o["mmap_epoll_fd"]
    text += (f", and mmap() on it {'succeeded' if mm['result'] == 'ok' else 'fails with ' + mm['errno']}.")
    if not o["eventpoll_mappings_after"] and mm["result"] != "ok":
        text += (" No memory is shared through mmap: the watches live in the kernel and "
                 "epoll_wait copies ready events out (fs/eventpoll.c has no mmap).")
    return text


def read_c9(o: dict) -> str:
    """A reading of the C9 outcome: does FD_SETSIZE follow the word size?"""
    sel, comp, chk = o["cpython_select"], o["fd_set_compiled"], o["fd_set_fdelt_chk"]
    text = (f"{o['machine']}, {o['pointer_bits']}-bit pointers ({o['long_bits']}-bit long, "
            f"{o['int_bits']}-bit int): the claim predicts FD_SETSIZE {o['claimed_fd_setsize']}. ")
    text += (f"CPython's select.select refuses descriptor {sel['lowest_refused']} and accepts "
             f"{sel['lowest_refused'] - 1} ({sel['message']}). " if sel["lowest_refused"] is not None
             else f"CPython's select.select accepted every descriptor up to {sel['searched'][1]}. ")
    if "unavailable" not in comp:
        text += (f"Compiled against the C library's headers: sizeof(fd_set) {comp['sizeof_fd_set']} bytes, "
                 f"FD_SETSIZE {comp['FD_SETSIZE']} (= __FD_SETSIZE {comp['__FD_SETSIZE']}), "
                 f"{comp['sizeof_fd_mask'] * 8}-bit words. ")
    if "unavailable" not in chk:
        text += (f"glibc's __fdelt_chk aborts from descriptor {chk['lowest_refused']}: "
                 f"{chk['words']} words of {chk['bits_per_word']} bits, {chk['fd_set_bytes']} bytes. ")
    return text.strip()


def read_c10(o: dict) -> str:
    """A reading of the C10 outcome: how many threads, what stops them, what client T + 1 sees."""
    t, c = o["thread_limit"], o["capped_server"]
    room = {k: v for k, v in t["headroom_before"].items() if v is not None}
    first = min(room, key=room.get) if room else None
    text = (f"Started {'at least ' if t['at_least'] else ''}{t['started']:,} threads "
            f"({t['stack_bytes'] // 1024} KiB stacks, {t['maps_per_thread']} mappings and "
            f"{t['rss_per_thread_bytes'] / 1024:.0f} KiB RSS each) in {t['start_s']} s; stopped by "
            f"{t['stopped_by']}" + (f" ({t['error']})" if t["error"] else "") + ". ")
    if first:
        text += ("Threads each limit allowed at the start: "
                 + ", ".join(f"{k} {v:,}" for k, v in sorted(room.items(), key=lambda kv: kv[1]))
                 + f"; {first} comes first. ")
    text += (f"A threads server capped at {c['max_threads']}: {c['served_first']} clients echoed; client "
             f"{c['max_threads'] + 1} connected, then {c['extra_outcome']} after {c['extra_waited_s']} s")
    if "extra_after_a_thread_freed" in c:
        text += f"; once a thread freed it was {c['extra_after_a_thread_freed']}"
    else:
        text += f"; once a thread freed, a new client was {c['new_client_after_a_thread_freed']}"
    return text + "."


# ------------------------------------------------------------------ parent

PROBES = {  # claim -> (what the probe does, child function, reading)
    "C1": ("select on a socket moved to descriptor 2000 (os.dup2) with few descriptors "
           "open, and on the same socket below 1024", probe_c1, read_c1),
    "C4": ("poll over more than 1024 descriptors, then with nfds above the soft "
           "RLIMIT_NOFILE (lowered after opening them)", probe_c4, read_c4),
    "C5": ("two writes to a loopback TCP socket without a read; epoll events counted "
           "level-triggered, edge-triggered and with EPOLLONESHOT", probe_c5, read_c5),
    "C6": ("/proc/self/maps before and after an epoll set with 10,000 registered "
           "descriptors; the epoll descriptor's link and mmap on it", probe_c6, read_c6),
    "C9": ("word size; the lowest descriptor value CPython's select.select refuses (one socket "
           "dup2'd, bisected); sizeof(fd_set) from a program compiled with cc, and the bound "
           "glibc's __fdelt_chk enforces (forked children)", probe_c9, read_c9),
    "C10": ("threads started (blocked) until one fails or a cap, with every limit on them read "
            "before and at the end; the threads server capped at 4 threads with a fifth client",
            probe_c10, read_c10),
}


def run_probes(run_dir) -> dict:
    """Run every probe in its own fresh child; write run_dir/probes.json and return it."""
    from bench.rundir.store import write_json          # pandas: parent only
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "started_at": utc_now(), "kernel": platform.release(),
           "python": platform.python_version(), "probes": {}}
    for claim, (what, fn, read) in PROBES.items():
        entry = {"claim": claim, "probe": what}
        try:
            outcome = run_in_child(_guarded, fn, timeout_s=PROBE_TIMEOUT_S)
        except ChildFailed as e:
            entry.update(status="not tested", reason=f"probe failed: {e}")
        else:
            if "not_tested" in outcome:
                entry.update(status="not tested", reason=outcome["not_tested"])
            else:
                entry.update(status="tested", outcome=outcome, reading=read(outcome))
        doc["probes"][claim] = entry
        print(f"probe {claim}: {entry.get('reading') or entry['status'] + ': ' + entry['reason']}",
              file=sys.stderr, flush=True)
    doc["ended_at"] = utc_now()
    write_json(run_dir / "probes.json", doc)
    return doc


def _guarded(fn) -> dict:
    try:
        return fn()
    except NotTested as e:
        return {"not_tested": str(e)}


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench.tasks.probes",
                      description="Kernel probes for C1, C4, C5, C6, C9, C10; writes RUN_DIR/probes.json.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    args = p.parse_args(argv)
    run_probes(args.run_dir)
    print(Path(args.run_dir) / "probes.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
