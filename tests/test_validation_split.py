"""The validation hold-out: a fixed, stratified slice of the training split that no trial trains
on, scored every epoch as val_acc, and the only accuracy sweep.search selects and prunes on."""
from __future__ import annotations

import json
import math

import pytest
import torch

from cifar_core import TrialConfig, fit
from cifar_core.data import DataError, holdout, subset, synthetic
from cifar_core.train import fit_fused
from sweep import search
from sweep.settings import Settings

DATA = synthetic(500, 100, seed=0)  # 50 training images per class


def as_rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(x.numpy()) for x in images}


def test_holdout_is_stratified_and_keeps_the_rest_in_order():
    train, val_x, val_y = holdout(DATA, 100)
    assert torch.bincount(val_y).tolist() == [10] * 10
    assert len(train.train_y) == 400 and torch.equal(train.test_x, DATA.test_x)
    shares = torch.bincount(holdout(DATA, 105)[2]).tolist()
    assert sum(shares) == 105 and set(shares) <= {10, 11}
    assert as_rows(train.train_x) | as_rows(val_x) == as_rows(DATA.train_x)


def test_holdout_is_seeded_by_a_constant_not_by_the_caller():
    torch.manual_seed(1)
    first = holdout(DATA, 100)
    torch.manual_seed(2)
    second = holdout(DATA, 100)
    assert all(torch.equal(a, b) for a, b in zip(first[1:], second[1:]))
    assert torch.equal(first[0].train_x, second[0].train_x)


@pytest.mark.parametrize("fraction, seed", [(1.0, 0), (0.3, 0), (0.3, 7)])
def test_a_trial_never_sees_the_held_out_images(fraction, seed):
    train, val_x, _ = holdout(DATA, 100)
    used = subset(train, fraction, seed)
    assert not as_rows(used.train_x) & as_rows(val_x)


@pytest.mark.parametrize("size, words", [(-1, "[0, 500)"), (500, "[0, 500)"), (2.5, "integer"),
                                         (495, "no training image")])
def test_bad_holdout_size_is_a_data_error_naming_it(size, words):
    with pytest.raises(DataError) as err:
        holdout(DATA, size)
    assert "val_size" in str(err.value) and words in str(err.value)


def test_fit_scores_the_holdout_only_when_given_and_trains_on_the_rest():
    cfg = TrialConfig(epochs=1, batch_size=64)
    held = next(fit(cfg, DATA, "cpu", val_size=100))
    plain = next(fit(cfg, DATA, "cpu"))
    assert math.isfinite(held.val_acc) and math.isfinite(held.val_loss)
    assert math.isnan(plain.val_acc) and math.isnan(plain.val_loss)
    assert round(held.images_per_second * held.train_seconds) == 400  # 500 - 100 trained on
    assert round(plain.images_per_second * plain.train_seconds) == 500


def test_fused_members_score_the_holdout_as_their_solo_runs_do():
    cfgs = [TrialConfig(epochs=1, batch_size=64, lr=lr) for lr in (1e-3, 3e-3)]
    fused = next(fit_fused(cfgs, DATA, "cpu", val_size=100))
    for cfg, member in zip(cfgs, fused):
        alone = next(fit(cfg, DATA, "cpu", val_size=100))
        assert member.val_loss == pytest.approx(alone.val_loss, abs=1e-4)
        assert abs(member.val_acc - alone.val_acc) <= 1 / 100 + 1e-12


def test_search_refuses_val_size_0_in_one_line(tmp_path, tiny_cifar_dir, capsys):
    code = search.main(["--results-dir", str(tmp_path), "--name", "x", "--data-dir",
                        str(tiny_cifar_dir), "--val-size", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--val-size" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_holdout_too_big_for_the_data_fails_before_ray(tmp_path, tiny_cifar_dir, capsys):
    code = search.main(["--results-dir", str(tmp_path), "--name", "x", "--data-dir",
                        str(tiny_cifar_dir)])  # the default 5000 > 600 training images
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--val-size=5000" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ray
def test_search_selects_on_val_acc_and_records_test_beside(tmp_path, tiny_cifar_dir):
    """Optuna's per-epoch and final values are the trials' val_acc, never their test_acc."""
    import optuna
    from test_search import rows, run_search

    done = run_search("--results-dir", tmp_path, "--name", "val", "--n-trials", "2", "--epochs",
                      "2", "--batch-size", "64", "--val-size", "100", "--max-concurrent", "2",
                      "--no-prune", data_dir=tiny_cifar_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "val"
    trials, epochs = rows(run / "trials.csv"), rows(run / "epochs.csv")
    study = optuna.load_study(study_name="val", storage=search.open_storage(
        Settings(), str(run))[0]())
    assert len(study.trials) == len(trials) == 2
    for t in study.trials:
        row = next(r for r in trials if float(r["lr"]) == t.params["lr"])
        mine = {int(e["epoch"]): float(e["val_acc"]) for e in epochs
                if e["trial_id"] == row["trial_id"]}
        assert t.value == float(row["final_val_acc"]) and t.intermediate_values == mine
        assert row["final_test_acc"] and float(row["best_val_acc"]) == max(mine.values())
    assert any(r["final_val_acc"] != r["final_test_acc"] for r in trials)
    info = json.loads((run / "run.json").read_text())
    assert info["settings"]["val_size"] == 100 and info["best"]["metric"] == "val_acc"
    assert info["best"]["test_acc"] == float(next(
        r["final_test_acc"] for r in trials if r["trial_id"] == info["best"]["trial_id"]))
    assert "best: val acc" in done.stdout and "test acc" in done.stdout
