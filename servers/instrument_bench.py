"""python -m servers.instrument_bench: what the loops' own instrumentation costs per wait call.

Each server loop times every wait call and records the duration and the
number of events. This benchmark runs the recording lines around a stand-in
wait (a C call that returns a ready list at once) and prints, per wait call,
the nanoseconds each form adds to the bare loop:

    clocks    the two perf_counter_ns reads alone (the floor for timing a wait)
    method    the form the loops used before: a bound Stats method per call
    inline    the form they use now (core.Stats): three adds in the loop itself

Repetitions interleave the forms; the medians are printed. A benchmark, not a
test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from time import perf_counter_ns

from .core import Stats

READY = [(5, 1), (6, 1), (7, 1)]   # what a wait with three ready descriptors returns


class _MethodStats:
    """The recording the loops did through a method call, kept here as the baseline."""

    def __init__(self):
        self.wait_calls = self.wait_ns_total = self.events_total = 0
        self._wait_hist = [0] * 64
        self._events_hist = [0] * 32

    def record_wait(self, ns: int, events: int) -> None:
        self.wait_calls += 1
        self.wait_ns_total += ns
        self._wait_hist[ns.bit_length()] += 1
        self.events_total += events
        self._events_hist[events.bit_length()] += 1


def bare(calls: int) -> None:
    wait = READY.copy
    for _ in range(calls):
        wait()


def clocks(calls: int) -> None:
    wait, clock = READY.copy, perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        wait()
        clock() - t0


def method(calls: int) -> None:
    wait, record_wait = READY.copy, _MethodStats().record_wait
    for _ in range(calls):
        t0 = perf_counter_ns()
        ready = wait()
        record_wait(perf_counter_ns() - t0, len(ready))


def inline(calls: int) -> None:
    wait, stats = READY.copy, Stats("bench")
    clock, wait_hist, events_hist = perf_counter_ns, stats.wait_hist, stats.events_hist
    for _ in range(calls):
        t0 = clock()
        ready = wait()
        wait_ns = clock() - t0
        stats.wait_ns_total += wait_ns
        wait_hist[wait_ns.bit_length()] += 1
        events_hist[len(ready)] += 1


FORMS = (bare, clocks, method, inline)


def measure(calls: int, repetitions: int) -> dict[str, float]:
    """Median ns per wait call that each form adds to the bare loop."""
    per_call: dict[str, list[float]] = {f.__name__: [] for f in FORMS}
    for rep in range(repetitions):
        for form in FORMS if rep % 2 == 0 else FORMS[::-1]:
            t0 = perf_counter_ns()
            form(calls)
            per_call[form.__name__].append((perf_counter_ns() - t0) / calls)
    floor = statistics.median(per_call["bare"])
    return {name: statistics.median(v) - floor for name, v in per_call.items() if name != "bare"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m servers.instrument_bench",
                                description="What the loops' wait instrumentation costs per call.")
    p.add_argument("--calls", type=int, default=100_000,
                   help="wait calls per repetition (default 100000)")
    p.add_argument("--repetitions", type=int, default=15,
                   help="interleaved repetitions (default 15)")
    args = p.parse_args(argv)
    if args.calls < 1 or args.repetitions < 1:
        p.error("--calls and --repetitions must be at least 1")
    added = measure(args.calls, args.repetitions)
    for name, ns in added.items():
        print(f"{name:8s} {ns:7.1f} ns per wait call")
    print(f"inline saves {added['method'] - added['inline']:.1f} ns per wait call "
          f"({added['inline'] / added['method']:.2f}x the method's cost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
