"""The verdict rules, each shown by a flip: chance sides, Holm, the clean gap, ties."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cifar_core.config import TrialConfig
from report_fixture import seed_trials
from sweep.report.claims import (FAILS, HOLDS, LEARNED, UNSURE, UNTESTABLE, decide, judge_all,
                                 with_gap)
from sweep.report.stats import holm, mean_ci


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).assign(final_relu=lambda t: t["final_relu"].astype(bool))


def row_of(table: pd.DataFrame, start: str) -> pd.Series:
    return table[table["claim"].str.startswith(start)].iloc[0]


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, math.nan, 0.005]) == pytest.approx(
        [0.03, 0.06, 0.06, math.nan, 0.02], nan_ok=True)


def _family(ps: list[float]) -> pd.DataFrame:
    """A claims table of len(ps) judged rows with the given raw p-values (effects favour A)."""
    return pd.DataFrame({"ps": [[p] for p in ps], "verdict": [""] * len(ps),
                         "effect": [0.05] * len(ps), "claimed_sign": [1.0] * len(ps)})


def test_holm_moves_a_raw_p_across_the_line():
    alone = decide(_family([0.03]), (0,), alpha=0.05)
    assert alone["verdict"].tolist() == [HOLDS]  # p = 0.03 alone: decisive
    family = decide(_family([0.03, 0.04, 0.045]), (0,), alpha=0.05)
    assert family["p_adj"].tolist() == pytest.approx([0.09, 0.09, 0.09])
    assert family["verdict"].tolist() == [UNSURE] * 3  # the same p among three: not decisive


def test_a_side_at_chance_makes_the_claim_not_testable():
    learned = judge_all(frame(seed_trials()))
    assert row_of(learned, "L2 beats L1 on test accuracy")["verdict"] == HOLDS
    stuck = judge_all(frame(seed_trials({"l1": LEARNED - 0.06})))  # L1 at chance in every seed
    row = row_of(stuck, "L2 beats L1 on test accuracy")
    assert row["verdict"] == UNTESTABLE and row["why"] == "regulariser=l1, model=baseline never learned"
    assert (row["used"], row["set_aside"]) == (0, 3)


def test_pairs_where_a_side_is_at_chance_are_set_aside_not_averaged():
    rows = seed_trials()
    for r in rows:  # augment fails to learn in seed 2 only
        if r["label"] == "augment" and r["seed"] == 2:
            r["final_test_acc"] = 0.10
    row = row_of(judge_all(frame(rows)),
                 "augmentation beats the baseline (the reference's setup) on test acc")
    assert (row["used"], row["set_aside"], row["n"]) == (2, 1, 2)
    assert row["effect"] == pytest.approx(0.46 - 0.43)
    assert "transform=augment, data_fraction=1 at chance in 1" in row["aside_why"]


@pytest.mark.parametrize("dropout_eval_train, verdict", [(0.52, HOLDS), (0.60, FAILS)])
def test_gap_claims_use_eval_mode_training_accuracy(dropout_eval_train, verdict):
    rows = seed_trials()
    for r in rows:
        clean = r["final_test_acc"] + (dropout_eval_train - 0.50 if r["label"] == "dropout" else 0.05)
        # train-mode accuracy: dropout lowers it mechanically (always "narrows" the gap)
        r["final_train_acc"] = clean - (0.15 if r["label"] == "dropout" else 0.0)
        r["final_train_eval_acc"] = clean
    row = row_of(judge_all(frame(rows)), "dropout narrows the train − test gap")
    assert row["verdict"] == verdict
    assert row["effect"] == pytest.approx((dropout_eval_train - 0.50) - 0.05)


def test_gap_falls_back_to_train_mode_only_without_eval_mode_numbers():
    trials = frame(seed_trials())
    assert with_gap(trials)["gap"].tolist() == pytest.approx(
        (trials["final_train_acc"] - trials["final_test_acc"]).tolist())
    assert not with_gap(trials)["gap_clean"].any()


@pytest.mark.parametrize("diffs", [(0.01, -0.01, 0.0), (0.0, 0.0, 0.0)])
def test_a_tie_never_holds(diffs):
    rows = seed_trials()
    for r in rows:  # L2 equals dropout on average (the interval touches or straddles zero)
        if r["label"] == "l2|adam-1e-3":
            r["final_test_acc"] = 0.50 + [0.0, 0.01, -0.01][r["seed"]] + diffs[r["seed"]]
    row = row_of(judge_all(frame(rows)), "L2 beats dropout on test accuracy")
    assert row["effect"] == pytest.approx(0.0, abs=1e-12)
    assert row["verdict"] == UNSURE


def test_best_of_needs_every_rival_beaten():
    rows = seed_trials({"sgd-1e-3": 0.60, "sgd-1e-5": 0.40, "adam-1e-5": 0.45})
    best = row_of(judge_all(frame(rows)), "SGD at lr 1e-3 is the best")
    assert best["verdict"] == HOLDS and best["effect"] == pytest.approx(0.60 - 0.55)
    rows = seed_trials({"sgd-1e-3": 0.50, "sgd-1e-5": 0.40, "adam-1e-5": 0.45})
    beaten = row_of(judge_all(frame(rows)), "SGD at lr 1e-3 is the best")
    assert beaten["verdict"] == FAILS  # adam 1e-3 (0.55) beats it


def test_one_seed_tests_over_settings_and_says_so():
    rows = seed_trials(seeds=1)
    table = judge_all(frame(rows))
    judged = table[table["verdict"].isin((HOLDS, FAILS, UNSURE))]
    assert set(judged["unit"]) == {"settings"}


def test_mean_ci_p_is_the_t_test():
    values = np.array([0.09, -0.02, 0.03])
    from scipy import stats

    assert mean_ci(values).p == pytest.approx(stats.ttest_1samp(values, 0.0).pvalue)


# ---- regressions from the statistics review -------------------------------------------------

def test_a_test_over_settings_is_never_a_look_of_a_sequential_design():
    from sweep.report.claims import Comparison, look_ps
    from sweep.report.sequential import sequential_p

    one_seed = Comparison("ok", effects=pd.Series([0.1, 0.11, 0.09, 0.1]), unit="settings")
    assert math.isnan(look_ps(one_seed, (3, 5)).max())  # settle's looks count seeds only
    assert look_ps(one_seed, (0,))[0] < 0.001  # a fixed one-seed design tests over settings
    p = np.array([[1e-9, 0.3]])  # look 1 (one seed) cannot test: only look 2's p counts
    assert sequential_p(p, (1, 2)) == pytest.approx([0.3])


def test_a_chance_trial_of_a_free_axis_does_not_enter_the_side_value():
    rows = seed_trials()
    rows += [dict(r, lam=0.1, final_test_acc=0.10, trial_id="") for r in rows
             if r["label"] == "l1"]  # L1 also ran at λ 0.1, where it never learned
    row = row_of(judge_all(frame(rows)), "dropout beats L1 on test accuracy")
    assert row["b_mean"] == pytest.approx(0.48) and row["effect"] == pytest.approx(0.50 - 0.48)


def test_tied_seeds_are_not_certainty():
    assert mean_ci([0.01, 0.01]).p > 0.001  # two tied seeds: not the certainty p = 0 claims
    assert mean_ci([0.0, 0.0, 0.0]).p == 1.0


def test_a_settled_run_cannot_be_combined_with_others():
    from sweep.report.claims import settle_design
    from sweep.report.load import ReportInputError

    plan = {"looks": [3, 5], "alpha": 0.05, "weight_power": 12.0}  # as sweep.settle records it
    assert settle_design({"a": {"settle": plan}}) == {"looks": (3, 5), "alpha": 0.05}
    with pytest.raises(ReportInputError, match="cannot be combined"):
        settle_design({"a": {"settle": plan}, "b": {}})


def _sequential_family(ps, means, effects):
    return pd.DataFrame({"ps": ps, "means": means, "verdict": [""] * len(ps),
                         "effect": effects, "claimed_sign": [1.0] * len(ps)})


def test_settled_at_a_look_implies_decisive_at_the_end():
    nan = math.nan
    table = decide(_sequential_family([[3e-4, 3e-4], [nan, 0.5]], [[0.1, 0.1], [nan, 0.0]],
                                      [0.1, 0.0]), (3, 5), alpha=0.05)
    for _, row in table.iterrows():  # a claim testable only later still counts at look 1
        assert math.isnan(row["settled_at"]) or row["verdict"] in (HOLDS, FAILS)


def test_the_direction_comes_from_the_deciding_look():
    table = decide(_sequential_family([[3e-5, 0.54, 0.75, 0.47]], [[1.0, 0.4, -0.19, -0.38]],
                                      [-0.38]), (3, 5, 8, 10), alpha=0.05)
    assert table["verdict"].tolist() == [UNSURE]  # decisive evidence was for A, the mean is not


def test_seeds_needed_is_the_fixed_design_power_calculation():
    from scipy import stats

    from sweep.report.claims import seeds_needed

    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # spread 1 over 3 seeds
    row = pd.Series({"verdict": UNSURE, "unit": "seeds", "n": 3, "effect": 1.0,
                     "low": 1.0 - half, "high": 1.0 + half})
    assert seeds_needed(row, 0.05) == 10  # d = 1: 80.3% power at 10 seeds, 76% at 9
    assert seeds_needed(row, 0.001) > 10  # a stricter (Holm) level needs more
    assert math.isnan(seeds_needed(pd.Series({**row, "verdict": HOLDS}), 0.05))  # settled


def test_a_run_settled_under_another_weight_power_is_not_judged_by_this_rule():
    from sweep.report.claims import settle_design
    from sweep.report.load import ReportInputError
    from sweep.report.sequential import WEIGHT_POWER

    plan = {"looks": [3, 4], "alpha": 0.05, "weight_power": WEIGHT_POWER}
    assert settle_design({"r": {"settle": plan}})["looks"] == (3, 4)
    for other in (dict(plan, weight_power=4.0), {k: v for k, v in plan.items() if k != "weight_power"}):
        with pytest.raises(ReportInputError, match="weight power"):
            settle_design({"r": {"settle": other}})


def test_the_reproduce_command_keeps_a_searched_value_exactly():
    from sweep.report.summary import reproduce_command

    row = {**TrialConfig(lr=0.0031622776601683794, lam=1.2345678e-5).to_dict(), "first_seed": 2}
    command = reproduce_command(row)
    assert "--lr 0.0031622776601683794" in command and "--lam 1.2345678e-05" in command
    assert "--seed 2" in command
