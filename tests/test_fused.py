"""The one loop (cifar_core.train over cifar_core.fused): every member of a stack, and a stack of
one (`fit`), trains as the plain per-model loop (tests/reference_loop.py) would, on tiny data.

Same seed means same weights, subset, shuffle, augmentation and dropout draws, so a member's
per-epoch metrics equal the plain loop's up to float rounding: the grouped convolution and the
batched matmul sum in a different order than the plain kernels (observed gaps <= 1.2e-6 here).
Tolerance: abs 1e-4 on losses and penalties, one sample on accuracies. The learning rates stay
where training is not chaotic: with Adam at lr 1e-2 and dropout, a solo run already moves its
test loss by 3.5e-4 when only its memory format changes, and the fused gap grows alike.
"""
from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch
import torch.nn.functional as F

from cifar_core import TrialConfig, fit
from cifar_core.data import synthetic
from cifar_core.fused import SHARED, dropout_masks
from cifar_core.train import FusedState, fit_fused
from reference_loop import reference_fit

DATA = synthetic(300, 100, seed=0)  # 300: the last batch of 64 is a short one
LOSS_TOL = 1e-4
METRICS = ("train_loss", "train_penalty", "train_acc", "test_loss", "test_acc")
SHARED_SETTINGS = dict(transform="augment+normalize", epochs=2, batch_size=64)
MEMBERS = [dict(optimiser="adam", lr=1e-3, regulariser="l2", lam=1e-3, seed=0),
           dict(optimiser="sgd", lr=0.1, regulariser="l1", lam=1e-4, seed=1),
           dict(optimiser="adam", lr=3e-3, regulariser="none", lam=0.0, seed=2)]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def configs(seeds=None, **shared) -> list[TrialConfig]:
    """MEMBERS (their own seeds 0, 1, 2 unless `seeds` replaces them) with the shared settings."""
    members = [dict(m, seed=s) for m, s in zip(MEMBERS, seeds)] if seeds else MEMBERS
    return [TrialConfig(**SHARED_SETTINGS, **shared, **m) for m in members]


# (0, 0, 0): one lockstep group, batches drawn once, dense first conv (the grid's case);
# (0, 0, 1): a group of two plus one, grouped first conv; None: three seeds, nothing shared
SEEDINGS = [None, (0, 0, 0), (0, 0, 1)]


def assert_same(fused, alone, n_train: int, n_test: int) -> None:
    """One member's EpochResults against its solo run's, epoch by epoch, within the tolerance."""
    assert [r.epoch for r in fused] == [r.epoch for r in alone]
    for f, a in zip(fused, alone):
        assert f.status == a.status
        for key in ("train_loss", "train_penalty", "test_loss"):
            assert getattr(f, key) == pytest.approx(getattr(a, key), abs=LOSS_TOL, nan_ok=True), key
        assert abs(f.train_acc - a.train_acc) <= 1 / n_train + 1e-12
        assert abs(f.test_acc - a.test_acc) <= 1 / n_test + 1e-12 or math.isnan(a.test_acc)


def test_dropout_masks_are_the_draws_of_F_dropout_on_cpu():
    """Guards the assumption fused dropout rests on: F.dropout's CPU draw is bernoulli_(1-p)/(1-p)."""
    h = torch.randn(2, 64, 120)
    gens = []
    expected = []
    for k in range(2):
        torch.manual_seed(k)
        gens.append(torch.Generator().set_state(torch.get_rng_state()))
        expected.append(F.dropout(h[k], 0.25, training=True))
    assert torch.equal(h * dropout_masks(h, 0.25, gens), torch.stack(expected))


@pytest.mark.parametrize("seeds", SEEDINGS)
@pytest.mark.parametrize("model, fraction", [("baseline", 1.0), ("dropout", 0.5)])
def test_each_member_matches_its_solo_run(model, fraction, seeds):
    cfgs = configs(seeds, model=model, data_fraction=fraction)
    fused = list(fit_fused(cfgs, DATA, "cpu"))
    assert len(fused) == 2 and all(len(epoch) == len(cfgs) for epoch in fused)
    n_train = round(fraction * len(DATA.train_y))
    for k, cfg in enumerate(cfgs):
        alone = list(reference_fit(cfg, DATA, "cpu"))
        assert_same([epoch[k] for epoch in fused], alone, n_train, len(DATA.test_y))
        assert all(r.status == "ok" and r.images_per_second > 0 for r in alone)
    train_losses = {round(epoch[k].train_loss, 6) for epoch in fused for k in range(len(cfgs))}
    assert len(train_losses) == 2 * len(cfgs), "members must train differently"


@pytest.mark.parametrize("model, transform", [("dropout", "augment+normalize"), ("baseline", "none")])
def test_a_stack_of_one_trains_as_the_plain_loop(model, transform):
    for cfg in [dataclasses.replace(c, transform=transform) for c in configs(model=model)]:
        assert_same(list(fit(cfg, DATA, "cpu")), list(reference_fit(cfg, DATA, "cpu")),
                    len(DATA.train_y), len(DATA.test_y))


@pytest.mark.parametrize("key", SHARED)
def test_members_that_differ_in_a_shared_key_are_refused(key):
    other = {"model": "dropout", "transform": "none", "epochs": 3, "batch_size": 32,
             "data_fraction": 0.5, "final_relu": False}[key]
    cfgs = configs()
    cfgs[1] = dataclasses.replace(cfgs[1], **{key: other})
    with pytest.raises(ValueError, match=f"share {key}"):
        next(fit_fused(cfgs, DATA, "cpu"))


def test_members_with_one_seed_draw_each_batch_once(monkeypatch):
    import cifar_core.train as train_module

    calls = []
    real = train_module.train_batch
    monkeypatch.setattr(train_module, "train_batch", lambda *a: calls.append(1) or real(*a))
    steps = 2 * math.ceil(len(DATA.train_y) / SHARED_SETTINGS["batch_size"])  # 2 epochs
    list(fit_fused(configs((0, 0, 0)), DATA, "cpu"))
    assert len(calls) == steps
    calls.clear()
    list(fit_fused(configs((0, 0, 1)), DATA, "cpu"))
    assert len(calls) == 2 * steps


@pytest.mark.parametrize("seeds", [None, (0, 0, 0)])
def test_a_diverging_member_stops_while_the_others_complete(seeds):
    cfgs = configs(seeds)
    cfgs[1] = dataclasses.replace(cfgs[1], optimiser="sgd", lr=1e3, regulariser="none", lam=0.0)
    fused = list(fit_fused(cfgs, DATA, "cpu"))
    assert len(fused) == 2
    assert fused[0][1].status == "diverged" and fused[1][1] is None
    assert math.isnan(fused[0][1].test_acc) and not math.isfinite(fused[0][1].train_loss)
    assert list(fit(cfgs[1], DATA, "cpu"))[0].status == "diverged"
    for k in (0, 2):  # the diverged member left the stack without disturbing the others
        assert_same([epoch[k] for epoch in fused], list(reference_fit(cfgs[k], DATA, "cpu")),
                    len(DATA.train_y), len(DATA.test_y))


def test_a_checkpoint_resumes_every_member_exactly():
    cfgs = configs(model="dropout")
    whole = list(fit_fused(cfgs, DATA, "cpu"))
    state = FusedState.create(cfgs, torch.device("cpu"))
    first = next(fit_fused(cfgs, DATA, "cpu", state=state))
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # a resumed trial's process has its own global RNG state
    resumed = FusedState.create(cfgs, torch.device("cpu"))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    rest = list(fit_fused(cfgs, DATA, "cpu", state=resumed))
    assert len(rest) == 1
    for k in range(len(cfgs)):
        for got, want in ((first[k], whole[0][k]), (rest[0][k], whole[1][k])):
            assert got.epoch == want.epoch
            assert [getattr(got, m) for m in METRICS] == [getattr(want, m) for m in METRICS]
    assert list(fit_fused(cfgs, DATA, "cpu", state=resumed)) == []  # finished: nothing more


def test_a_checkpoint_of_another_stack_size_is_refused():
    state = FusedState.create(configs(), torch.device("cpu")).state_dict()
    smaller = FusedState.create(configs()[:2], torch.device("cpu"))
    with pytest.raises(ValueError, match="holds 3 members"):
        smaller.load_state_dict(state)


def test_bf16_autocast_reaches_fused_members_as_it_does_fit():
    cfgs = configs((0, 0, 0), model="baseline")
    plain = [[r.train_loss for r in epoch] for epoch in fit_fused(cfgs, DATA, "cpu")]
    bf16 = list(fit_fused(cfgs, DATA, "cpu", amp="bf16"))
    assert all(r.status == "ok" and math.isfinite(r.test_loss) for epoch in bf16 for r in epoch)
    assert [[r.train_loss for r in epoch] for epoch in bf16] != plain  # bf16 rounds differently
    alone = list(fit(cfgs[0], DATA, "cpu", amp="bf16"))  # same autocast, same member: close
    assert [e[0].train_loss for e in bf16] == pytest.approx([r.train_loss for r in alone], abs=0.05)
    with pytest.raises(ValueError, match="amp='fp8'"):
        next(fit_fused(cfgs, DATA, "cpu", amp="fp8"))
