"""Like with like in the report: curves and marginal means compare each axis's levels over the
trials that learned, at the settings every level shares; the best configurations are the set a
paired, Holm-corrected test cannot tell from the top one."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from report_fixture import grid_trials, trial, write_run
from sweep.report.load import load_run
from sweep.report.render import render_header, render_markdown, render_ranking
from sweep.report.stats import ALPHA
from sweep.report.summary import (LEARNED, best_set, chance_cells, curves, finished, learned,
                                  marginal, never_learned, ranking, shared, summarise,
                                  untested_reason)

NOISE = (0.0, 0.01, -0.01)


def loaded(rows: list[dict], tmp_path: Path):
    """A run as load_run types it (through real CSVs)."""
    return load_run(write_run(tmp_path / "run", rows))


def unbalanced() -> list[dict]:
    """No transform runs only the plain setting; augment also runs SGD and L1 (both stuck at
    chance) and a learned setting no transform lacks. augment's plain mean is dragged below
    no transform's; at the one shared setting augment is 5 pts better."""
    rows = []
    for seed, noise in enumerate(NOISE):
        rows += [trial(seed=seed, acc=0.50 + noise),
                 trial(transform="augment", seed=seed, acc=0.55 + noise),
                 trial(transform="augment", optimiser="sgd", seed=seed, acc=0.10),
                 trial(transform="augment", regulariser="l1", lam=1e-3, seed=seed, acc=0.10),
                 trial(transform="augment", lr=1e-5, seed=seed, acc=0.30 + noise)]
    return rows


def balanced(seeds: int = 3) -> list[dict]:
    """transform x optimiser x lr, every cell run; SGD stays at chance at every transform."""
    base = {"none": 0.40, "augment": 0.46, "normalize": 0.51, "augment+normalize": 0.53}

    def acc(cfg, seed):
        if cfg["optimiser"] == "sgd":
            return 0.10
        return base[cfg["transform"]] - (0.2 if cfg["lr"] == 1e-5 else 0.0) + NOISE[seed % 3]

    axes = {"transform": list(base), "optimiser": ["adam", "sgd"], "lr": [1e-3, 1e-5]}
    return grid_trials(axes, acc, seeds=seeds)


# ---- who learned --------------------------------------------------------------------------

def test_learned_is_above_the_threshold():
    frame = pd.DataFrame({"final_test_acc": [0.10, LEARNED, LEARNED + 0.001, math.nan, 0.5]})
    assert LEARNED == 0.15
    assert list(learned(frame)) == [False, False, True, False, True]


# ---- Task A: like with like -----------------------------------------------------------------

def test_unbalanced_marginal_compares_at_the_shared_setting(tmp_path):
    trials = loaded(unbalanced(), tmp_path).trials
    plain = finished(trials).groupby("transform")["final_test_acc"].mean()
    assert plain["augment"] < plain["none"]  # the confounded mean ranks augment last...
    table = marginal(trials, "transform").set_index("level")
    assert table.loc["augment", "mean"] > table.loc["none", "mean"]  # ...the fair one does not
    assert table.loc["augment", "mean"] == pytest.approx(0.55)
    assert table.loc["none", "mean"] == pytest.approx(0.50)
    assert table.loc["augment", "half"] == pytest.approx(
        stats.t.ppf(0.975, 2) * np.std([0.55, 0.56, 0.54], ddof=1) / math.sqrt(3))
    assert list(table["n_done"]) == [3, 3]
    assert (table.loc["augment", "n_chance"], table.loc["augment", "n_unshared"]) == (6, 3)
    assert len(shared(trials, "transform").settings) == 1


def test_unbalanced_curves_follow_the_same_trials(tmp_path):
    run = loaded(unbalanced(), tmp_path)
    for table in (curves(run.epochs, "transform", run.trials), curves(run.epochs, "transform")):
        last = table[(table["metric"] == "test_acc") & (table["epoch"] == 3)].set_index("level")
        assert last.loc["augment", "mean"] == pytest.approx(0.55)
        assert last.loc["augment", "n"] == 3 and last.loc["none", "n"] == 3


@pytest.mark.parametrize("axis", ["transform", "lr"])
def test_balanced_run_gives_the_plain_means_over_learned_trials(tmp_path, axis):
    trials = loaded(balanced(), tmp_path).trials
    done = finished(trials)
    plain = done[learned(done)].groupby(axis)["final_test_acc"].agg(["mean", "count"])
    table = marginal(trials, axis).set_index("level")
    assert np.allclose(table.loc[plain.index, "mean"], plain["mean"])
    assert list(table.loc[plain.index, "n_done"]) == list(plain["count"])
    assert (table["n_unshared"] == 0).all()


def test_balanced_curves_match_plain_learned_trials(tmp_path):
    run = loaded(balanced(), tmp_path)
    table = curves(run.epochs, "transform", run.trials)
    last = table[(table["metric"] == "test_acc") & (table["epoch"] == 3)].set_index("level")
    assert last.loc["augment", "mean"] == pytest.approx((0.46 + 0.26) / 2)
    assert last.loc["augment", "n"] == 6  # the six SGD trials at chance are left out


def test_a_level_that_never_learned_drops_out_and_is_named(tmp_path):
    trials = loaded(balanced(), tmp_path).trials
    optimiser = shared(trials, "optimiser")
    assert optimiser.stuck == ("sgd",) and optimiser.trials.empty
    assert optimiser.reason == "only adam has trials that learned"
    chance = chance_cells(trials, "optimiser", "lr")
    assert chance.loc["sgd"].all() and not chance.loc["adam"].any()


def test_chance_trials_are_left_out_and_listed(tmp_path):
    summary = summarise(loaded(unbalanced(), tmp_path))
    stuck = never_learned(summary.trials)
    assert sorted(zip(stuck["optimiser"], stuck["regulariser"], stuck["n"])) == [
        ("adam", "l1", 3), ("sgd", "none", 3)]
    assert summary.comparisons["optimiser"].stuck == ("sgd",)
    assert summary.comparisons["regulariser"].stuck == ("l1",)
    text = render_markdown(summary, images={})
    assert ("6 of 15 completed trials never learned and are left out of the curves and means: "
            "all 3 with regulariser l1 and all 3 with optimiser sgd.") in text
    assert "No curve or mean: only adam has trials that learned." in text
    assert "| augment | 3 | 55.0% |" in text and "6 never learned, 3 at unshared settings" in text
    assert "10.0% (n=3, *at chance*)" in text  # the interaction heatmaps keep them, marked


def test_no_shared_setting_gives_no_curve_and_says_why(tmp_path):
    rows = [trial(seed=s, acc=0.40 + n, data_fraction=0.5) for s, n in enumerate(NOISE)]
    rows += [trial(transform="augment", seed=s, acc=0.46 + n) for s, n in enumerate(NOISE)]
    summary = summarise(loaded(rows, tmp_path))
    assert "transform" not in summary.marginals and "transform" not in summary.curves
    why = summary.comparisons["transform"].reason
    assert why == ("no setting of the other axes is shared by every level that learned: "
                   "data fraction (none 0.5, augment 1)")
    assert f"No curve or mean: {why}." in render_markdown(summary, images={})


def test_section_two_states_the_rule(tmp_path):
    text = render_markdown(summarise(loaded(unbalanced(), tmp_path)), images={})
    assert "occur at every level that learned" in text and "above 15%" in text
    assert "confounded" not in text


# ---- Task B: the best configurations as a set ---------------------------------------------

TOP = (0.600, 0.615, 0.585)


def best_rows(extra: dict | None = None) -> list[dict]:
    """Three seeds: augment on top, normalize 0.1 pts below with noise, none 20 pts below."""
    acc = {"augment": TOP, "normalize": (0.609, 0.590, 0.598),
           "none": (0.402, 0.413, 0.385), **(extra or {})}
    return [trial(transform=t, seed=s, acc=a[s]) for t, a in acc.items() for s in range(3)]


def test_best_set_keeps_the_close_one_and_drops_the_far_one(tmp_path):
    table = ranking(loaded(best_rows(), tmp_path).trials)
    assert list(table["transform"]) == ["augment", "normalize", "none"]
    assert list(table["near_top"]) == ["top", "yes", "no"]
    assert list(best_set(table)["transform"]) == ["augment", "normalize"]
    close, far = (stats.ttest_rel(TOP, other).pvalue
                  for other in ((0.609, 0.590, 0.598), (0.402, 0.413, 0.385)))
    assert table["p"].iloc[1:].tolist() == pytest.approx([close, far])
    assert table["p_holm"].iloc[1:].tolist() == pytest.approx([close, 2 * far])  # Holm, m = 2
    assert table["p_holm"].iloc[2] <= ALPHA < table["p_holm"].iloc[1]
    assert table["vs_top"].iloc[1] == pytest.approx(0.001)


def test_pairs_share_a_seed(tmp_path):
    """2 pts behind in every seed, while seeds move both by ±5 pts: only pairing sees it."""
    rows = [trial(transform=t, seed=s, acc=base + shift)
            for s, base in enumerate((0.50, 0.55, 0.45))
            for t, shift in (("augment", 0.020), ("none", 0.001 * s))]
    table = ranking(loaded(rows, tmp_path).trials)
    assert list(table["near_top"]) == ["top", "no"]


def test_best_set_is_rendered_in_header_and_ranking(tmp_path):
    summary = summarise(loaded(best_rows(), tmp_path))
    header, table = render_header(summary), render_ranking(summary)
    assert "Best configurations: 2 not distinguishable from the top one" in header
    assert "transform augment (60.0% ± 3.7) and transform normalize (59.9% ± 2.4)." in header
    assert "≈ top" in table and "paired t-test over seeds" in table and "Holm" in table
    assert "| 60.0% ± 3.7 | yes |" in table and "| 40.0% ± 3.5 | — |" in table


def test_a_configuration_without_two_shared_seeds_is_untested(tmp_path):
    rows = best_rows() + [trial(transform="augment+normalize", seed=0, acc=0.59)]
    table = ranking(loaded(rows, tmp_path).trials)
    assert table.set_index("transform").loc["augment+normalize", "near_top"] == "untested"
    assert list(best_set(table)["transform"]) == ["augment", "normalize"]


def test_one_seed_names_no_set(tmp_path):
    rows = [trial(transform=t, seed=0, acc=a) for t, a in (("augment", 0.6), ("none", 0.4))]
    summary = summarise(loaded(rows, tmp_path))
    assert best_set(summary.ranking).empty
    assert untested_reason(summary.trials, summary.ranking) == (
        "one seed: the ranking cannot separate configurations")
    header, table = render_header(summary), render_ranking(summary)
    assert "One seed: the ranking cannot separate configurations" in header
    assert "Best configuration" not in header and "| ≈ top |" not in table
