"""cifar_core: config validation, the seed networks, penalties, determinism, divergence, imports."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from cifar_core import ConfigError, TrainState, TrialConfig, fit
from cifar_core.data import synthetic
from cifar_core.models import build_model, count_parameters
from cifar_core.train import penalty


def test_config_defaults_are_the_seed_and_variants_are_replaced():
    cfg = TrialConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lam, cfg.final_relu) == (10, 256, 1e-3, 1e-3, True)
    variant = dataclasses.replace(cfg, optimiser="SGD")
    assert variant.optimiser == "sgd" and cfg.optimiser == "adam"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1


@pytest.mark.parametrize("given, key, expected", [
    ("L2", "regulariser", "l2"), ("Adam", "optimiser", "adam"), ("SGD", "optimiser", "sgd"),
    ("Augment+Normalize", "transform", "augment+normalize"),
    ("with_aug_norm", "transform", "augment+normalize"),
    ("Dropout", "model", "dropout"),
])
def test_config_accepts_seed_spellings(given, key, expected):
    assert getattr(TrialConfig(**{key: given}), key) == expected


@pytest.mark.parametrize("key, value, words", [
    ("transform", "blur", ["transform", "'blur'", "none, augment, normalize, augment+normalize"]),
    ("lr", 0, ["lr", "> 0"]), ("lr", -1e-3, ["lr"]), ("lr", "fast", ["lr", "'fast'"]),
    ("lam", -1, ["lam", ">= 0"]), ("data_fraction", 1.5, ["data_fraction", "(0, 1]"]),
    ("data_fraction", 0, ["data_fraction"]), ("epochs", 0, ["epochs", ">= 1"]),
    ("batch_size", 0, ["batch_size"]), ("epochs", 2.5, ["epochs", "integer"]),
    ("final_relu", "maybe", ["final_relu", "true or false"]),
])
def test_config_errors_name_key_value_and_allowed(key, value, words):
    with pytest.raises(ConfigError) as err:
        TrialConfig(**{key: value})
    assert all(w in str(err.value) for w in words), str(err.value)


def test_unknown_key_fails_loudly():
    with pytest.raises(ConfigError, match="unknown key.*learning_rate"):
        TrialConfig.from_dict({"learning_rate": 0.1})


def test_seed_networks_match_the_report():
    base = build_model(TrialConfig())
    assert count_parameters(base) == 61_706
    layers = [type(m).__name__ for m in base.linear_block]
    assert layers == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "ReLU"]
    drop = build_model(TrialConfig(model="dropout"))
    assert count_parameters(drop) == 61_706
    assert [type(m).__name__ for m in drop.linear_block] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU"]
    assert all(m.p == 0.25 for m in drop.linear_block if isinstance(m, torch.nn.Dropout))
    no_relu = build_model(TrialConfig(final_relu=False))
    assert type(no_relu.linear_block[-1]).__name__ == "Linear"
    x = torch.randn(5, 3, 32, 32)
    assert base(x).shape == (5, 10) and (base(x) >= 0).all()  # the seed's ReLU clamps logits


def test_final_relu_off_allows_negative_logits():
    torch.manual_seed(0)
    out = build_model(TrialConfig(final_relu=False))(torch.randn(64, 3, 32, 32))
    assert (out < 0).any()


@pytest.mark.parametrize("reg, lam", [("l1", 1e-3), ("l2", 1e-3), ("l2", 0.5), ("none", 1e-3)])
def test_penalty_against_hand_computation(reg, lam):
    cfg = TrialConfig(regulariser=reg, lam=lam)
    model = build_model(cfg)
    expected = 0.0
    for p in model.parameters():  # every parameter, biases included, of this model only
        for w in p.detach().flatten().tolist():
            expected += abs(w) if reg == "l1" else w * w if reg == "l2" else 0.0
    assert penalty(model, cfg).item() == pytest.approx(lam * expected, rel=1e-5)


def test_penalty_is_added_to_the_loss_not_overwritten():
    data = synthetic(256, 64, seed=1)
    plain = next(fit(TrialConfig(epochs=1, seed=3, batch_size=32), data, "cpu"))
    l2 = next(fit(TrialConfig(epochs=1, seed=3, batch_size=32, regulariser="l2", lam=0.1), data, "cpu"))
    assert plain.train_penalty == 0.0 and l2.train_penalty > 0.01
    # train_loss is the data loss alone (the penalty is reported apart) and the gradient of the
    # penalty changed the weights, so later batches and the test loss differ
    assert l2.train_loss < 3 and l2.train_loss != pytest.approx(plain.train_loss, abs=1e-6)
    assert l2.test_loss != pytest.approx(plain.test_loss, abs=1e-6)


def test_fit_yields_one_result_per_epoch_and_learns():
    data = synthetic(1024, 256, seed=0)
    cfg = TrialConfig(epochs=4, lr=3e-3, final_relu=False, batch_size=64)
    results = list(fit(cfg, data, "cpu"))
    assert [r.epoch for r in results] == [1, 2, 3, 4]
    assert all(r.status == "ok" and r.images_per_second > 0 and r.seconds >= r.train_seconds
               for r in results)
    assert results[-1].test_acc > 0.5  # chance is 0.1
    assert results[-1].train_loss < results[0].train_loss


def test_process_setup_flushes_subnormal_floats_and_the_loop_leaves_the_process_alone():
    # L2-decayed weights produce subnormal products, which x86 computes many times slower; the
    # entry points switch the CPU to flush them to zero (cifar_core.process), fit never does.
    from cifar_core.process import setup_process

    tiny = torch.tensor([1e-30])
    threads = torch.get_num_threads()
    torch.set_flush_denormal(False)
    try:
        list(fit(TrialConfig(epochs=1, batch_size=64), synthetic(128, 64, seed=0), "cpu"))
        assert (tiny * 1e-10).item() > 0  # subnormal, kept: fit changed nothing process-wide
        assert torch.get_num_threads() == threads
        applied = setup_process(1)
        assert applied["flush_denormals"] and applied["threads"] == 1
        assert (tiny * 1e-10).item() == 0.0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("transform, model", [("augment+normalize", "dropout"), ("none", "baseline")])
def test_same_config_and_seed_give_identical_metrics(transform, model):
    data = synthetic(512, 128, seed=0)
    cfg = TrialConfig(epochs=2, transform=transform, model=model, batch_size=64)
    first = [r.to_dict() for r in fit(cfg, data, "cpu")]
    second = [r.to_dict() for r in fit(cfg, data, "cpu")]
    keys = ["train_loss", "train_acc", "test_loss", "test_acc", "train_penalty"]
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]
    other = [r.to_dict() for r in fit(dataclasses.replace(cfg, seed=1), data, "cpu")]
    assert [r["train_loss"] for r in other] != [r["train_loss"] for r in first]


def test_resume_from_state_dict_continues_exactly():
    data = synthetic(512, 128, seed=0)
    cfg = TrialConfig(epochs=3, transform="augment", model="dropout", batch_size=64)
    straight = [r.train_loss for r in fit(cfg, data, "cpu")]
    state = TrainState.create(cfg, torch.device("cpu"))
    first = [r.train_loss for r in fit(dataclasses.replace(cfg, epochs=1), data, "cpu", state=state)]
    saved = state.state_dict()
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed_state = TrainState.create(cfg, torch.device("cpu"))
    resumed_state.load_state_dict(saved)
    rest = [r.train_loss for r in fit(cfg, data, "cpu", state=resumed_state)]
    assert first + rest == straight


def test_divergence_ends_the_trial_with_status_instead_of_raising():
    data = synthetic(512, 128, seed=0)
    results = list(fit(TrialConfig(epochs=5, optimiser="sgd", lr=1e3, final_relu=False), data, "cpu"))
    assert results[-1].status == "diverged"
    assert len(results) < 5


def test_cifar_core_imports_no_ray_or_optuna():
    code = "import sys, cifar_core, cifar_core.train, cifar_core.__main__; " \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bf16_autocast_is_opt_in_and_trains():
    data = synthetic(512, 128, seed=0)
    cfg = TrialConfig(epochs=2, lr=3e-3, final_relu=False, batch_size=64)
    plain = [r.train_loss for r in fit(cfg, data, "cpu")]
    bf16 = list(fit(cfg, data, "cpu", amp="bf16"))
    assert all(r.status == "ok" for r in bf16) and bf16[-1].test_acc > 0.3
    assert [r.train_loss for r in bf16] != plain  # bf16 matmuls round differently
    with pytest.raises(ValueError, match="amp='fp8'"):
        next(fit(cfg, data, "cpu", amp="fp8"))


@pytest.mark.parametrize("model", ["baseline", "dropout"])
def test_pooling_before_relu_changes_neither_values_nor_gradients(model):
    """SeedNet.forward pools before the ReLU ahead of each pool (faster); the seed's order gives
    bit-identical logits and the same gradients."""
    torch.manual_seed(0)
    net = build_model(TrialConfig(model=model)).eval()
    x = torch.randn(32, 3, 32, 32)
    fast = net(x)
    seed_order = net.linear_block(net.conv_block(x).flatten(1))
    assert torch.equal(fast, seed_order)
    grads = []
    for out in (lambda: net(x), lambda: net.linear_block(net.conv_block(x).flatten(1))):
        net.zero_grad()
        out().square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
