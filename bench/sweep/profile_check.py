"""Profile field checks: a wrong value becomes a one-line ProfileError (file, field, allowed values)."""

from __future__ import annotations

import math
import resource

import servers
from loadgen.spec import MAX_MSG_SIZE, MAX_PROCS, MAX_SOURCES, ephemeral_ports

FD_HEADROOM = 64           # the server's own descriptors (listener, poller, stdio, files) and more
MAX_REPETITIONS = 1000     # more repetitions than this is a mistake, not a measurement
MAX_AXIS_VALUES = 1000     # values of one axis (a list or a range)
MAX_POINTS = 100_000       # sweep points of one profile (every axis x mechanism x repetition)
_SIZE_WHY = "the load generator's largest message (loadgen/spec.py MAX_MSG_SIZE)"


class ProfileError(ValueError):
    """A profile that cannot run: the message names file, field and allowed values."""


class FieldChecker:
    """Field checks that raise one-line ProfileErrors."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, value, allowed: str):
        raise ProfileError(f"{self.source}: {field}: {value!r} is not allowed; allowed: {allowed}")

    def known(self, table: dict, fields: tuple, where: str) -> None:
        for key in table:
            if key not in fields:
                raise ProfileError(f"{self.source}: {where}{key}: unknown field; "
                                   f"allowed: {', '.join(fields)}")

    def integer(self, t, key, low, where="", default=None, high=None, why=""):
        if key not in t:
            return default
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            self.fail(where + key, v, f"a whole number >= {low}")
        if high is not None and v > high:
            self.over(where + key, v, high, why)
        return v

    def over(self, field: str, value, limit, why: str):
        raise ProfileError(f"{self.source}: {field}: {value} is above the limit {limit}"
                           f"{': ' + why if why else ''}")

    def number(self, t, key, low, where="", default=None, open_low=False, high=None):
        if key not in t:
            return default
        v = t[key]
        ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
              and (v > low if open_low else v >= low) and (high is None or v <= high))
        if not ok:
            bound = f"> {low}" if open_low else f">= {low}"
            self.fail(where + key, v, f"a number {bound}" + (f" and <= {high}" if high else ""))
        return float(v)

    def _list(self, t, key, where):
        v = t[key]
        values = v if isinstance(v, list) else [v]
        if not values:
            raise ProfileError(f"{self.source}: {where}{key}: empty list; give at least one value")
        if len(values) > MAX_AXIS_VALUES:
            self.over(where + key, f"{len(values)} values", MAX_AXIS_VALUES,
                      "values of one axis; split the sweep into several runs")
        return values

    def integers(self, t, key, low, where, default, high=None, why=""):
        if key not in t:
            return default
        return tuple(self.integer({key: v}, key, low, where, high=high, why=why)
                     for v in self._list(t, key, where))

    def msg_sizes(self, t, low, where) -> tuple[int, ...]:
        return self.integers(t, "msg_size", low, where, default=(64,), high=MAX_MSG_SIZE,
                             why=_SIZE_WHY)

    def numbers(self, t, key, low, where, default, high=None, open_low=False):
        if key not in t:
            return default
        return tuple(self.number({key: v}, key, low, where, high=high, open_low=open_low)
                     for v in self._list(t, key, where))

    def connections(self, t, where) -> tuple[int, ...]:
        if "connections" not in t:
            raise ProfileError(f"{self.source}: {where}connections: missing; give a count, "
                               "a list, or {from = N, to = M, step = K}")
        high, why = connection_limit()
        v = t["connections"]
        if not isinstance(v, dict):
            return self.integers(t, "connections", 1, where, default=(), high=high, why=why)
        self.known(v, ("from", "to", "step"), where + "connections.")
        lo, hi, step = (self.integer(v, k, 1, where + "connections.") for k in ("from", "to", "step"))
        if None in (lo, hi, step) or hi < lo:
            raise ProfileError(f"{self.source}: {where}connections: a range needs whole numbers "
                               "from <= to and step >= 1, e.g. {from = 900, to = 1100, step = 20}")
        if hi > high:
            self.over(where + "connections.to", hi, high, why)
        if (hi - lo) // step + 1 > MAX_AXIS_VALUES:     # counted before a value is made
            self.over(where + "connections", f"{(hi - lo) // step + 1} values", MAX_AXIS_VALUES,
                      "values of one axis; raise step or narrow the range")
        return tuple(range(lo, hi + 1, step))

    def cluster(self, t, key) -> str | None:
        if key not in t:
            return None
        from loadgen.cluster import parse_address
        from loadgen.spec import SpecError
        v = t[key]
        if not isinstance(v, str):
            self.fail(key, v, "a Dask scheduler address tcp://HOST:PORT")
        try:
            return parse_address(v)
        except SpecError:
            self.fail(key, v, "a Dask scheduler address tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786")

    def mechanisms(self, t, key, default, where=""):
        if key not in t:
            return default
        v = t[key]
        known = {**servers.MECHANISMS, **servers.REFERENCES}
        allowed = ", ".join(known)
        if not isinstance(v, list) or not v:
            self.fail(where + key, v, f"a list of one or more of {allowed}")
        for m in v:
            if m not in known:
                self.fail(where + key, m, allowed)
        if len(set(v)) != len(v):
            raise ProfileError(f"{self.source}: {where}{key}: {v!r} names a mechanism twice; "
                               "give each once")
        return tuple(v)


def connection_limit() -> tuple[int, str]:
    """The most connections one point may hold on this machine, and why that many.

    The server holds every connection in one process, so its descriptor limit
    (the hard RLIMIT_NOFILE, which the sweep raises the soft one to) minus
    headroom; and the load generator reaches one loopback target from its
    MAX_SOURCES source addresses times the ephemeral ports.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ports = MAX_SOURCES * ephemeral_ports()
    if hard == resource.RLIM_INFINITY or hard - FD_HEADROOM > ports:
        return ports, (f"the load generator reaches one target from {MAX_SOURCES} loopback "
                       f"addresses x {ports // MAX_SOURCES} ephemeral ports")
    return hard - FD_HEADROOM, (f"the descriptor limit {hard} (hard RLIMIT_NOFILE) minus "
                                f"{FD_HEADROOM} for the server's own; the server holds every "
                                "connection in one process")


def check_procs(source: str, procs: int | None, experiments) -> None:
    """procs at most MAX_PROCS and at most the fewest connections of any sweep point."""
    if procs is None:
        return
    if procs > MAX_PROCS:
        raise ProfileError(f"{source}: procs: {procs} is above the limit {MAX_PROCS}: each "
                           "load-generator worker is a Python process of its own")
    fewest = min((n for e in experiments if not e.is_task for n in e.connections), default=None)
    if fewest is not None and procs > fewest:
        raise ProfileError(f"{source}: procs: {procs} is above the limit {fewest}, the fewest "
                           "connections of any point: a worker without a connection measures "
                           "nothing")


def check_points(source: str, experiments) -> None:
    """The sweep's point count, counted before one point is made."""
    total = 0
    for e in experiments:
        if e.is_task:
            continue
        n = (len(e.connections) * len(e.active or e.active_ratio) * len(e.msg_size)
             * len(e.rate) * len(e.mechanisms) * e.repetitions)
        total += n
        if total > MAX_POINTS:
            raise ProfileError(f"{source}: experiment[{e.index}]: the sweep reaches {total} points,"
                               f" above the limit {MAX_POINTS}: fewer axis values, mechanisms or "
                               "repetitions, or several runs")
