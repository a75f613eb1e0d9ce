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


def test_the_sync_free_selection_equals_the_cpu_gather():
    from cifar_core import augment

    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    p = augment.draw_params(64, torch.Generator().manual_seed(1), "cpu")
    for mask, fn in ((p.gray, augment._gray), (p.hflip, lambda s: s.flip(-1)),
                     (p.sharpen, lambda s: augment._sharpen(s, augment.SHARPNESS_FACTOR))):
        assert torch.equal(augment._select(x, mask, fn), augment._where_(x.clone(), mask, fn))


SYNC_OPS = {"aten.nonzero", "aten._local_scalar_dense", "aten.item", "aten.is_nonzero",
            "aten.masked_select", "aten.unique", "aten._unique2", "aten.equal"}
STEP_OP_BUDGET = 330  # augment+normalize, dropout, L2: data, forward, loss, penalty, backward


def test_a_training_step_on_an_accelerator_forces_no_host_sync_and_fits_its_op_budget():
    """The step's data path, stacked forward, loss, penalty and backward, run on the meta device
    (CUDA's semantics: not CPU, so the sync-free branches run), logged op by op."""
    import collections

    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    from cifar_core.augment import train_batch
    from cifar_core.fused import forward, stack_parameters
    from cifar_core.models import build_model
    from cifar_core.train import penalty

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    cfg = TrialConfig(transform="augment+normalize", model="dropout", regulariser="l2")
    device = torch.device("meta")
    model = build_model(cfg).to(device)
    x = torch.empty(256, 3, 32, 32, dtype=torch.uint8, device=device)
    y = torch.empty(256, dtype=torch.long, device=device)

    def step():
        with Log() as log:
            out = forward(model, stack_parameters([model]), train_batch(x, cfg.transform, None), None)
            (F.cross_entropy(out[0], y) + penalty(model, cfg)).backward()
        return log.ops

    step()  # the first step builds the per-device constants
    ops = step()
    assert not SYNC_OPS & set(ops), collections.Counter(o for o in ops if o in SYNC_OPS)
    assert len(ops) <= STEP_OP_BUDGET, collections.Counter(ops).most_common(10)
    assert "aten.linspace" not in ops and "aten.lift_fresh" not in ops  # constants are cached
