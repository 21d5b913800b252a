"""run(spec) -> the load generator's JSON document: workers, phases, merge.

The parent forks the workers, waits for every one to report its connect
phase, gives them one start time t0 on CLOCK_MONOTONIC, optionally sends
SIGUSR1 to the server at the window's start and end, collects the workers'
results and merges them. Every wait has a deadline; on every exit path the
workers still alive are killed.

JSON document, format 1 (names carry their unit; counts are integers):

- `format` 1; `target` "HOST:PORT"; `config` the parsed arguments (LoadSpec
  fields, plus `active` = round(N*R) and `target`); `started_at`, `ended_at`
  (ISO-8601 UTC).
- `window_s`: the window actually observed: from the earliest worker's
  first loop pass at or after t0+warmup to the latest worker's first pass
  at or after the window's planned end. `window_start_monotonic_s`,
  `window_end_monotonic_s`: those two instants on CLOCK_MONOTONIC (the
  clock of Python's time.monotonic() in every process of the machine).
  `signals`: {start_monotonic_s, end_monotonic_s, errors} when
  --signal-pid was given (when SIGUSR1 was sent), else null.
- `messages`: echoes completed and verified inside the window;
  `bytes_sent`, `bytes_received`: inside the window; `bytes_sent_total`,
  `bytes_received_total`: every phase (warmup and drain included), bytes
  the kernel took or returned, to match a server's bytes_in / bytes_out.
- `throughput_msgs_s` = messages / window_s.
- `latency_us`: {p50, p90, p99, p999, max, mean} of the window's echoes
  (null without samples); `latency_samples`; `latency_hdr`: the merged
  HdrHistogram (1 µs..60 s, 3 digits), standard base64 V2 encoding, values
  in µs. Closed loop: from the send of a message to the end of its echo.
  Open loop: from the message's *intended* send time (no coordinated
  omission: a stalled server shows as latency).
- `rate`: {target (msgs/s or null for closed loop), arrivals, achieved
  (= throughput_msgs_s), written (messages handed to the sockets in the
  window, per s), scheduled (open loop: intended sends in the window, per
  s, else null)}.
- `connections`: {requested, established (connect phase), active
  (round(N*R)), idle (N - active), active_established, idle_established,
  idle_open_at_end, active_open_at_end, echoing (active connections with
  at least one verified echo), retries (connect attempts repeated)}.
- `connect_s`: the longest worker's connect phase.
- `errors` {kind: count}. Connections that never opened: `refused`,
  `addr_not_available`, `connect_timeout`, `no_fds`, `connect_other`.
  Connections lost later: `reset` (ECONNRESET/EPIPE), `closed_by_server`
  (EOF between messages; what `select` does past FD_SETSIZE), `short_read`
  (EOF inside a message), `other`. `timeout`: open connections with
  messages still unanswered at the end of the drain. `corrupt`: messages
  whose echo differed from what was sent (also bytes on an idle
  connection). `corrupt` is repeated at the top level.
- `unanswered_msgs`: messages written and never echoed (timeouts and lost
  connections); `backlog_overflow_msgs`: open-loop sends dropped because a
  worker already owed OPEN_BACKLOG messages.
- `workers`: one entry per worker started (min(P, N) of them): [{index,
  pid, cpu (pinned to, or null), connections, established, messages,
  cpu_user_s, cpu_sys_s (over its window), cpu_util (of one core, over its
  window; null without a window), window_s, measured (it sent a result)}].
- `saturated`: a worker used >= 90% of a core: the point measures the
  load generator, not the server.
- `failed`, `failure`: true and the reasons ("; "-joined) when any of:
  a connection did not open, a connection was lost (idle or active),
  corrupt > 0, timeout > 0, no echo at all with active connections, a
  worker failed, open-loop backlog overflow. Otherwise false and null. The
  measures are reported in full either way.
- `timeline`: [{t_s, worker, messages, bytes}] per 100 ms of the window
  (t_s = start of the interval from the window start; bytes received).
  The entries add up to `messages` and `bytes_received`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait as wait_pipes

from servers.sysutil import utc_now

from . import connect, latency, loop, worker
from .spec import LoadSpec

FORMAT = 1
GO_DELAY_S = 0.05              # from "go" to t0: every worker is waiting by then
START_DEADLINE_S = connect.CONNECT_DEADLINE_S + 5.0   # fork + connect phase
RESULT_MARGIN_S = 3.0          # after the drain: final check, histograms, pickling
SATURATED = 0.9                # of one core


class _Inbox:
    """Messages from the workers, read with deadlines; a dead worker is noticed."""

    def __init__(self, procs, pipes):
        self.procs = procs
        self.pipes = pipes
        self.got: list[dict] = [{} for _ in pipes]      # worker -> {kind: payload}
        self.gone = [False] * len(pipes)

    def done(self, i: int, kind: str | None) -> bool:
        g = self.got[i]
        return self.gone[i] or "error" in g or "result" in g or (kind is not None and kind in g)

    def pump(self, deadline_ns: int, kind: str | None) -> None:
        """Read until deadline_ns, or until every worker sent `kind` (or finished)."""
        while True:
            if all(self.done(i, kind) for i in range(len(self.pipes))):
                return
            live = [p for i, p in enumerate(self.pipes) if not self.gone[i]]
            left = (deadline_ns - time.monotonic_ns()) / 1e9
            if left <= 0 or not live:
                return
            for p in wait_pipes(live, left):
                i = self.pipes.index(p)
                try:
                    msg_kind, payload = p.recv()
                except (EOFError, OSError):
                    self.gone[i] = True
                    continue
                self.got[i][msg_kind] = payload


def run(spec: LoadSpec, address: tuple, family: int) -> dict:
    """One load-generator run; returns the JSON document (see the module docstring)."""
    started_at = utc_now("milliseconds")
    ctx = multiprocessing.get_context("fork")
    procs, pipes = [], []
    signals = None
    try:
        for i in range(spec.workers):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=worker.main, name=f"loadgen-worker-{i}", daemon=True,
                            args=(i, spec, address, family, child_end, os.getpid()))
            p.start()
            child_end.close()
            procs.append(p)
            pipes.append(parent_end)
        inbox = _Inbox(procs, pipes)
        inbox.pump(time.monotonic_ns() + int(START_DEADLINE_S * 1e9), "connected")
        established = sum(g.get("connected", {}).get("established", 0) for g in inbox.got)
        go = established > 0
        t0 = time.monotonic_ns() + int(GO_DELAY_S * 1e9)
        for i, p in enumerate(pipes):
            if not inbox.done(i, None):
                try:
                    p.send(("go", t0) if go else ("abort",))
                except OSError:
                    inbox.gone[i] = True
        ws = t0 + int(spec.warmup_s * 1e9)
        we = ws + int(spec.duration_s * 1e9)
        if go and spec.signal_pid is not None:
            signals = {"start_monotonic_s": None, "end_monotonic_s": None, "errors": []}
            for key, at in (("start_monotonic_s", ws), ("end_monotonic_s", we)):
                inbox.pump(at, None)
                signals[key] = _signal(spec.signal_pid, signals["errors"])
        if go:
            inbox.pump(we + int((loop.DRAIN_S + RESULT_MARGIN_S) * 1e9), "result")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)
    return merge(spec, inbox, signals, started_at, go)


def _signal(pid: int, errors: list) -> float | None:
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as e:
        errors.append(f"SIGUSR1 to {pid}: {e.strerror}")
        return None
    return time.monotonic()





def merge(spec: LoadSpec, inbox: _Inbox, signals: dict | None, started_at: str,
          went: bool) -> dict:
    failures: list[str] = []
    results = []
    for i, g in enumerate(inbox.got):
        if "result" in g:
            results.append(g["result"])
        elif "error" in g:
            failures.append(f"worker {i} failed: {g['error'].strip().splitlines()[-1]}")
        elif "connected" not in g:
            failures.append(f"worker {i} did not finish its connect phase "
                            f"within {START_DEADLINE_S:.0f} s")
        elif went:
            failures.append(f"worker {i} sent no result within "
                            f"{loop.DRAIN_S + RESULT_MARGIN_S:.0f} s of the window's end")

    connected = [g.get("connected", {}) for g in inbox.got]
    errors = dict.fromkeys(connect.CONNECT_KINDS + loop.RUN_KINDS, 0)
    for i, g in enumerate(inbox.got):
        src = g["result"]["errors"] if "result" in g else connected[i].get("errors", {})
        for k, v in src.items():
            errors[k] = errors.get(k, 0) + v

    def total(key: str) -> int:
        return sum(r[key] for r in results)

    windows = [r for r in results if r["window_start_ns"] is not None]
    if windows:
        start_ns = min(r["window_start_ns"] for r in windows)
        end_ns = max(r["window_end_ns"] for r in windows)
    else:
        start_ns = end_ns = time.monotonic_ns()
    window_s = (end_ns - start_ns) / 1e9
    messages = total("messages")
    per_s = (lambda n: n / window_s if window_s > 0 else None)

    hist = latency.merge([r["latency_hdr"] for r in results])
    conns = {
        "requested": spec.connections,
        "established": sum(c.get("established", 0) for c in connected),
        "active": spec.active,
        "idle": spec.connections - spec.active,
        "active_established": 0, "idle_established": 0,
        "idle_open_at_end": 0, "active_open_at_end": 0, "echoing": 0,
        "retries": sum(c.get("retries", 0) for c in connected),
    }
    for r in results:
        rc = r["connections"]
        conns["active_established"] += rc["active_established"]
        conns["idle_open_at_end"] += rc["idle_open_at_end"]
        conns["active_open_at_end"] += rc["active_open_at_end"]
        conns["echoing"] += rc["echoing"]
    conns["idle_established"] = conns["established"] - conns["active_established"]

    workers = []                          # every worker started, measured or not
    by_index = {r["index"]: r for r in results}
    for i in range(spec.workers):
        r = by_index.get(i)
        w_s = user = sys_ = 0.0
        if r is not None and r["window_start_ns"] is not None:
            w_s = (r["window_end_ns"] - r["window_start_ns"]) / 1e9
            user, sys_ = r["cpu_user_s"], r["cpu_sys_s"]
        workers.append({
            "index": i, "pid": connected[i].get("pid"),
            "cpu": spec.cpus[i % len(spec.cpus)] if spec.cpus else None,
            "connections": spec.share(i)[0],
            "established": connected[i].get("established", 0),
            "messages": r["messages"] if r else 0,
            "cpu_user_s": round(user, 6), "cpu_sys_s": round(sys_, 6),
            "cpu_util": round((user + sys_) / w_s, 4) if w_s > 0 else None,
            "window_s": round(w_s, 6),
            "measured": r is not None,
        })
    saturated = any((w["cpu_util"] or 0) >= SATURATED for w in workers)

    # -- is the point good? --------------------------------------------------
    if conns["established"] < spec.connections:
        lost = {k: errors[k] for k in connect.CONNECT_KINDS if errors[k]}
        hint = (f": is a server listening on {spec.host}:{spec.port}?"
                if errors["refused"] else "")
        failures.append(f"only {conns['established']} of {spec.connections} connections "
                        f"opened ({_kinds(lost) or 'not attempted'}){hint}")
    if went and results:
        idle_lost = conns["idle_established"] - conns["idle_open_at_end"]
        active_lost = conns["active_established"] - conns["active_open_at_end"]
        if conns["established"] and not conns["idle_open_at_end"] + conns["active_open_at_end"]:
            failures.append("every connection was lost: did the server exit?")
        if idle_lost or active_lost:
            how = {k: errors[k] for k in ("reset", "closed_by_server", "short_read", "other")
                   if errors[k]}
            failures.append(f"connections lost: {idle_lost} idle and {active_lost} active "
                            f"({_kinds(how)})")
    if errors["corrupt"]:
        failures.append(f"{errors['corrupt']} corrupt echoes (bytes differ from those sent)")
    if errors["timeout"]:
        failures.append(f"server stopped answering: {total('timeout_msgs')} messages on "
                        f"{errors['timeout']} connections unanswered {loop.DRAIN_S:.0f} s "
                        "after the window")
    if went and results and spec.active and conns["active_established"] and messages == 0:
        failures.append("no echo completed in the window")
    overflow = total("backlog_overflow_msgs")
    if overflow:
        failures.append(f"open loop: {overflow} sends dropped, more than "
                        f"{loop.OPEN_BACKLOG} owed per worker: lower --rate")

    timeline = [{"t_s": t, "worker": r["index"], "messages": m, "bytes": b}
                for r in results for (t, m, b) in r["timeline"]]
    written = total("written_msgs")
    return {
        "format": FORMAT,
        "target": f"{spec.host}:{spec.port}",
        "config": spec.to_config(),
        "started_at": started_at,
        "ended_at": utc_now("milliseconds"),
        "window_s": round(window_s, 6),
        "window_start_monotonic_s": start_ns / 1e9,
        "window_end_monotonic_s": end_ns / 1e9,
        "signals": signals,
        "messages": messages,
        "bytes_sent": total("bytes_sent"),
        "bytes_received": total("bytes_received"),
        "bytes_sent_total": total("bytes_sent_total"),
        "bytes_received_total": total("bytes_received_total"),
        "throughput_msgs_s": _r(per_s(messages)),
        "latency_us": latency.summary(hist),
        "latency_samples": hist.get_total_count(),
        "latency_hdr": latency.encode(hist),
        "rate": {
            "target": spec.rate_msgs_s,
            "arrivals": spec.arrivals if spec.rate_msgs_s is not None else None,
            "achieved": _r(per_s(messages)),
            "written": _r(per_s(written)),
            "scheduled": _r(per_s(total("scheduled_msgs"))) if spec.rate_msgs_s else None,
        },
        "connections": conns,
        "connect_s": round(max((c.get("connect_s", 0.0) for c in connected), default=0.0), 6),
        "errors": errors,
        "corrupt": errors["corrupt"],
        "unanswered_msgs": total("unanswered_msgs"),
        "backlog_overflow_msgs": overflow,
        "workers": workers,
        "saturated": saturated,
        "failed": bool(failures),
        "failure": "; ".join(failures) or None,
        "timeline": timeline,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _kinds(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())
