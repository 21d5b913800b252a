"""bench.report.render and bench.report.compare: the documents a reader gets from a run."""

import re
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from bench.analysis import claims  # noqa: E402
from bench.report import plots  # noqa: E402
from bench.report.compare import compare_runs  # noqa: E402
from bench.report.render import write_report  # noqa: E402
from bench.rundir.store import load_run  # noqa: E402
from synthetic import make_run  # noqa: E402
from tiny_run import REPO, synthetic_run, tiny_run, tiny_run_dir  # noqa: E402,F401


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    run_dir = tiny_run_dir(tmp_path_factory)[0]
    return run_dir, write_report(run_dir)


def test_report_html_has_the_claims_table_first_and_every_figure(tiny_report):
    run_dir, html_path = tiny_report
    html = html_path.read_text()
    claims_at = html.index('<table id="claims">')
    assert claims_at < html.index("<figure")
    table = html[claims_at:html.index("</table>", claims_at)]
    for cid in claims.RULES:
        assert f"<td>{cid}: " in table
    assert len(re.findall(r'class="v-(supported|partly-supported|refuted|not-tested)"', table)) == len(claims.RULES)
    run = load_run(run_dir)
    drawn = [n for n in plots.FIGURES if plots.has_data(run, n)]
    assert drawn
    for name in drawn:
        assert f'<img alt="{name}" src="data:image/svg+xml;base64,' in html
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 0


def test_the_first_screen_is_a_summary_line_per_claim_with_a_thumbnail_linking_its_figure(tiny_report):
    html = tiny_report[1].read_text()
    start = html.index('<table class="summary" id="summary">')
    assert start < html.index('<table id="claims">')
    summary = html[start:html.index("</table>", start)]
    rows = re.findall(r"<tr><td><b>(C\d+)</b> ([^<]+)</td><td class=\"v-([a-z-]+)\">[^<]+</td><td>([^<]+)</td>"
                      r"<td>(.*?)</td></tr>", summary)
    assert [r[0] for r in rows] == list(claims.RULES)
    for cid, claim, verdict, number, thumb in rows:
        assert len(claim) < 60 and number.strip()
        if thumb:     # a small PNG that links to the full figure further down
            name = re.search(r'href="#fig-([a-z0-9_]+)"', thumb).group(1)
            assert 'src="data:image/png;base64,' in thumb and f'<figure id="fig-{name}">' in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_summary_fits_a_laptop_screen_in_a_real_browser(tiny_report, tmp_path):
    # the browser lays the page out at 1366x768 and reports where the summary ends
    html = tiny_report[1].read_text().replace("</body></html>", (
        '<script>document.title = "summary-bottom:" + Math.ceil('
        'document.getElementById("summary").getBoundingClientRect().bottom);</script></body></html>'))
    page = tmp_path / "probe.html"
    page.write_text(html)
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1366,768",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    bottom = int(re.search(r"<title>summary-bottom:(\d+)</title>", r.stdout).group(1))
    assert 0 < bottom <= 768


def test_report_html_is_self_contained(tiny_report):
    html = tiny_report[1].read_text()
    assert not re.search(r'<(link|script)\b', html)
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html))


def test_report_md_reads_each_figure_in_two_sentences_then_machine_and_flags(tiny_report):
    run_dir, _ = tiny_report
    md = (run_dir / "report.md").read_text()
    order = [md.index(h) for h in ("## Claims", "## Figures", "## Machine and software", "## Flags")]
    assert order == sorted(order)
    for block in md.split("\n### ")[1:]:
        if "![" not in block:
            continue
        paragraphs = block.split("\n\n")
        image = next(i for i, par in enumerate(paragraphs) if par.startswith("!["))
        reading = paragraphs[image + 1].strip()
        assert reading.count(". ") + reading.endswith(".") >= 2, block[:200]
    for flag in ("Saturated points", "Noisy points", "Failed or refused points"):
        assert flag in md


def test_the_flags_count_what_was_set_aside(synthetic_run):
    write_report(synthetic_run)
    md = (synthetic_run / "report.md").read_text()
    assert "1 saturated, 4 noisy and" in md          # activity epoll: all 4 ratios run at 1000
    assert re.search(r"### Saturated points \(load generator CPU-bound\): 1\n", md)
    assert "scan-poll-c1000-a10-s64-r0" in md


def test_a_run_without_data_still_gets_a_report_saying_so(tmp_path):
    path = write_report(make_run(tmp_path / "empty", experiments=(), micro=False))
    html = path.read_text()
    assert html.count('class="v-not-tested"') == 2 * len(claims.RULES)   # the summary's and the table's
    assert "<figure" not in html and "Not in this run (no data)" in html


def test_bench_report_cli_prints_the_report_path(synthetic_run):
    r = subprocess.run([sys.executable, "-m", "bench", "report", str(synthetic_run)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(synthetic_run / "report.html")


# compare

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    kw = dict(experiments=("scan", "activity"))
    a = make_run(base / "a", **kw)
    slow = make_run(base / "slow", cost_factor=2.0, seed=11, **kw)
    other = make_run(base / "other", seed=12, meta={"kernel": {"release": "6.9.0-other"},
                                                    "cpu": {"model": "Other CPU", "count": 8}}, **kw)
    return a, slow, other


def _rows(text, measure):
    section = text.split(f"## {measure} ")[1].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "median" not in line]


def test_compare_flags_a_2x_difference_as_significant(pair):
    a, slow, _ = pair
    text = compare_runs(a, slow)
    rows = _rows(text, "throughput_msgs_s")
    assert rows and all("yes (worse in B; chance apart with no real difference 0.8% (5 vs 5" in r for r in rows)
    assert all(re.search(r"\| 0\.(4[5-9]|5[0-5]) ", r) for r in rows)   # B/A ≈ 0.5
    assert "warning" not in text


def test_compare_finds_nothing_significant_between_identical_runs(pair):
    a, _, _ = pair
    text = compare_runs(a, a)
    assert " yes" not in text
    assert text.rstrip().endswith("significant (CIs, or p10–p90 for micro, do not overlap) and more than 5% apart.")
    assert re.search(r"\n0 of \d+ point comparisons and 0 of \d+ micro", text)


def test_compare_warns_when_machine_or_software_differ(pair):
    a, _, other = pair
    text = compare_runs(a, other)
    assert "warning: the runs differ in kernel" in text
    assert "warning: the runs differ in cpu" in text


def test_bench_compare_cli(pair):
    a, slow, _ = pair
    r = subprocess.run([sys.executable, "-m", "bench", "compare", str(a), str(slow)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "## throughput_msgs_s" in r.stdout


def test_a_path_that_is_not_a_run_is_bad_usage(tmp_path, capsys):
    from bench.cli import main
    for argv in (["report", str(tmp_path)], ["compare", str(tmp_path / "nope"), str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a run directory" in err
