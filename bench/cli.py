"""python -m bench VERB: run | micro | report | compare.

Each cmd_<verb> only maps arguments to the keyword arguments of one library
function (tests call those functions directly); errors become one line on
stderr with exit 1 (runtime) or 2 (usage).
"""

from __future__ import annotations

import sys

from servers.cli import OneLineParser, die

PROG = "python -m bench"


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Sweep, measure and report select/poll/epoll.")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True,
                           parser_class=OneLineParser)

    r = sub.add_parser("run", help="run a profile's sweep into a run directory")
    r.add_argument("--profile", metavar="NAME|FILE",
                   help="quick (~2 min), default (~15 min), full (~60 min), or a path to a "
                        "TOML profile (default: default; with --resume, the run's own)")
    r.add_argument("--out", metavar="RUN_DIR",
                   help="run directory to create; must not exist (default results/<run-id>)")
    r.add_argument("--resume", metavar="RUN_DIR",
                   help="complete an earlier run: run the points missing from its points.csv "
                        "and retry the ones that failed")
    r.add_argument("--only", metavar="REGEX",
                   help="run only the points whose id matches REGEX, "
                        "e.g. 'scan-epoll' or 'c1000-.*-r1$'")
    r.add_argument("--force", action="store_true",
                   help="run a sweep estimated at more than 24 h; with --resume: go on "
                        "although the machine or software differs from the run's meta.json")
    r.add_argument("--cluster", metavar="tcp://HOST:PORT",
                   help="run the load generator's workers on this Dask scheduler's client "
                        "hosts; the server stays here (README: Several hosts)")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("micro", help="wait-call micro-benchmark on socketpairs (no TCP)")
    m.add_argument("--out", metavar="RUN_DIR", help="run directory (default results/<run-id>)")
    m.add_argument("--quick", action="store_true", help="fewer sizes and samples")
    m.set_defaults(func=cmd_micro)

    rep = sub.add_parser("report", help="write report.md, report.html and plots for a run")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="compare two runs measure by measure")
    c.add_argument("run_a", metavar="RUN_A")
    c.add_argument("run_b", metavar="RUN_B")
    c.add_argument("--threshold", type=_fraction, default=0.05, metavar="FRACTION",
                   help="smallest relative difference reported, e.g. 0.05 = 5%% (default); "
                        "a difference counts only when also significant")
    c.set_defaults(func=cmd_compare)
    return p


def cmd_run(args) -> int:
    from servers.cli import UsageError

    from bench.sweep.profile import ProfileError
    from bench.sweep.run import Interrupted, RunError, run
    from bench.rundir.store import read_meta
    try:
        run_dir = run(profile=args.profile, out=args.out, resume=args.resume, only=args.only,
                      force=args.force, cluster=args.cluster)
    except (ProfileError, UsageError) as e:
        die(PROG, str(e), 2)
    except RunError as e:
        die(PROG, str(e), 1)
    except Interrupted as e:
        print(e.run_dir, flush=True)           # still the last line on stdout
        die(PROG, "interrupted", 130)
    _write_report(run_dir)
    print(run_dir, flush=True)
    return 1 if read_meta(run_dir)["state"] == "failed" else 0


def _write_report(run_dir) -> None:
    """The report of a finished run; a failure is one line, never the run's end."""
    from bench.report.render import write_report
    try:
        print(write_report(run_dir), flush=True)
    except Exception as e:
        print(f"report: failed ({type(e).__name__}: {e}); retry with "
              f"python -m bench report {run_dir}", file=sys.stderr, flush=True)


def cmd_micro(args) -> int:
    from bench.analysis.micro_summary import print_summary
    from bench.rundir.lock import holder
    from bench.rundir.store import check_out_dir
    from bench.tasks.micro import run_micro
    if args.out is not None:
        check_out_dir(args.out)
        held_by = holder(args.out)
        if held_by:
            die(PROG, f"--out {args.out} is being written by process {held_by}: wait for it "
                      "to end, or give another directory")
    run_dir = run_micro(out=args.out, quick=args.quick)
    print_summary(run_dir)                  # stderr: stdout stays the run directory alone
    print(run_dir)
    return 0


def cmd_report(args) -> int:
    from bench.report.render import write_report
    print(write_report(args.run_dir))
    return 0


def _fraction(text: str) -> float:
    """argparse type for --threshold: a number >= 0 (0.05 = 5%)."""
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.05")
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; give a fraction >= 0 such as 0.05")
    return v


def cmd_compare(args) -> int:
    from bench.report.compare import compare_runs
    print(compare_runs(args.run_a, args.run_b, threshold=args.threshold))
    return 0


def main(argv: list[str] | None = None) -> int:
    from bench.rundir.store import NotARunError, RunFormatError
    from servers.sysutil import OutputPathError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NotARunError as e:
        die(PROG, str(e), 2)
    except RunFormatError as e:
        die(PROG, str(e))
    except OutputPathError as e:
        die(PROG, str(e), e.exit_code)
    except KeyboardInterrupt:
        die(PROG, "interrupted", 130)
