"""The verdict rules, each shown by a flip: chance sides, Holm, the clean gap, ties."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

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
