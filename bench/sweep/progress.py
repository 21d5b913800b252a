"""What a run prints: one line per point, a bar with its ETA, and the summary at the end."""

from __future__ import annotations

import statistics
import time

from bench.sweep import plan


class Progress:
    """One line per finished point on stderr, and a bar with done/total and ETA.

    The bar is redrawn in place on a terminal; elsewhere (logs, CI) each
    line carries the ETA instead. The ETA scales the estimate of the points
    left by how far the finished ones ran over or under theirs.
    """

    def __init__(self, todo, log):
        self.todo = todo
        self.total = len(todo)
        self.done = 0
        self.log = log
        self.tty = hasattr(log, "isatty") and log.isatty()
        self.t0 = time.perf_counter()
        self.est_done = 0.0
        self.est_left = sum(plan.estimate_s(p) for p in todo)
        if self.tty:
            self.log.write(self._bar())
            self.log.flush()

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0

    def eta_s(self) -> float:
        ratio = self.elapsed_s() / self.est_done if self.est_done > 5 else 1.0
        return self.est_left * ratio

    def _advance(self, p) -> None:
        self.done += 1
        est = plan.estimate_s(p)
        self.est_done += est
        self.est_left -= est

    def point_done(self, p: plan.Point, row: dict) -> None:
        self._advance(p)
        axes = f"c={p.connections:<5} a={p.active:<4} s={p.msg_size:<5}"
        if p.rate is not None:
            axes += f" rate={p.rate:g}"
        line = f"[{self.done:>{len(str(self.total))}}/{self.total}] {p.experiment:<9} {p.mechanism:<8} {axes} r={p.rep}"
        if row.get("throughput_msgs_s") is not None:
            p99 = row.get("p99_us")
            p99 = f"{p99:,.0f}" if p99 is not None else "-"
            line += f"  {row['throughput_msgs_s']:>9,.0f} msg/s  p99 {p99:>7} µs"
        if p.experiment == "fdlimit" and row.get("established") is not None:
            line += f"  established {row['established']} echoing {row.get('echoing')}"
        flags = []
        if row.get("saturated"):
            flags.append("SATURATED")
        if row.get("noisy"):
            flags.append(f"NOISY {row['noise_cpu_pct']:.0f}%")
        if row.get("error"):
            err = row["error"]
            flags.append(err if err.startswith("refused:")
                         else f"FAILED: {err} (raw/{p.id}.json)")
        if flags:
            line += "  " + "  ".join(flags)
        self._print(line)

    def task_done(self, t: plan.Task, result: dict) -> None:
        self._advance(t)
        what = (f"done in {result['duration_s']:.1f} s -> {result['output']}"
                if result["state"] == "done" else f"FAILED: {result['error']}")
        self._print(f"[{self.done}/{self.total}] {t.experiment:<9} "
                    f"{'quick' if t.quick else 'full':<8} {what}")

    def _print(self, line: str) -> None:
        if self.tty:
            self.log.write("\r\033[K" + line + "\n" + self._bar())
        else:
            self.log.write(f"{line}  (eta {hms(self.eta_s())})\n")
        self.log.flush()

    def _bar(self, width: int = 30) -> str:
        filled = int(width * self.done / max(self.total, 1))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}  "
                f"elapsed {hms(self.elapsed_s())}  eta {hms(self.eta_s())}")

    def close(self) -> None:
        if self.tty:
            self.log.write("\r\033[K")
            self.log.flush()


def print_summary(rows: list[dict], progress: Progress, estimate: float, log) -> None:
    """A table per experiment and mechanism, then totals and what to do about problems."""
    if rows:
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["experiment"], r["mechanism"]), []).append(r)
        head = (f"{'experiment':<10} {'mechanism':<9} {'points':>6} {'refused':>7} "
                f"{'failed':>6} {'satur.':>6} {'noisy':>5} {'msg/s med':>10} "
                f"{'p99 µs med':>10} {'cpu µs/msg':>10}")
        print("\n" + head + "\n" + "-" * len(head), file=log)
        for (exp, mech), rs in sorted(groups.items()):
            ok = [r for r in rs if not r.get("error")]
            print(f"{exp:<10} {mech:<9} {len(rs):>6} "
                  f"{sum(1 for r in rs if (r.get('error') or '').startswith('refused:')):>7} "
                  f"{sum(1 for r in rs if r.get('error') and not r['error'].startswith('refused:')):>6} "
                  f"{sum(1 for r in rs if r.get('saturated')):>6} "
                  f"{sum(1 for r in rs if r.get('noisy')):>5} "
                  f"{_median(ok, 'throughput_msgs_s', '{:,.0f}'):>10} "
                  f"{_median(ok, 'p99_us', '{:,.0f}'):>10} "
                  f"{_median(ok, 'server_cpu_us_per_msg', '{:.1f}'):>10}", file=log)
    print(f"\n{progress.done} points in {hms(progress.elapsed_s())} "
          f"(estimated {hms(estimate)})", file=log)
    sat = sum(1 for r in rows if r.get("saturated"))
    noisy = sum(1 for r in rows if r.get("noisy"))
    failed = [r for r in rows if r.get("error") and not r["error"].startswith("refused:")]
    if sat:
        print(f"warning: the load generator was CPU-bound on {sat} points (SATURATED): they "
              "measure the load generator, not the server, and analysis sets them aside; "
              "a machine with more cores for the load generator avoids it", file=log)
    if noisy:
        print(f"warning: {noisy} points were noisy (other processes used more CPU than the "
              "threshold during the window): rerun on a quieter machine for firm numbers",
              file=log)
    if failed:
        print(f"warning: {len(failed)} points failed: see the error column of points.csv "
              f"and raw/<point-id>.json (first: {failed[0]['point_id']}: {failed[0]['error']})",
              file=log)
    log.flush()


def _median(rows, key, fmt) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return fmt.format(statistics.median(values)) if values else "-"


def hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    m, s = divmod(seconds, 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
