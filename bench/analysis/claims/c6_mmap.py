"""C6: does epoll share memory with the kernel through mmap?"""

from __future__ import annotations

import pandas as pd

from bench.analysis import stats as an
from bench.analysis.claims.evidence import Evidence, no_profile_reason, probe_outcome
from bench.analysis.claims.rules import (CLAIMS, LOOP_MMAP_PER_MSG, PARTLY, REFUTED, SUPPORTED,
                                         Verdict, untested)
from bench.analysis.claims.text import num, slope_text


def c6(ev: Evidence) -> Verdict:
    rule = (f"refuted when the maps probe shows no mapping tied to eventpoll (and mmap on the epoll fd "
            f"fails) or the syscall profile shows "
            f"< {LOOP_MMAP_PER_MSG} mmap per message for epoll; supported when either shows one")
    against, for_, texts, values = [], [], [], {}
    probe, why_not = probe_outcome(ev, "C6")
    if probe:
        mapped = bool(probe.get("eventpoll_mappings_after")) or \
            (probe.get("mmap_epoll_fd") or {}).get("result") == "ok"
        paths = sorted({m.get("path") or "anonymous" for m in probe.get("new_mappings") or []})
        texts.append(f"/proc/self/maps after an epoll set with {probe.get('registered', '?')} fds: "
                     f"{probe.get('new_mapping_count', 0)} new mapping(s) ({', '.join(paths) or 'none'}), "
                     f"{len(probe.get('eventpoll_mappings_after') or [])} mentioning eventpoll; "
                     f"mmap on the epoll fd: {(probe.get('mmap_epoll_fd') or {}).get('errno') or 'ok'}")
        (for_ if mapped else against).append("maps probe")
        values["eventpoll_mapped"] = mapped
    sc = ev.run.syscalls
    if sc is not None and not sc.empty:
        ep = sc[sc["mechanism"].isin(["epoll", "epoll-et"])]
        if len(ep):
            maps = ep[ep["syscall"].isin(["mmap", "munmap"])]
            per = pd.to_numeric(maps["calls_per_msg"], errors="coerce").groupby(maps["point_id"]).sum()
            mm = float(per.max()) if len(per) and per.notna().any() else 0.0
            texts.append(f"epoll servers: {num(mm)} mmap + munmap calls per message "
                         f"(syscall profile, {', '.join(sorted(set(ep['tracer'].astype(str))))})")
            (for_ if mm >= LOOP_MMAP_PER_MSG else against).append("syscall profile")
            values["mmap_per_msg"] = mm
    uring = _uring_rings(ev.memory_doc)
    if uring:
        texts.append(uring)   # context beside the verdict: io_uring does share memory
    f = an.fit_row(ev.micro_all, "epoll")
    if f:
        rows = an.micro_wait(ev.run.micro, "all")
        capped = rows[(rows["mechanism"] == "epoll") & rows["capped"]]
        left_out = (f"; {len(capped)} rows where epoll returned fewer events than were ready (MAXEVENTS, "
                    f"N = {', '.join(num(n) for n in capped['registered'])}) left out" if len(capped) else "")
        texts.append(f"epoll_wait with all ready, N ≤ {num(f['x_max'])}: "
                     f"{slope_text(f, 'ns per returned event')} (each event is copied out{left_out})")
        values["per_returned_event_ns"] = f["slope"]
        values["capped_rows"] = len(capped)
    if not (against or for_):
        return untested("C6", f"{why_not}, and {no_profile_reason(ev)}",
                         "micro_wait_all_ready", rule, "; ".join(texts))
    figure = "syscalls" if "syscall profile" in against + for_ else "micro_wait_all_ready"
    if for_ and not against:
        return Verdict("C6", CLAIMS["C6"], SUPPORTED, "; ".join(texts), rule, figure,
                       f"Shared mapping seen by: {', '.join(for_)}.", values)
    if for_:
        return Verdict("C6", CLAIMS["C6"], PARTLY, "; ".join(texts), rule, figure,
                       f"Evidence splits: mmap seen by {', '.join(for_)}, absent in {', '.join(against)}.", values)
    return Verdict("C6", CLAIMS["C6"], REFUTED, "; ".join(texts), rule, figure,
                   "epoll maps nothing into the process: the set is an anonymous-inode file and "
                   "epoll_wait copies the ready events into the caller's buffer (fs/eventpoll.c has no mmap).",
                   values)


def _uring_rings(memory_doc: dict) -> str:
    """The io_uring server's shared ring mappings while it held connections (memory task), or ""."""
    seen = [(m["connections"], m["during"].get("shared_maps") or {})
            for m in memory_doc.get("measurements") or []
            if m.get("mechanism") == "io_uring" and not m.get("error") and m.get("during")]
    sizes = sorted({(n, maps.get("anon_inode:[io_uring]", 0)) for n, maps in seen})
    if not sizes:
        return ""
    held = ", ".join(f"{num(b / 1024)} KiB at {num(n)} connections" for n, b in sizes)
    return (f"unlike epoll, the io_uring server maps its rings shared with the kernel "
            f"(anon_inode:[io_uring], rw-s in /proc/PID/maps): {held}")
