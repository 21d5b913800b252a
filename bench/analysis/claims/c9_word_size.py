"""C9: does FD_SETSIZE follow the word size (32 words: 1024 on 32-bit, 2048 on 64-bit)?"""

from __future__ import annotations

from bench.analysis.claims.evidence import Evidence, probe_outcome
from bench.analysis.claims.rules import (CLAIMS, REFUTED, WALL_SLACK, Verdict, combine, untested)
from bench.analysis.claims.text import num

FIGURE = "fdlimit"


def c9(ev: Evidence) -> Verdict:
    rule = ("the claim predicts FD_SETSIZE = 32 × the word size (pointer bits) of this machine; each "
            "measure that exists must show that number: the lowest descriptor CPython's select refuses, "
            "the bits of the C library's fd_set (compiled sizeof, else glibc's __fdelt_chk bound), and "
            f"select's fdlimit wall (most echoing within {WALL_SLACK} below it); the claim is tested "
            "for this machine's word size (the other half needs a machine with the other)")
    probe, why_not = probe_outcome(ev, "C9")
    if probe is None:
        return untested("C9", f"{why_not}: no word size or fd_set size", FIGURE, rule)
    bits, want = probe["pointer_bits"], probe["claimed_fd_setsize"]
    texts = [f"{probe['machine']}: {bits}-bit pointers, so the claim predicts {want}"]
    values = {"pointer_bits": bits, "claimed": want}
    parts = {}
    sel = probe["cpython_select"]
    refused = sel.get("lowest_refused")
    if refused is not None:
        parts["CPython's select"] = refused == want
        texts.append(f"CPython's select.select refuses descriptor {refused} ({sel.get('message')})")
    elif sel["searched"][1] >= want:
        parts["CPython's select"] = False
        texts.append(f"CPython's select.select accepted every descriptor up to {sel['searched'][1]}")
    values["select_refuses_at"] = refused
    fd_set_bits, source = fd_set_size(probe)
    if fd_set_bits is not None:
        parts["the C library's fd_set"] = fd_set_bits == want
        texts.append(f"fd_set holds {fd_set_bits} descriptors ({fd_set_bits // 8} bytes; {source})")
    values["fd_set_bits"] = fd_set_bits
    wall, wall_text = fdlimit_wall(ev, want)
    parts["select's fdlimit wall"] = wall
    texts.append(wall_text)
    outcome = combine(parts)
    said = "; ".join(f"{k}: {'as claimed' if v else 'not as claimed' if v is False else 'not tested'}"
                     for k, v in parts.items())
    seen = refused or fd_set_bits
    reason = f"{said}."
    if outcome == REFUTED and seen:
        reason = (f"On this {bits}-bit machine the bound is {seen}, not {want} ({said}). {seen} is glibc's "
                  f"__FD_SETSIZE, a constant (bits/typesizes.h) independent of the word size: an fd_set "
                  f"is {seen} bits however many words that takes (here {seen // bits} of {bits} bits); "
                  f"\"32 integers\" is {seen} bits only with 32-bit words.")
    return Verdict("C9", CLAIMS["C9"], outcome, "; ".join(texts), rule, FIGURE, reason, values)


def fd_set_size(probe: dict) -> tuple[int | None, str]:
    """(descriptors an fd_set holds, how it was measured) from the C9 probe; (None, "") if neither way ran."""
    comp, chk = probe.get("fd_set_compiled") or {}, probe.get("fd_set_fdelt_chk") or {}
    if "sizeof_fd_set" in comp:
        return comp["sizeof_fd_set"] * 8, "sizeof(fd_set) compiled with cc"
    if "lowest_refused" in chk:
        return chk["lowest_refused"], "the lowest descriptor glibc's __fdelt_chk refuses"
    return None, ""


def fdlimit_wall(ev: Evidence, want: int) -> tuple[bool | None, str]:
    """Is select's fdlimit wall at `want`? None when fdlimit did not reach past it, or is absent."""
    sel = ev.fdlimit("select")
    if sel.empty:
        return None, f"fdlimit: {ev.why_absent('fdlimit', ('select',))}"
    attempted = float(sel["connections"].max())
    ok = sel[sel["usable"]]
    short = sel[sel["failed"] | (sel["usable"] & (sel["echoing"] < sel["connections"]))]
    most = float(ok["echoing"].max()) if ok["echoing"].notna().any() else 0.0
    if short.empty:
        text = f"fdlimit: select echoed every connection up to {num(attempted)}"
        return (False if attempted > want else None), text
    return want - WALL_SLACK <= most <= want, f"fdlimit: select echoed at most {num(most)} connections"
