"""Profiles: the bundled ones load and fit their budgets; every bad profile is one line, exit 2."""

import pytest

from bench.analysis.claims import rules

from bench.sweep import plan
from bench.cli import main
from bench.sweep.profile import ProfileError, load, parse
from bench.rundir.schema import EXPERIMENTS

GOOD = """
repetitions = 1
warmup_s = 0.2
window_s = 0.5
mechanisms = ["select", "epoll"]

[[experiment]]
kind = "scan"
connections = [10, 2000]
active = 10
"""

READY = """
[[experiment]]
kind = "ready"
connections = [1000, 2000]
ready = [0, 1, 10]
bursts = 50
burst_messages = 100
"""

# (what is wrong, the TOML, the field the error must name)
BAD = [
    ("unknown mechanism", GOOD.replace('"epoll"]', '"kqueue"]'), "mechanisms"),
    ("unknown run-wide field", GOOD + "\nwindow = 3\n", "window"),
    ("unknown experiment field", GOOD + "conections = 5\n", "experiment[1].conections"),
    ("unknown kind", GOOD.replace('"scan"', '"scab"'), "experiment[1].kind"),
    ("negative window", GOOD.replace("window_s = 0.5", "window_s = -1"), "window_s"),
    ("non-numeric axis", GOOD.replace("[10, 2000]", '["many"]'), "experiment[1].connections"),
    ("zero repetitions", GOOD.replace("repetitions = 1", "repetitions = 0"), "repetitions"),
    ("ratio above 1", GOOD.replace("active = 10", "active_ratio = 1.5"),
     "experiment[1].active_ratio"),
    ("more active than connections", GOOD.replace("active = 10", "active = 20"),
     "experiment[1].active"),
    ("select required past FD_SETSIZE", GOOD + "required = true\n", "experiment[1].required"),
    ("open loop without a rate", GOOD.replace('"scan"', '"scan-rate"'), "experiment[1].rate"),
    ("a server that does not exist", GOOD.replace('"epoll"]', '"kqueue"]'), "mechanisms"),
    ("no experiment", GOOD.split("[[experiment]]")[0], "experiment"),
    ("not TOML", GOOD + "\nkind = = 3\n", "not valid TOML"),
    ("a point listed twice", GOOD + GOOD.split("mechanisms")[1].split("\n", 1)[1],
     "experiment"),
    ("a burst larger than N", GOOD + READY.replace("[0, 1, 10]", "[0, 1, 2001]"), "experiment[2].ready"),
    ("ready without burst sizes", GOOD + READY.replace("ready = [0, 1, 10]\n", ""),
     "experiment[2].ready"),
    ("a field ready does not use", GOOD + READY + "rate = 100\n", "experiment[2].rate"),
]


@pytest.mark.parametrize("case,text,field", BAD, ids=[b[0] for b in BAD])
def test_bad_profile_is_one_line_naming_the_field_exit_2(tmp_path, capsys, case, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", str(path), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and field in err, err
    assert "allowed" in err or "give" in err or "TOML" in err, err
    assert not (tmp_path / "run").exists()


def test_unknown_profile_name_lists_the_bundled_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", "quik", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "quick" in err and "default" in err and "full" in err


def test_existing_out_is_refused_with_the_fix(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", str(path), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err


def test_only_matching_nothing_is_usage_error(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", str(path), "--out", str(tmp_path / "run"), "--only", "nope"])
    assert exc.value.code == 2
    assert "scan-" in capsys.readouterr().err


def test_plan_is_interleaved_seeded_and_refuses_select_past_fd_setsize():
    prof = parse(GOOD.replace("repetitions = 1", "repetitions = 3"))
    pts = plan.points(prof, seed=7)
    assert pts == plan.points(prof, seed=7)
    assert [p.rep for p in pts] == sorted(p.rep for p in pts)          # rep outermost
    for i in range(0, len(pts), 2):                                    # mechanisms back to back
        a, b = pts[i], pts[i + 1]
        assert {a.mechanism, b.mechanism} == {"select", "epoll"}
        assert (a.connections, a.rep) == (b.connections, b.rep)
    refused = {p.id for p in pts if p.refused}
    assert refused == {f"scan-select-c2000-a10-s64-r{r}" for r in (1, 2, 3)}
    assert all(p.refused == "refused: FD_SETSIZE" for p in pts if p.id in refused)
    orders = {tuple(p.id for p in plan.points(prof, seed=s)) for s in range(10)}
    assert len(orders) > 1                                             # the seed matters


def test_fdlimit_runs_select_past_fd_setsize():
    prof = parse("""
[[experiment]]
kind = "fdlimit"
mechanisms = ["select"]
connections = {from = 900, to = 1100, step = 20}
""")
    pts = plan.points(prof, seed=1)
    assert [p.connections for p in sorted(pts, key=lambda p: p.connections)] == list(range(900, 1101, 20))
    assert not any(p.refused for p in pts)
    assert all(p.active == p.connections for p in pts)                # every connection echoes


@pytest.mark.parametrize("name,budget_s", [("quick", 120), ("default", 15 * 60), ("full", 60 * 60)])
def test_bundled_profiles_cover_every_experiment_within_budget(name, budget_s):
    prof = load(name)
    pts = plan.points(prof, seed=1)
    kinds = {p.experiment for p in pts}
    # activity (a fixed total rate) is superseded by ready, which sets the ready share itself
    assert set(EXPERIMENTS) - {"activity"} | {"micro"} <= kinds
    assert sum(plan.estimate_s(p) for p in pts) <= budget_s
    if name != "quick":       # CLAIMS.md: the points that decide verdicts get at least 5 repetitions
        deciding = [e for e in prof.experiments
                    if rules.decides(e.kind, e.mechanisms, e.connections, e.ready)]
        assert {e.kind for e in deciding} == set(rules.DECIDING)
        assert min(e.repetitions for e in deciding) >= rules.MIN_DECIDING_REPETITIONS


def test_ready_points_take_fewer_bursts_as_bursts_grow():
    prof = parse(GOOD + READY)
    pts = [p for p in plan.points(prof, seed=1) if p.experiment == "ready"]
    assert len(pts) == 2 * 3 * 2 and all(p.rate is None for p in pts)
    bursts = {(p.connections, p.active): p.bursts for p in pts}
    assert bursts[(1000, 0)] == 50 and bursts[(1000, 1)] == 50      # the most: bursts
    assert bursts[(1000, 10)] == 10                                 # burst_messages / K
    assert {p.id for p in pts} >= {"ready-select-c1000-a10-s64-b10-r1", "ready-epoll-c2000-a0-s64-b50-r1"}
    refused = [p for p in pts if p.refused]
    assert {(p.mechanism, p.connections) for p in refused} == {("select", 2000)}
    est = {p.active: plan.estimate_s(p) for p in pts if p.mechanism == "epoll" and p.connections == 1000}
    assert 0 < est[0] and est[10] < est[1] + 1


def test_profile_error_is_a_value_error():
    with pytest.raises(ProfileError):
        parse("[[experiment]]\nkind = 3\n")


def test_unwritable_out_is_a_runtime_error_with_the_fix(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", str(path), "--out", str(blocker / "run")])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "choose a writable --out" in err


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--resume", str(tmp_path)])
    assert exc.value.code == 2                                 # a wrong path is bad usage
    assert "no meta.json" in capsys.readouterr().err


def test_reference_servers_are_accepted_and_labelled():
    from bench.sweep.plan import points
    from bench.sweep.profile import parse
    p = parse(GOOD.replace('"epoll"]', '"epoll", "uvloop", "threads"]'))
    mechs = {pt.mechanism for pt in points(p, seed=1) if hasattr(pt, "mechanism")}
    assert {"uvloop", "threads"} <= mechs
