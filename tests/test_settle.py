"""sweep.settle: the sequential rule by simulation, bad input, and a Ctrl+C'd round resumed."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from report_fixture import run_meta, seed_trials, trial, write_run
from sweep import settle
from sweep.report.sequential import (look_pvalues, schedule, sequential_p, simulate, weights)
from sweep.report.stats import holm

ALPHA = 0.05
STUDIES = 4000  # simulated studies per check: Monte-Carlo SE of a 5% rate is 0.34 points


# ---- the stopping rule, by simulation (no training) ---------------------------------------

def test_schedule_and_weights():
    assert schedule(3, 10) == (3, 5, 8, 10) and schedule(1, 3) == (1, 3) and schedule(3, 3) == (3,)
    assert weights((1, 3))[0] == 0.0  # one seed cannot test
    assert np.all(np.diff(weights((3, 5, 8, 10))) > 0) and weights((3, 5, 8, 10))[-1] == 1.0


def test_naive_repeated_testing_would_inflate_the_error():
    """The reason for the rule: stopping at the first raw p <= alpha over 4 looks errs ~2x."""
    rng = np.random.default_rng(1)
    looks = schedule(3, 10)
    p = look_pvalues(rng.standard_normal((STUDIES, looks[-1])), looks)
    assert (np.nanmin(p, axis=1) <= ALPHA).mean() > 1.5 * ALPHA


@pytest.mark.parametrize("alpha", [0.05, 0.005, 0.001])
def test_zero_effect_gives_a_wrong_decisive_verdict_at_most_alpha(alpha):
    """100 000 null studies per schedule; the bound is alpha's one-sided 99.9% binomial limit.
    Small alphas matter: with Holm over ~50 claims a claim is judged at about 0.001."""
    from scipy import stats

    rng = np.random.default_rng(2)
    studies = 100_000
    limit = stats.binom.ppf(0.999, studies, alpha) / studies
    for looks in (schedule(3, 10), schedule(3, 5), schedule(1, 10)):
        rate = simulate(0.0, looks, studies, rng, alpha)["wrong"]
        assert rate <= limit, (looks, alpha, rate, limit)


def test_quantised_accuracies_with_missing_seeds_keep_the_error():
    """Per-seed effects rounded to the 1e-4 accuracy step, a fifth of the seeds set aside."""
    rng = np.random.default_rng(5)
    looks, studies, alpha = schedule(3, 10), 100_000, 0.005
    draws = np.round(rng.normal(0.0, 0.005, (studies, looks[-1])), 4)
    draws[rng.random(draws.shape) < 0.2] = np.nan
    q = sequential_p(look_pvalues(draws, looks), looks)
    from scipy import stats

    assert (q <= alpha).mean() <= stats.binom.ppf(0.999, studies, alpha) / studies


def test_a_family_of_null_claims_keeps_the_family_wise_error_with_holm():
    rng = np.random.default_rng(3)
    looks, claims = schedule(3, 10), 5
    draws = rng.standard_normal((STUDIES * claims, looks[-1]))
    q = sequential_p(look_pvalues(draws, looks), looks).reshape(STUDIES, claims)
    any_wrong = np.array([(holm(row) <= ALPHA).any() for row in q])
    assert any_wrong.mean() <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)


def test_one_sd_effect_is_decisive_by_ten_seeds_in_80_percent_of_studies():
    """Power at an effect of one SD of the per-seed effect, looks 3, 5, 8, 10: >= 80% over
    100 000 studies (400 000 gave 80.22%, Monte-Carlo SE 0.06), against the fixed 10-seed
    t-test's 80.3% (noncentral t), the most an unbiased two-sided test can have there."""
    from scipy import stats

    looks = schedule(3, 10)
    crit = stats.t.ppf(1 - ALPHA / 2, 9)
    fixed = stats.nct.sf(crit, 9, math.sqrt(10)) + stats.nct.cdf(-crit, 9, math.sqrt(10))
    power = simulate(1.0, looks, 100_000, np.random.default_rng(4), ALPHA)
    assert power["decisive"] >= 0.80 and power["wrong"] == 0.0
    assert fixed - power["decisive"] < 0.01  # the early looks cost under a point of power


def test_sequential_p_is_the_plain_p_for_one_look():
    p = np.array([[0.03]])
    assert sequential_p(p, (3,)) == pytest.approx([0.03])


# ---- bad input: one line, exit 2, nothing written ---------------------------------------

def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv: list, folder: Path, expected: str) -> None:
    before = _snapshot(folder) if folder.exists() else {}
    assert settle.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert (_snapshot(folder) if folder.exists() else {}) == before


def test_not_a_run_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _refused(capsys, [tmp_path / "empty"], tmp_path / "empty", "is not a run folder")


def test_a_search_run_is_refused(tmp_path, capsys):
    run = write_run(tmp_path / "s", [trial(acc=0.5, lr=1e-3)], kind="search")
    _refused(capsys, [run], run, "is a search run")


def test_max_seeds_below_the_seeds_there(tmp_path, capsys):
    run = write_run(tmp_path / "g", seed_trials(seeds=3))
    _refused(capsys, [run, "--max-seeds", 2], run, "--max-seeds=2 is below the 3 seeds")


def test_nothing_testable(tmp_path, capsys):
    rows = seed_trials({k: 0.10 for k in ("baseline", "augment", "normalize", "augment+normalize",
                                          "dropout", "l1", "l2|adam-1e-3", "adam-1e-5",
                                          "sgd-1e-3", "sgd-1e-5")})
    run = write_run(tmp_path / "g", rows)
    _refused(capsys, [run], run, "no claim is testable")


def test_design_cannot_change_between_rounds(tmp_path, capsys):
    meta = run_meta(30, settle={"alpha": 0.05, "max_seeds": 5, "looks": [3, 5], "rounds": [],
                                "weight_power": 12.0,
                                "initial_seeds": 3, "status": "running"})
    run = write_run(tmp_path / "g", seed_trials(), meta=meta)
    _refused(capsys, [run, "--max-seeds", 10], run, "being settled with --max-seeds 5")


def test_dry_run_lists_the_next_round_and_writes_nothing(tmp_path, capsys):
    rows = seed_trials()
    for r in rows:  # augment's effect is noisy: that claim stays open
        if r["label"] == "augment":
            r["final_test_acc"] += (0.04, -0.05, 0.02)[r["seed"]]
    run = write_run(tmp_path / "g", rows)
    before = _snapshot(run)
    assert settle.main([str(run), "--max-seeds", "5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "looks at [3, 5] seeds" in out and "next round: seeds 3..4" in out
    assert _snapshot(run) == before


# ---- a round interrupted and resumed loses nothing (Ray) ------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _run(module: str, argv: list, env: dict, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
def test_settle_interrupted_and_resumed_loses_nothing(tiny_cifar_dir, tmp_path):
    from test_grid_ray import (assert_every_epoch_once, by_epoch, kill_driver, rows, stop,
                               sweep_env, wait_for)

    env = sweep_env(tiny_cifar_dir)
    epochs = 3
    grid = _run("sweep.grid", ["--transform", "none,normalize", "--regulariser", "none",
                               "--optimiser", "adam", "--batch-size", "64", "--epochs", epochs,
                               "--seeds", 2, "--results-dir", tmp_path, "--name", "s"], env)
    assert grid.returncode == 0, grid.stdout[-2000:] + grid.stderr[-2000:]
    folder, log = tmp_path / "s", tmp_path / "settle.log"
    with open(log, "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "sweep.settle", str(folder),
                                  "--max-seeds", "3", "--max-concurrent", "1"], cwd=REPO, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        def mid_round():
            new = [t for t in rows(folder, "trials.csv") if t["seed"] == "2"]
            return any(1 <= int(t["epochs_done"] or 0) < epochs for t in new) and new
        wait_for(mid_round, first, log, "a settle trial is mid-run", timeout=240)
        kill_driver(first)
        at_kill = {"trials": rows(folder, "trials.csv"), "epochs": rows(folder, "epochs.csv")}
    finally:
        stop(first)
    info = json.loads((folder / "run.json").read_text())
    assert info["settle"]["rounds"][-1]["status"] == "running"
    again = _run("sweep.settle", [folder], env)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert_every_epoch_once(folder, epochs)
    trials = {t["trial_id"]: t for t in rows(folder, "trials.csv")}
    assert {t["seed"] for t in trials.values()} == {"0", "1", "2"}
    for t in at_kill["trials"]:
        if t["status"] == "completed":
            assert trials[t["trial_id"]] == t, "a finished trial changed"
    now, before = by_epoch(rows(folder, "epochs.csv")), by_epoch(at_kill["epochs"])
    last = {t: max(e for u, e in before if u == t) for t, _ in before}
    for (trial_id, epoch), row in before.items():
        if epoch < last[trial_id]:  # only the newest in-flight epoch may be redone
            assert now[(trial_id, epoch)] == row
    info = json.loads((folder / "run.json").read_text())
    assert info["settle"]["status"] == "finished"
    round_ = info["settle"]["rounds"][0]
    assert round_["status"] == "finished" and round_["wall_seconds"] > 0
    assert round_["trials"] == sum(t["seed"] == "2" for t in trials.values())
    assert os.path.isdir(folder / round_["ray_dir"])


# ---- the report of a settled run ---------------------------------------------------------

def test_report_shows_the_design_rounds_cost_and_when_each_claim_settled(tmp_path):
    from sweep.report.claims import judge_all, settle_design
    from sweep.report.cli import main as report_main
    from sweep.report.load import load_run
    from sweep.report.summary import finished

    rows = seed_trials(seeds=5, noise=(0.0, 0.01, -0.01, 0.005, -0.005))
    plan = {"alpha": 0.05, "max_seeds": 5, "initial_seeds": 3, "looks": [3, 5], "status": "finished",
            "weight_power": 12.0,
            "rounds": [{"round": 1, "seeds_from": 3, "seeds_to": 5, "configs": 10, "trials": 20,
                        "open_claims": ["C1"], "wall_seconds": 600.0, "status": "finished"}]}
    run = write_run(tmp_path / "g", rows, meta=run_meta(len(rows), settle=plan))
    design = settle_design(load_run(run).metas)
    assert design == {"looks": (3, 5), "alpha": 0.05}
    table = judge_all(finished(load_run(run).trials), **design)
    exact = table[table["claim"].str.startswith("L2 beats L1 on test accuracy")].iloc[0]
    assert exact["settled_at"] == 3 and exact["settled_round"] == 0  # no spread: decisive at once
    assert report_main([str(run)]) == 0
    text = (run / "report" / "REPORT.md").read_text()
    assert "## 4. Settling: seeds added until the verdicts are decisive" in text
    assert "O'Brien" in text and "looks at 3, 5 seeds" in text
    assert "50 trials in all, against 50 for a fixed design of 5 seeds" in text
    assert "decisive at 3 seeds, before any round" in text
