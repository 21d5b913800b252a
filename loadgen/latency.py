"""Latency histograms: the only module that knows HdrHistogram.

Workers do not call HdrHistogram per message: its pure-Python record_value
costs about 0.8 µs (measured here), more than half of what a whole echo
costs the load generator in user time. A worker appends each latency, in
ns, to an array('q') (about 0.04 µs; a dict of integer-µs buckets costs
about 0.06 µs with the division), and `record_ns` feeds the histogram in
bulk: numpy counts the distinct µs values, then one record_value(value,
count) per distinct value. That is exactly the histogram recording every
value would give. Workers flush at the end of the window, and inside it
only when the array holds FLUSH_VALUES latencies (memory stays bounded):
a flush pauses the worker 15-50 ms per million values, so the buffer is
large enough that a window of 20 s at 200k msgs/s never flushes. `merge` of
the workers' encoded histograms is exact too (counts add bucket by bucket).

Range: 1 µs to 60 s, 3 significant digits. A value above 60 s is recorded
as 60 s (and so is counted, not lost).
"""

from __future__ import annotations

from array import array

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
FLUSH_VALUES = 1 << 22     # latencies a worker buffers before a bulk flush (32 MiB)
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_ns(hist: HdrHistogram, values_ns: array) -> None:
    """Add latencies in ns (an array('q')) to hist, in whole µs; empty the array.

    numpy counts the distinct values; HdrHistogram then takes one
    record_value(value, count) per distinct value.
    """
    if not values_ns:
        return
    view = np.frombuffer(values_ns, dtype=np.int64)
    us = np.clip(view // 1000, 0, HIGHEST_US)
    del view                                 # release the buffer before resizing the array
    del values_ns[:]
    values, counts = np.unique(us, return_counts=True)
    for value, n in zip(values.tolist(), counts.tolist()):
        hist.record_value(value, n)


def encode(hist: HdrHistogram) -> str:
    """The standard compressed, base64 HdrHistogram V2 encoding (ASCII)."""
    return hist.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


def merge(encoded: list[str]) -> HdrHistogram:
    """Exact sum of encoded histograms."""
    total = new_histogram()
    for text in encoded:
        hist = decode(text)
        if hist.get_total_count():           # an empty one would reset the minimum to 0
            total.add(hist)
    return total


def summary(hist: HdrHistogram) -> dict[str, float | None]:
    """{p50, p90, p99, p999, max, mean} in µs; all None without samples."""
    if hist.get_total_count() == 0:
        return {**{k: None for k in PERCENTILES}, "max": None, "mean": None}
    out: dict[str, float | None] = {k: float(hist.get_value_at_percentile(p))
                                    for k, p in PERCENTILES.items()}
    out["max"] = float(hist.get_max_value())
    out["mean"] = round(hist.get_mean_value(), 3)
    return out

