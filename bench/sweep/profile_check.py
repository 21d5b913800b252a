"""Profile field checks: a wrong value becomes a one-line ProfileError (file, field, allowed values)."""

from __future__ import annotations

import math

import servers


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

    def integer(self, t, key, low, where="", default=None):
        if key not in t:
            return default
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            self.fail(where + key, v, f"a whole number >= {low}")
        return v

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
        return values

    def integers(self, t, key, low, where, default):
        if key not in t:
            return default
        return tuple(self.integer({key: v}, key, low, where) for v in self._list(t, key, where))

    def numbers(self, t, key, low, where, default, high=None, open_low=False):
        if key not in t:
            return default
        return tuple(self.number({key: v}, key, low, where, high=high, open_low=open_low)
                     for v in self._list(t, key, where))

    def connections(self, t, where) -> tuple[int, ...]:
        if "connections" not in t:
            raise ProfileError(f"{self.source}: {where}connections: missing; give a count, "
                               "a list, or {from = N, to = M, step = K}")
        v = t["connections"]
        if not isinstance(v, dict):
            return self.integers(t, "connections", 1, where, default=())
        self.known(v, ("from", "to", "step"), where + "connections.")
        lo, hi, step = (self.integer(v, k, 1, where + "connections.") for k in ("from", "to", "step"))
        if None in (lo, hi, step) or hi < lo:
            raise ProfileError(f"{self.source}: {where}connections: a range needs whole numbers "
                               "from <= to and step >= 1, e.g. {from = 900, to = 1100, step = 20}")
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
