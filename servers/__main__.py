"""python -m servers MECHANISM: run one echo server until SIGTERM/SIGINT.

MECHANISM is one of the four equivalent servers or a reference
(servers.REFERENCES). Prints `READY <host> <port> <pid>` once listening; at
shutdown writes the statistics JSON to --stats (else stdout) and exits 0.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
import traceback

from . import MECHANISMS, REFERENCES
from .cli import OneLineParser, die, is_loopback, port_number, positive_int
from .core import Server
from .sysutil import OutputPathError, check_output_path, raise_nofile_limit, write_json

PROG = "python -m servers"
SERVERS = {**MECHANISMS, **REFERENCES}   # name -> module
OWN_FDS = 8     # past those open at start: listener, wake-up pair, poller, loop pipes, snapshots


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Echo server on one readiness mechanism.")
    p.add_argument("mechanism", choices=list(SERVERS), metavar="MECHANISM",
                   help="one of: " + ", ".join(MECHANISMS)
                   + "; references: " + ", ".join(REFERENCES))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=0,
                   help="TCP port (default 0: any free port, printed on the READY line)")
    p.add_argument("--stats", metavar="FILE",
                   help="write the statistics JSON here at shutdown (default: stdout)")
    p.add_argument("--snapshots", metavar="FILE",
                   help="on SIGUSR1, append the statistics so far as one JSON line to FILE")
    p.add_argument("--max-threads", type=positive_int, metavar="N",
                   help="threads only: refuse connections past N live threads, through the "
                        "same path as a failed thread start (default: no cap)")
    p.add_argument("--max-fds", type=positive_int, metavar="N",
                   help="lower the soft descriptor limit to N (default: raise it to the hard limit)")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on stderr")
    return p


def set_fd_limit(max_fds: int | None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one, or lower it to max_fds."""
    if max_fds is not None:
        floor = len(os.listdir("/proc/self/fd")) + OWN_FDS     # listdir's own fd: the one conn
        if max_fds < floor:
            die(PROG, f"--max-fds {max_fds} is too few: the server holds about {floor - 1} "
                      f"descriptors of its own; give at least {floor}", 2)
    try:
        limits = raise_nofile_limit(max_fds)
    except ValueError as e:
        die(PROG, f"--max-fds {e}: give at most the hard limit", 2)
    return limits["soft"], limits["hard"]


def resolve(host: str, port: int) -> str:
    """The address to bind: an IP literal as given, a name looked up (exit 2 if unknown)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        die(PROG, f"cannot resolve --host {host!r} ({why}): give an address such as "
                  "127.0.0.1", 2)
    return infos[0][4][0]


def make_server(name: str, mod, address: str, port: int, snapshots: str | None,
                max_threads: int | None = None):
    """A core Server for a loop module; a module with its own server makes it."""
    if max_threads is not None:
        return mod.make_server(name, address, port, snapshots=snapshots, max_threads=max_threads)
    if hasattr(mod, "make_server"):
        return mod.make_server(name, address, port, snapshots=snapshots)
    server_cls = getattr(mod, "SERVER", Server)   # epoll-toggle: DeferredWriteServer
    return server_cls(name, address, port, fd_limit=mod.FD_LIMIT, edge=getattr(mod, "EDGE", False),
                      snapshots=snapshots)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mod = SERVERS[args.mechanism]
    if args.max_threads is not None and args.mechanism != "threads":
        die(PROG, f"--max-threads applies to the threads server only, not {args.mechanism}: "
                  "drop it", 2)
    try:
        if args.stats:
            check_output_path(args.stats, "--stats")
        if args.snapshots:
            check_output_path(args.snapshots, "--snapshots", append=True)
    except OutputPathError as e:
        die(PROG, str(e), e.exit_code)
    address = resolve(args.host, args.port)
    soft, hard = set_fd_limit(args.max_fds)
    try:
        server = make_server(args.mechanism, mod, address, args.port, args.snapshots,
                             args.max_threads)
    except RuntimeError as e:                    # e.g. uvloop not installed
        die(PROG, str(e))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            die(PROG, f"port {args.port} on {address} is in use: choose another --port, "
                      "or 0 for any free port")
        if e.errno == errno.EACCES:
            die(PROG, f"no permission to bind {address}:{args.port}: use a port above 1023")
        die(PROG, f"cannot listen on {address}:{args.port}: {e.strerror}")
    host, port = server.address
    if not is_loopback(host):
        print(f"{PROG}: warning: listening on {host} port {port}, reachable from other "
              "machines; bind 127.0.0.1 unless that is meant", file=sys.stderr, flush=True)
    print(f"READY {host} {port} {os.getpid()}", flush=True)

    failure = None
    try:
        mod.run(server)
    except Exception as e:                       # keep the stats even if the loop broke
        failure = f"{type(e).__name__}: {e}"
        if args.verbose:
            traceback.print_exc()
    stats = server.shutdown()
    stats.update(rlimit_nofile={"soft": soft, "hard": hard}, failure=failure,
                 host=host, port=port, pid=os.getpid())
    try:
        write_json(args.stats, stats)
    except OSError as e:
        die(PROG, f"cannot write --stats {args.stats}: {e.strerror}")
    if failure:
        die(PROG, f"{args.mechanism} loop failed: {failure} (rerun with -v for the traceback)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
