"""python -m loadgen: argv -> LoadSpec -> run(spec) -> one JSON document.

The JSON (schema: loadgen/run.py) goes to --out, or to stdout; a short
summary and any warning go to stderr. Exit 0 for a good point, 1 for a
failed point or a runtime error (the JSON is still written), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys

from servers.cli import OneLineParser, die, is_loopback
from servers.sysutil import OutputPathError, check_output_path, raise_nofile_limit, write_json

from . import burst
from .run import run
from .spec import ARRIVALS, LoadSpec, SpecError, check, parse_cpus, parse_target

PROG = "python -m loadgen"


def _number(kind):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return convert


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Drive an echo server: N connections, "
                      "a share of them active, closed or open loop; report JSON.")
    p.add_argument("--target", required=True, metavar="HOST:PORT",
                   help="the echo server, e.g. 127.0.0.1:8000 (loopback only unless --allow-remote)")
    p.add_argument("--connections", type=_number(int), required=True, metavar="N",
                   help="connections to open and hold")
    p.add_argument("--active-ratio", type=_number(float), default=1.0, metavar="R",
                   help="share of connections that send, in [0, 1]; round(N*R) are active "
                        "(default 1.0)")
    p.add_argument("--msg-size", type=_number(int), default=64, metavar="BYTES",
                   help="message size in bytes, at least 16 (default 64)")
    p.add_argument("--duration", type=_number(float), default=10.0, metavar="SECONDS",
                   help="measured window (default 10)")
    p.add_argument("--warmup", type=_number(float), default=1.0, metavar="SECONDS",
                   help="load before the window, not measured (default 1)")
    p.add_argument("--procs", type=_number(int), metavar="P",
                   help="worker processes, each with its own loop (default 1; with --cluster, "
                        "one per Dask worker thread on the hosts used)")
    p.add_argument("--rate", type=_number(float), metavar="MSGS_PER_S",
                   help="open loop at this total send rate (default: closed loop)")
    p.add_argument("--arrivals", choices=ARRIVALS, metavar="fixed|poisson",
                   help="open-loop inter-arrival times (default fixed)")
    p.add_argument("--pipeline", type=_number(int), metavar="K",
                   help="messages in flight per active connection: closed loop keeps K, "
                        "open loop at most K, later sends wait their turn (default 1)")
    p.add_argument("--cpus", metavar="LIST",
                   help="pin the workers, round-robin, to these CPUs, e.g. 1-3,7")
    p.add_argument("--out", metavar="FILE", help="write the JSON here (default: stdout)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a target outside 127.0.0.0/8 and ::1")
    p.add_argument("--cluster", metavar="tcp://HOST:PORT",
                   help="run the workers on the client hosts of this Dask scheduler; "
                        "the target must then be the server host's address, not loopback")
    p.add_argument("--hosts", type=_number(int), metavar="N",
                   help="with --cluster: use the first N client hosts (default all)")
    p.add_argument("--signal-pid", type=_number(int), metavar="PID",
                   help="send SIGUSR1 to PID at the window's start and end (a server "
                        "started with --snapshots; any other process may die of it)")
    p.add_argument("--bursts", type=_number(int), metavar="B",
                   help="burst mode (loadgen/burst.py): B measured bursts, each written while "
                        "the server (--signal-pid) is stopped, then continued")
    p.add_argument("--burst-size", type=_number(int), metavar="K",
                   help="burst mode: connections written per burst, spread over --connections "
                        "(0: the stop/continue control)")
    p.add_argument("--warmup-bursts", type=_number(int), metavar="W",
                   help=f"burst mode: unmeasured bursts first (default {burst.WARMUP_BURSTS})")
    return p


# options of the closed and open loop that burst mode has no use for
NOT_IN_BURST_MODE = ("--active-ratio", "--duration", "--warmup", "--procs", "--rate",
                     "--arrivals", "--pipeline", "--cluster", "--hosts")


def parse_burst_spec(parser, args, argv: list[str]) -> burst.BurstSpec:
    """The burst mode's spec, or a usage error naming the option that does not fit."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    for opt in NOT_IN_BURST_MODE:
        if opt in given:
            parser.error(f"{opt} does not apply to burst mode (--bursts): drop it")
    if args.bursts is None or args.burst_size is None:
        parser.error("burst mode needs both --bursts B and --burst-size K")
    if args.signal_pid is None or args.signal_pid <= 0:
        parser.error("burst mode needs --signal-pid PID: the server it stops and continues")
    try:
        host, port = parse_target(args.target)
        cpus = parse_cpus(args.cpus) if args.cpus is not None else None
        return burst.check(burst.BurstSpec(
            host=host, port=port, connections=args.connections, burst_size=args.burst_size,
            bursts=args.bursts, signal_pid=args.signal_pid, msg_size=args.msg_size,
            warmup_bursts=(burst.WARMUP_BURSTS if args.warmup_bursts is None
                           else args.warmup_bursts),
            cpu=cpus[0] if cpus else None))
    except SpecError as e:
        parser.error(str(e))


def parse_spec(argv: list[str] | None) -> tuple[LoadSpec | burst.BurstSpec, argparse.Namespace]:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.bursts is not None or args.burst_size is not None or args.warmup_bursts is not None:
        return parse_burst_spec(parser, args, argv), args
    try:
        host, port = parse_target(args.target)
        if args.arrivals is not None and args.rate is None:
            raise SpecError("--arrivals applies to the open loop: give --rate too")
        if args.cluster is not None:
            from .cluster import parse_address
            parse_address(args.cluster)
            if is_loopback(host):
                raise SpecError(f"--target {args.target} is loopback: with --cluster the "
                                "workers run on other hosts; give the server host's address")
        elif args.hosts is not None:
            raise SpecError("--hosts applies to a cluster run: give --cluster too")
        if args.hosts is not None and args.hosts < 1:
            raise SpecError(f"--hosts {args.hosts}: give at least 1")
        if args.signal_pid is not None and args.signal_pid <= 0:
            raise SpecError(f"--signal-pid {args.signal_pid}: give a process id")
        spec = check(LoadSpec(
            host=host, port=port, connections=args.connections,
            active_ratio=args.active_ratio, msg_size=args.msg_size,
            duration_s=args.duration, warmup_s=args.warmup,
            procs=1 if args.procs is None else args.procs,
            rate_msgs_s=args.rate, arrivals=args.arrivals or "fixed",
            pipeline=1 if args.pipeline is None else args.pipeline,
            cpus=parse_cpus(args.cpus) if args.cpus is not None else None,
            signal_pid=args.signal_pid), here=args.cluster is None)
    except SpecError as e:
        parser.error(str(e))
    return spec, args


def resolve(spec: LoadSpec, allow_remote: bool) -> tuple[tuple, int]:
    """(sockaddr, family) of the target; non-loopback refused unless allowed.

    A name is looked up (a DNS query) only with --allow-remote: without it
    only a loopback address or `localhost` is accepted, so nothing leaves the
    machine to find out that the target is not allowed.
    """
    host = "127.0.0.1" if spec.host == "localhost" else spec.host
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if not allow_remote and not (literal is not None and literal.is_loopback):
        what = "a name (not looked up without --allow-remote)" if literal is None \
            else "not a loopback address"
        die(PROG, f"--target {spec.host} is {what}: give 127.0.0.1 or ::1, or pass "
                  "--allow-remote to load another machine", 2)
    try:
        infos = socket.getaddrinfo(host, spec.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        die(PROG, f"cannot resolve --target host {spec.host!r} ({why}): "
                  "give an address such as 127.0.0.1:8000", 2)
    family, _, _, _, sockaddr = infos[0]
    return sockaddr, family


def summary(doc: dict) -> str:
    lat = doc["latency_us"]
    c = doc["connections"]
    text = (f"{doc['target']}: {c['established']}/{c['requested']} connections "
            f"({c['active']} active) in {doc['connect_s']:.2f} s; "
            f"{doc['messages']:,} msgs in {doc['window_s']:.2f} s = "
            f"{doc['throughput_msgs_s'] or 0:,.0f} msg/s")
    if lat["p50"] is not None:
        text += f"  p50 {lat['p50']:,.0f} µs  p99 {lat['p99']:,.0f} µs  max {lat['max']:,.0f} µs"
    drain = (doc.get("bursts") or {}).get("drain_us") or {}
    if drain.get("p50") is not None:
        text += f"  drain per burst p50 {drain['p50']:,.0f} µs  p99 {drain['p99']:,.0f} µs"
    errors = {k: v for k, v in doc["errors"].items() if v}
    if errors:
        text += "  errors: " + ", ".join(f"{k} {v}" for k, v in errors.items())
    return text


def _run_cluster(spec: LoadSpec, address: tuple, family: int, args) -> dict:
    """The point on the cluster; its problems end in one line (exit 1, or 2 for usage)."""
    from dataclasses import replace

    from . import cluster
    try:
        client = cluster.connect(args.cluster)
    except cluster.ClusterError as e:
        die(PROG, str(e))
    try:
        by_host = cluster.workers_by_host(client)
        procs = args.procs
        if procs is None:           # one worker per Dask worker thread of the hosts used
            used = list(by_host.values())[:args.hosts or len(by_host)]
            procs = max(1, sum(t for ws in used for _, t in ws))
            spec = replace(spec, procs=procs)
        slots = cluster.choose(by_host, args.hosts, spec.workers, args.cluster)
        return cluster.run(client, spec, address, family, slots, args.cluster)
    except cluster.ClusterError as e:
        die(PROG, str(e), 2 if e.usage else 1)
    except OSError as e:
        die(PROG, f"lost the Dask scheduler at {args.cluster} ({e}): is it still running?")
    finally:
        client.close()


class _Terminated(Exception):
    pass


def _terminate(signum, frame):
    raise _Terminated("terminated by SIGTERM")


def main(argv: list[str] | None = None) -> int:
    spec, args = parse_spec(argv)
    address, family = resolve(spec, args.allow_remote or args.cluster is not None)
    if spec.signal_pid is not None:
        try:
            os.kill(spec.signal_pid, 0)
        except ProcessLookupError:
            die(PROG, f"--signal-pid {spec.signal_pid}: no such process", 2)
        except PermissionError:
            die(PROG, f"--signal-pid {spec.signal_pid}: not allowed to signal it", 2)
    if args.out:
        try:
            check_output_path(args.out, "--out")
        except OutputPathError as e:
            die(PROG, str(e), e.exit_code)
    cpus = len(getattr(spec, "cpus", None) or os.sched_getaffinity(0))
    if getattr(spec, "workers", 1) > cpus and args.cluster is None:   # burst mode: one process
        print(f"{PROG}: warning: --procs {spec.procs} workers on {cpus} CPU(s): they share "
              "them and the load generator may saturate first; give at most one per CPU",
              file=sys.stderr, flush=True)
    raise_nofile_limit()                        # workers inherit it
    signal.signal(signal.SIGTERM, _terminate)   # through run()'s finally: workers killed
    try:
        if isinstance(spec, burst.BurstSpec):
            doc = burst.run(spec, address, family)
        elif args.cluster is None:
            doc = run(spec, address, family)
        else:
            doc = _run_cluster(spec, address, family, args)
    except (KeyboardInterrupt, _Terminated) as e:
        die(PROG, f"{e or 'interrupted'}: the workers were stopped, no result written", 1)
    try:
        write_json(args.out, doc)
    except OSError as e:
        die(PROG, f"cannot write --out {args.out}: {e.strerror}")
    print(f"loadgen: {summary(doc)}", file=sys.stderr)
    if doc["saturated"]:
        busiest = max(doc["workers"], key=lambda w: w["cpu_util"] or 0)
        print(f"loadgen: warning: worker {busiest['index']} used "
              f"{100 * busiest['cpu_util']:.0f}% of a core: this point measures the load "
              f"generator, not the server; rerun with more --procs (and free --cpus) "
              "or fewer active connections", file=sys.stderr)
    if doc["failed"]:
        print(f"{PROG}: error: point failed: {doc['failure']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
