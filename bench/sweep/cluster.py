"""A sweep whose load comes from a Dask cluster (`bench run --cluster`, profile field `cluster`).

The server stays on this host, listening on the address this host uses
towards the scheduler; each point's `python -m loadgen` gets `--cluster` and
targets that address (bench.sweep.point builds the argv). The client hosts
are described once per invocation for meta.json (bench.rundir.meta.client_hosts).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from bench.rundir.meta import ClusterUnavailable, client_hosts
from bench.sweep.point import Context, cpulist
from bench.sweep.profile import Profile
from servers.cli import UsageError


def check_address(text: str) -> str:
    """The scheduler address, checked; UsageError (exit 2) when malformed."""
    from loadgen.cluster import parse_address
    from loadgen.spec import SpecError
    try:
        return parse_address(text)
    except SpecError as e:
        raise UsageError(str(e)) from None


def server_host(address: str) -> str | None:
    """This host's address on the route to the scheduler, or None without a route.

    A UDP connect picks the route and sends nothing.
    """
    parts = urlsplit(address)
    family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((parts.hostname, parts.port))
        except OSError:
            return None
        return s.getsockname()[0]


def resolve(cluster: str | None, prof: Profile, meta: dict | None) -> tuple | None:
    """(ctx.cluster, client hosts) when the load runs on a Dask cluster, else None.

    The scheduler: --cluster, else the profile's, else the resumed run's.
    Raises UsageError for a malformed address, ClusterUnavailable when the
    scheduler cannot be reached or used.
    """
    if cluster is not None:
        cluster = check_address(cluster)
    cluster = cluster or prof.cluster or ((meta or {}).get("cluster") or {}).get("scheduler")
    if cluster is None:
        if prof.hosts is not None:
            raise UsageError(f"{prof.source}: hosts applies to a cluster run: give the profile "
                             "a cluster, or --cluster tcp://HOST:PORT")
        return None
    host = server_host(cluster)
    if host is None:
        raise ClusterUnavailable(f"no route to the Dask scheduler at {cluster}: fix --cluster")
    hosts = client_hosts(cluster, prof.hosts)
    return {"scheduler": cluster, "server_host": host, "hosts": prof.hosts}, hosts


def record(on_cluster: tuple | None, ctx: Context, meta: dict) -> None:
    """Put resolve()'s answer in the run's context and meta.json (after "pinning")."""
    if on_cluster is None:
        return
    ctx.cluster, meta["client_hosts"] = on_cluster
    meta["cluster"] = ctx.cluster
    # the workers run on the client hosts, pinned by nobody
    meta["pinning"].update(loadgen_cpus=None, shared=False, loadgen_procs=ctx.profile.procs,
                           loadgen_hosts=[h["host"] for h in meta["client_hosts"]])


def where(ctx: Context, meta: dict) -> str:
    """Where the load generator runs, for the run's first line."""
    if ctx.cluster is None:
        return f"CPU {cpulist(ctx.loadgen_cpus)}"
    return (f"{len(meta['client_hosts'])} client host(s) of {ctx.cluster['scheduler']} "
            f"({', '.join(h['host'] for h in meta['client_hosts'])}), "
            f"server on {ctx.cluster['server_host']}")
