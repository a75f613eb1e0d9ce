"""Regression tests pinned to behaviour, each written against one realistic one-line bug.

Each test states its expectation independently of the code it checks (literal constants, the
data itself, a run compared with itself), so a typo in a shared constant or a dropped line in a
refactor cannot move the code and the expectation together. None starts Ray: the Tune pieces are
exercised through their public calls (a Recorder fed results, train_trial with tune's report and
get_checkpoint replaced).
"""
from __future__ import annotations

import collections
import contextlib
import math
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from cifar_core import TrialConfig, augment, fit, fit_fused
from cifar_core.augment import train_batch
from cifar_core.data import synthetic

eval_batch = augment.eval_batch  # the evaluation transform: normalises, never augments

CPU = torch.device("cpu")
TINY = synthetic(96, 20, seed=0)  # small enough that a whole epoch at batch 4 is 24 quick steps
SMALL_BATCH = 4
BATCHES_PER_EPOCH = len(TINY.train_y) // SMALL_BATCH  # 24


# -- (a) normalisation ------------------------------------------------------------------------

# The CIFAR-10 statistics the seed notebook normalises with, written out here on purpose: every
# other test builds its expectation from cifar_core.augment.MEAN / STD and so would follow a typo.
PUBLISHED_MEAN = (0.4914, 0.4822, 0.4465)
PUBLISHED_STD = (0.2023, 0.1994, 0.2010)


def _per_channel_affine(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of x -> (x - mean) / std, read off the outputs for black (image 0) and white
    (image 1) inputs, per channel."""
    black, white = out[0, :, 0, 0].double(), out[1, :, 0, 0].double()
    std = 1.0 / (white - black)
    return -black * std, std


@pytest.mark.parametrize("path", ["eval normalize", "eval augment+normalize", "train normalize"])
def test_normalisation_uses_the_published_cifar10_mean_and_std(path):
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    x[1] = 255
    split, transform = path.split()
    out = eval_batch(x, transform) if split == "eval" else train_batch(x, transform, None)
    mean, std = _per_channel_affine(out)
    assert mean.tolist() == pytest.approx(PUBLISHED_MEAN, abs=1e-6)
    assert std.tolist() == pytest.approx(PUBLISHED_STD, abs=1e-6)


@pytest.mark.real_data
def test_normalised_real_cifar10_images_are_centred_with_unit_per_image_spread(real_cifar_dir):
    """The published STD is the mean per-image standard deviation (the pixel std over the whole
    set is ~0.25), so normalised images have per-image std ~1 in every channel; a 4.5% typo in
    one constant (0.2010 -> 0.2100) moves its channel to ~0.96."""
    from cifar_core.data import load_cifar10

    data = load_cifar10(real_cifar_dir)
    pick = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:2000]
    x = eval_batch(data.train_x[pick], "normalize")  # the evaluation path
    assert x.mean(dim=(0, 2, 3)).abs().max().item() < 0.04
    assert x.std(dim=(2, 3)).mean(dim=0).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.02)


# -- (b) claim verdicts -----------------------------------------------------------------------


@pytest.mark.parametrize("claimed_sign", [1.0, -1.0])  # higher is better / lower is better
def test_a_decisive_but_exactly_tied_effect_neither_holds_nor_fails(claimed_sign):
    from sweep.report.claims import FAILS, HOLDS, UNSURE, decide

    effects = [0.0, 0.02 * claimed_sign, -0.02 * claimed_sign]  # a tie, one for A, one against
    table = pd.DataFrame({"ps": [[1e-6]] * 3, "verdict": [""] * 3, "effect": effects,
                          "low": [0.0, 0.01, -0.03], "high": [0.0, 0.03, -0.01],
                          "n": [3] * 3, "unit": ["seeds"] * 3, "claimed_sign": [claimed_sign] * 3})
    judged = decide(table, (0,), alpha=0.05)
    assert (judged["p_adj"] <= 0.05).all()  # all decisive: only the direction decides
    assert judged["verdict"].tolist() == [UNSURE, HOLDS, FAILS]


# -- (c) the recorder across a driver restart -------------------------------------------------


def _epoch_result(epoch: int, acc: float) -> dict:
    return dict(epoch=epoch, train_loss=2.0, train_penalty=0.0, train_acc=acc, test_loss=2.0,
                test_acc=acc, train_eval_loss=2.0, train_eval_acc=acc, seconds=1.0,
                train_seconds=1.0, images_per_second=100.0, status="ok", node="n")


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_retried_epoch_after_a_driver_restart_is_recorded_once(tmp_path):
    from sweep.recorder import Recorder

    values = dict(TrialConfig(epochs=3, batch_size=64).to_dict(), label="baseline")
    trial = SimpleNamespace(trial_id="abc_00000", config={"trial": values})
    recorder = Recorder(str(tmp_path))
    for epoch in (1, 2):
        recorder.on_trial_result(epoch, [], trial, _epoch_result(epoch, 0.1 * epoch))
    recorder.on_experiment_end([])

    restored = pickle.loads(pickle.dumps(recorder))  # Tune restores the callback from tuner.pkl
    for epoch in (2, 3):  # the trial retries from its epoch-1 checkpoint: epoch 2 comes again
        restored.on_trial_result(epoch, [], trial, _epoch_result(epoch, 0.1 * epoch + 0.01))
    restored.on_experiment_end([])

    epochs = [(r["trial_id"], int(r["epoch"])) for r in _csv(tmp_path / "epochs.csv")]
    assert epochs == [("abc_00000", 1), ("abc_00000", 2), ("abc_00000", 3)]
    (row,) = _csv(tmp_path / "trials.csv")
    assert int(row["epochs_done"]) == 3


# -- (d) augmentation streams follow the seed -------------------------------------------------


def _augmented(seed: int) -> torch.Tensor:
    """Two consecutive augmented batches a trial with this seed trains on, from a fresh state."""
    from cifar_core import TrainState

    state = TrainState.create(TrialConfig(transform="augment", seed=seed), CPU)
    images = TINY.train_x[:32]
    return torch.stack([train_batch(images, "augment", state.aug_rng) for _ in range(2)])


def test_the_augmentation_draws_are_those_of_the_trial_seed():
    assert torch.equal(_augmented(0), _augmented(0))  # a rerun of a seed draws the same
    assert not torch.equal(_augmented(0), _augmented(1))  # another seed draws other augmentations
    assert not torch.equal(_augmented(1), _augmented(2))


# -- (e) a single Ray trial resumes from its checkpoint ---------------------------------------


class _Interrupted(Exception):
    """The trial's worker dies right after reporting (a node lost, a preemption)."""


def _run_trial(monkeypatch, folder: Path, config: dict, data: dict, *, resume_from=None,
               stop_after: int | None = None) -> list[tuple[dict, Path]]:
    """train_trial with tune.report / tune.get_checkpoint replaced: [(metrics, checkpoint copy)]."""
    from ray import tune

    from sweep.trainable import train_trial

    reports = []

    def report(metrics, checkpoint=None):
        saved = folder / f"checkpoint{len(reports)}"
        with checkpoint.as_directory() as source:  # the trainable may delete it after reporting
            shutil.copytree(source, saved)
        reports.append((dict(metrics), saved))
        if stop_after is not None and len(reports) >= stop_after:
            raise _Interrupted

    def get_checkpoint():
        return None if resume_from is None else tune.Checkpoint.from_directory(str(resume_from))

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", get_checkpoint)
    threads = torch.get_num_threads()
    try:
        with contextlib.suppress(_Interrupted):
            train_trial(config, data)
    finally:
        torch.set_num_threads(threads)
    return reports


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("seconds", "train_seconds", "images_per_second")}


def test_a_retried_single_trial_continues_from_its_checkpoint(monkeypatch, tmp_path):
    config = {"trial": dict(TrialConfig(model="dropout", transform="augment+normalize", epochs=3,
                                        batch_size=64).to_dict(), label="baseline")}
    data = synthetic(128, 20, seed=1).to_numpy()
    for name in ("whole", "first", "retry"):
        (tmp_path / name).mkdir()
    whole = _run_trial(monkeypatch, tmp_path / "whole", config, data)
    assert [m["epoch"] for m, _ in whole] == [1, 2, 3]

    first = _run_trial(monkeypatch, tmp_path / "first", config, data, stop_after=1)
    assert [m["epoch"] for m, _ in first] == [1]
    retry = _run_trial(monkeypatch, tmp_path / "retry", config, data, resume_from=first[0][1])
    assert [m["epoch"] for m, _ in retry] == [2, 3]  # not epoch 1 again from scratch
    assert [_comparable(m) for m, _ in retry] == [_comparable(m) for m, _ in whole[1:]]


# -- (f) an infinite penalty is a divergence --------------------------------------------------


@contextlib.contextmanager
def _optimiser_steps():
    """Counts optimiser steps while active, by each param group's learning rate."""
    steps = collections.Counter()

    def hook(optimiser, args, kwargs):
        for group in optimiser.param_groups:
            steps[float(group["lr"])] += 1

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield steps
    finally:
        handle.remove()


def _exploding(**kw) -> TrialConfig:
    """Finite weights, infinite L2 penalty from the first step (lam * sum(w^2) overflows)."""
    return TrialConfig(regulariser="l2", lam=1e38, epochs=2, batch_size=SMALL_BATCH, **kw)


def test_an_infinite_penalty_ends_a_solo_trial_as_diverged_at_once():
    with _optimiser_steps() as steps:
        results = list(fit(_exploding(), TINY, CPU))
    assert [(r.epoch, r.status) for r in results] == [(1, "diverged")]
    assert math.isinf(results[0].train_penalty)
    assert 0 < sum(steps.values()) < BATCHES_PER_EPOCH  # stopped at a check, not at the epoch's end


def test_an_infinite_penalty_diverges_one_fused_member_while_the_other_trains_on():
    sane = TrialConfig(lr=2e-3, epochs=2, batch_size=SMALL_BATCH)
    with _optimiser_steps() as steps:
        epochs = list(fit_fused([_exploding(), sane], TINY, CPU))
    diverging = [(r.epoch, r.status) for r, _ in epochs if r is not None]
    healthy = [(r.epoch, r.status) for _, r in epochs if r is not None]
    assert diverging == [(1, "diverged")]
    assert healthy == [(1, "ok"), (2, "ok")]
    assert 0 < steps[1e-3] < BATCHES_PER_EPOCH  # the exploding member left the stack at a check
    assert steps[2e-3] == 2 * BATCHES_PER_EPOCH
