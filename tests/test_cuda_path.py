"""The CUDA path's CPU-testable parts: checkpoints restored across device types, the device a
trial picks, and bf16 dropout masks."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cifar_core import TrainState, TrialConfig, fit
from cifar_core.data import synthetic
from cifar_core.fused import dropout_masks

DATA = synthetic(128, 64, seed=0)


def test_rng_states_saved_on_another_device_type_are_reseeded_with_a_warning():
    cfg = TrialConfig(epochs=2, batch_size=64, transform="augment", model="dropout")
    state = TrainState.create(cfg, torch.device("cpu"))
    list(fit(dataclasses.replace(cfg, epochs=1), DATA, "cpu", state=state))
    saved = state.state_dict()
    saved["aug_rng"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state size
    resumed = TrainState.create(cfg, torch.device("cpu"))
    with pytest.warns(UserWarning, match="aug_rng was saved on another device type"):
        resumed.load_state_dict(saved)
    (result,) = list(fit(cfg, DATA, "cpu", state=resumed))
    assert result.epoch == 2 and math.isfinite(result.train_loss)


def test_a_trial_picks_cuda_only_when_ray_booked_it_a_gpu(monkeypatch):
    from sweep import trainable

    monkeypatch.setattr(trainable.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(trainable.ray, "get_gpu_ids", lambda: [])
    assert trainable.trial_device(trainable.Execution()) == "cpu"
    monkeypatch.setattr(trainable.ray, "get_gpu_ids", lambda: [0])
    assert trainable.trial_device(trainable.Execution()) == "cuda"
    assert trainable.trial_device(trainable.Execution(device="cpu")) == "cpu"  # named wins


def test_dropout_masks_stay_float32_under_bf16():
    h = torch.ones(2, 64, 120, dtype=torch.bfloat16)
    masks = dropout_masks(h, 0.25, [torch.Generator().manual_seed(k) for k in range(2)])
    assert masks.dtype == torch.float32
    kept = masks[masks != 0]
    assert kept.numel() > 0 and torch.equal(kept, torch.full_like(kept, 1 / 0.75))
