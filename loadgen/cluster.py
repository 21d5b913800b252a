"""run(spec) with the workers on a Dask `distributed` cluster (`--cluster tcp://HOST:PORT`).

Dask places the tasks, carries the messages and notices dead workers; each
task runs one of our worker processes on its host (loadgen/remote.py). The
parent (this process, on the server's host):

1. connects to the scheduler and picks the client hosts (`--hosts N`, the
   first N by address, default all) and one Dask worker thread per worker
   process, interleaved over the hosts, so connections spread evenly;
2. collects every worker's "connected" from the run's Queue;
3. puts the start instant T (its wall clock + START_LEAD_S) in a Variable
   and sets the Event: every host turns T into its own monotonic t0, so all
   windows are [T+W, T+W+D] on synchronised wall clocks; SIGUSR1 goes to
   --signal-pid at those instants on this host;
4. gathers the results; a task that errs, or whose Dask worker leaves the
   cluster, fails the point at once and the others are aborted.

The document is run.merge's, with additions: `workers[].host` (the client
host's address), `workers[].worker_address` (the Dask worker), `workers[].bytes_sent_total`
and `workers[].latency_samples` (to check against the server and the merged histogram),
`start_skew_s` (latest minus earliest window start over the hosts, on
their wall clocks: as good as their clock synchronisation), `cluster`
({scheduler, hosts: [{host, kernel, cpu_count, python, packages, ...}]}).
Here `window_s` is the intersection of the workers' windows, and
`window_start_monotonic_s` / `window_end_monotonic_s` are its bounds on
this host's monotonic clock.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from urllib.parse import urlsplit

from servers.sysutil import utc_now

from . import latency, loop, remote
from .run import RESULT_MARGIN_S, START_DEADLINE_S, _signal, merge
from .spec import LoadSpec, SpecError

SCHEMES = ("tcp",)
CONNECT_TIMEOUT_S = 5.0       # reaching the scheduler
START_LEAD_S = 0.5            # from the Event to T: every host is waiting by then
TASK_START_S = 10.0           # Dask: a task reaches its worker and starts its child
RESULT_HOP_S = 1.0            # a result's way back through Dask
WATCH_S = 0.25                # how often the parent looks at the cluster
ABORT_GRACE_S = 3.0           # aborted tasks: time to stop their children


class ClusterError(Exception):
    """The cluster cannot run this point; the text names the fix. usage: exit 2, else 1."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


def parse_address(text: str) -> str:
    """'tcp://HOST:PORT' -> the same, checked; SpecError (usage) otherwise."""
    if "://" not in text:
        raise SpecError(f"--cluster {text!r}: write the scheduler's address as "
                        "tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786")
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise SpecError(f"--cluster {text!r}: unknown scheme {parts.scheme!r}: "
                        "use tcp://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path or parts.query or not 1 <= port <= 65535:
        raise SpecError(f"--cluster {text!r} is not tcp://HOST:PORT (port 1-65535), "
                        "e.g. tcp://10.0.0.5:8786")
    return text


def connect(address: str):
    """A distributed.Client on the scheduler, or ClusterError naming the address."""
    from distributed import Client
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({reason[:120]}): "
                           f"start `dask scheduler` there and `dask worker {address}` on each "
                           "client host, or fix --cluster") from None


def workers_by_host(client) -> dict[str, list[tuple[str, int]]]:
    """{host: [(dask worker address, threads)]} of the cluster, sorted."""
    hosts: dict[str, list] = {}
    for addr, w in sorted(client.scheduler_info(n_workers=-1)["workers"].items()):
        hosts.setdefault(w["host"], []).append((addr, w["nthreads"]))
    return dict(sorted(hosts.items()))


def describe(client, hosts: list[str]) -> list[dict]:
    """host_facts() of each chosen host, as seen by one of its Dask workers."""
    by_host = workers_by_host(client)
    first = {by_host[h][0][0]: h for h in hosts}
    facts = client.run(remote.host_facts, workers=list(first))
    return [{"host": first[a], **facts[a]} for a in first]


def choose(by_host: dict, want_hosts: int | None, procs: int, address: str) -> list[tuple]:
    """[(host, dask worker)] one slot per worker process, interleaved over the hosts."""
    if not by_host:
        raise ClusterError(f"the Dask scheduler at {address} has no workers: start "
                           f"`dask worker {address} --nthreads 1` on each client host")
    if want_hosts is not None and want_hosts > len(by_host):
        raise ClusterError(f"--hosts {want_hosts}: the cluster at {address} has "
                           f"{len(by_host)} client host(s) ({', '.join(by_host)}): lower "
                           "--hosts or start dask worker on more hosts", usage=True)
    chosen = list(by_host)[:want_hosts or len(by_host)]
    per_host = [[(h, a) for a, threads in by_host[h] for _ in range(threads)] for h in chosen]
    slots = [s for k in range(max(map(len, per_host))) for row in per_host if k < len(row)
             for s in [row[k]]]
    if procs > len(slots):
        raise ClusterError(f"--procs {procs}: the {len(chosen)} host(s) chosen offer "
                           f"{len(slots)} Dask worker threads: lower --procs or start "
                           "dask worker with more --nworkers", usage=True)
    return slots[:procs]


class _Got:
    """What run.merge reads: per worker, {kind: payload}."""

    def __init__(self, n: int):
        self.got: list[dict] = [{} for _ in range(n)]


def run(client, spec: LoadSpec, address: tuple, family: int, slots: list[tuple],
        cluster: str) -> dict:
    """One load-generator run on `slots` (from choose); the JSON document (module docstring)."""
    from distributed import Event, Queue, Variable
    facts = describe(client, list(dict.fromkeys(h for h, _ in slots)))
    started_at = utc_now("milliseconds")
    run_id = uuid.uuid4().hex[:12]
    n = remote.names(run_id)
    state, start, queue, go_event = Variable(n["state"], client), Variable(n["t0"], client), \
        Queue(n["queue"], client), Event(n["go"], client)
    state.set("connect")
    got = _Got(spec.workers)
    result_s = spec.warmup_s + spec.duration_s + loop.DRAIN_S + RESULT_MARGIN_S + START_LEAD_S
    futures = []
    for i, (host, dask_worker) in enumerate(slots):
        spec_i = spec
        if spec.cpus:      # pinned by its rank on its own host
            rank = sum(1 for h, _ in slots[:i] if h == host)
            spec_i = replace(spec, cpus=(spec.cpus[rank % len(spec.cpus)],))
        futures.append(client.submit(
            remote.task, i, spec_i, address, family, run_id, START_DEADLINE_S, result_s,
            key=f"loadgen-{run_id}-{i}", workers=[dask_worker], allow_other_workers=False,
            pure=False, retries=0))
    signals = None
    went = False
    try:
        deadline = time.monotonic() + TASK_START_S + START_DEADLINE_S
        while not all(got.got[i] for i in range(spec.workers)) and time.monotonic() < deadline:
            _drain_queue(queue, got)
            _watch(client, futures, slots, got)
        established = sum(g.get("connected", {}).get("established", 0) for g in got.got)
        failed = any("error" in g for g in got.got)
        went = established > 0 and not failed and all("connected" in g for g in got.got)
        t0_wall = time.time_ns() + int(START_LEAD_S * 1e9)
        start.set(t0_wall)
        state.set("go" if went else "abort")
        go_event.set()
        mono_minus_wall = time.monotonic_ns() - time.time_ns()
        ws = t0_wall + mono_minus_wall + int(spec.warmup_s * 1e9)
        we = ws + int(spec.duration_s * 1e9)
        if went and spec.signal_pid is not None:
            signals = {"start_monotonic_s": None, "end_monotonic_s": None, "errors": []}
            for key, at in (("start_monotonic_s", ws), ("end_monotonic_s", we)):
                while time.monotonic_ns() < at and not _watch(client, futures, slots, got):
                    time.sleep(min(WATCH_S, max(0.0, (at - time.monotonic_ns()) / 1e9)))
                signals[key] = _signal(spec.signal_pid, signals["errors"])
        if went:
            deadline = we / 1e9 + loop.DRAIN_S + RESULT_MARGIN_S + RESULT_HOP_S
            bad = False
            while time.monotonic() < deadline and not all(f.done() for f in futures):
                bad = _watch(client, futures, slots, got)
                if bad:
                    break
                time.sleep(WATCH_S)
            _collect(futures, got)
            for i, g in enumerate(got.got):
                if "connected" in g and not ("result" in g or "error" in g):
                    g["error"] = ("stopped: another client host failed" if bad else
                                  f"no result from client host {slots[i][0]} within "
                                  f"{deadline - we / 1e9:.0f} s of the window's end")
    finally:
        if state.get() != "abort" and not all(f.done() for f in futures):
            state.set("abort")
        if not went:
            go_event.set()
        _settle(futures)
        client.cancel(futures, force=True)
        for v in (state, start):
            v.delete()
    doc = merge(spec, got, signals, started_at, went)
    return _annotate(doc, got, slots, spec, cluster, facts, mono_minus_wall)


def _drain_queue(queue, got: _Got) -> None:
    try:
        items = queue.get(timeout=WATCH_S, batch=True)
    except TimeoutError:
        return
    if not items:
        time.sleep(WATCH_S)
    for index, kind, payload in items:
        got.got[index][kind] = payload


def _watch(client, futures, slots, got: _Got) -> bool:
    """True when some worker failed: its task erred, or its Dask worker left."""
    alive = set(client.scheduler_info(n_workers=-1)["workers"])
    bad = False
    for i, f in enumerate(futures):
        g = got.got[i]
        if "error" in g:
            bad = True
        elif slots[i][1] not in alive:
            g["error"] = (f"the Dask worker {slots[i][1]} on client host {slots[i][0]} left "
                          "the cluster mid-point (killed, or its host is gone)")
            bad = True
        elif f.status == "error":
            g["error"] = f"task on {slots[i][0]} failed: {f.exception()!r}"
            bad = True
        elif f.status == "finished" and "result" not in g:
            out = f.result()
            if "error" in out:
                g["error"] = f"on {slots[i][0]}: {out['error']}"
                bad = True
    return bad


def _collect(futures, got: _Got) -> None:
    for i, f in enumerate(futures):
        if f.status == "finished" and not got.got[i].get("error"):
            out = f.result()
            if "result" in out:
                got.got[i]["result"] = out["result"]
            elif "error" in out:
                got.got[i]["error"] = out["error"]


def _settle(futures) -> None:
    """Give aborted tasks a moment to stop their children before we leave."""
    deadline = time.monotonic() + ABORT_GRACE_S
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        time.sleep(0.05)


def _annotate(doc, got, slots, spec, cluster, facts, mono_minus_wall) -> dict:
    results = [g["result"] for g in got.got if "result" in g]
    windows = [r for r in results if r["window_start_ns"] is not None]
    if windows:
        starts = [r["window_start_ns"] for r in windows]
        start_ns, end_ns = max(starts), min(r["window_end_ns"] for r in windows)
        end_ns = max(end_ns, start_ns)
        window_s = (end_ns - start_ns) / 1e9
        doc["start_skew_s"] = round((max(starts) - min(starts)) / 1e9, 6)
        doc["window_s"] = round(window_s, 6)
        doc["window_start_monotonic_s"] = (start_ns + mono_minus_wall) / 1e9
        doc["window_end_monotonic_s"] = (end_ns + mono_minus_wall) / 1e9
        per_s = (lambda k: round(k / window_s, 3) if window_s > 0 else None)
        doc["throughput_msgs_s"] = doc["rate"]["achieved"] = per_s(doc["messages"])
        doc["rate"]["written"] = per_s(sum(r["written_msgs"] for r in results))
        if spec.rate_msgs_s:
            doc["rate"]["scheduled"] = per_s(sum(r["scheduled_msgs"] for r in results))
    else:
        doc["start_skew_s"] = None
    by_index = {r["index"]: r for r in results}
    for w in doc["workers"]:
        host, dask_worker = slots[w["index"]]
        w["host"] = host
        w["worker_address"] = dask_worker
        r = by_index.get(w["index"])
        w["bytes_sent_total"] = r["bytes_sent_total"] if r else None
        w["latency_samples"] = latency.decode(r["latency_hdr"]).get_total_count() if r else None
        if spec.cpus:
            rank = sum(1 for h, _ in slots[:w["index"]] if h == host)
            w["cpu"] = spec.cpus[rank % len(spec.cpus)]
    doc["cluster"] = {"scheduler": cluster, "hosts": facts}
    return doc

