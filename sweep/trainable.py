"""The one Ray adapter: trial dict -> TrialConfig(s) -> cifar_core.fit_fused -> tune.report.

Grid and Optuna search both run `train_trial`, and every trial trains as a stack
(cifar_core.train: a single configuration is a stack of one). Each epoch is reported with a
checkpoint (every member's model, optimiser, RNG streams, epoch and status); a retried or resumed
trial continues from the latest one. The dataset arrives through `tune.with_parameters` as numpy
arrays in Ray's object store, so every trial on a node maps the same shared-memory copy instead
of loading its own. A single trial reports its metrics flat; a fused trial (`{"members": [...]}`,
from `sweep.grid --fuse N`) reports each epoch once with every member's result under `members`.
Process settings (threads, flush-to-zero, malloc) are applied here, in the trial's own thread.
"""
from __future__ import annotations

import math
import os
import socket
import tempfile
from dataclasses import dataclass

import ray
import torch
from ray import tune

from cifar_core import CifarData, FusedState, TrialConfig, fit_fused, resolve_device, setup_process

from .schema import BOOKKEEPING, configurations, trial_values

STATE_FILE = "state.pt"


@dataclass(frozen=True)
class Execution:
    """How trials run (never what they train): threads, device, memory format."""

    threads: int = 1
    device: str | None = None
    channels_last: bool = True
    amp: str | None = None  # "bf16": forward passes under bf16 autocast (GPU)
    val_size: int = 0  # training images every trial of the run holds out and scores (val_acc)


def train_trial(config: dict, data: dict, execution: Execution = Execution()) -> None:
    """Train one Ray trial (one configuration or a fused stack), reporting every epoch; a
    diverged member ends normally (no retry)."""
    fused = "members" in trial_values(config)
    cfgs = [_config(values) for values in configurations(config)]
    device = resolve_device(trial_device(execution))
    setup_process(execution.threads, device)
    state = _restored(FusedState.create(cfgs, device), device)
    node = node_name()
    for results in fit_fused(cfgs, CifarData.from_numpy(data), device, state=state,
                             channels_last=execution.channels_last, amp=execution.amp,
                             val_size=execution.val_size):
        if not fused:
            _report(dict(_metrics(results[0], execution), node=node), state)
            continue
        done = [r for r in results if r is not None]
        _report({"members": [_metrics(r, execution) if r else None for r in results],
                 "node": node, "epoch": max(r.epoch for r in done),
                 "test_acc": _best(done, "test_acc"), "val_acc": _best(done, "val_acc")}, state)


def _metrics(result, execution: Execution) -> dict:
    """result as a dict; without a hold-out its val_* fields stay out (recorded as empty)."""
    metrics = result.to_dict()
    if not execution.val_size:
        del metrics["val_loss"], metrics["val_acc"]
    return metrics


def trial_device(execution: Execution) -> str:
    """The device a trial trains on: the one named, else cuda only when Ray booked this trial a
    GPU (Ray leaves CUDA_VISIBLE_DEVICES alone for a trial with none booked, so picking cuda by
    availability would share a GPU nobody booked), else cpu."""
    if execution.device:
        return execution.device
    booked = ray.get_gpu_ids() if ray.is_initialized() else []
    return "cuda" if booked else "cpu"


def _best(results: list, key: str) -> float:
    return max((getattr(r, key) for r in results if math.isfinite(getattr(r, key))),
               default=math.nan)


def _config(values: dict) -> TrialConfig:
    return TrialConfig.from_dict({k: v for k, v in values.items() if k not in BOOKKEEPING})


def _restored(state, device):
    """`state` loaded from the trial's latest checkpoint when Tune retries or resumes it."""
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state.load_state_dict(torch.load(os.path.join(folder, STATE_FILE), weights_only=True,
                                             map_location=device))
    return state


def _report(metrics: dict, state) -> None:
    """One epoch's metrics with a checkpoint of everything needed to continue."""
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state.state_dict(), os.path.join(folder, STATE_FILE))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def export_weights(checkpoint_dir: str, configs: list[dict], names: list[str | None],
                   folder: str) -> None:
    """Member k of a trial checkpoint as folder/<names[k]>.pt ({"config", "model"} on CPU, as
    python -m cifar_core --save writes it); members named None are skipped."""
    state = torch.load(os.path.join(checkpoint_dir, STATE_FILE), weights_only=True,
                       map_location="cpu")
    members = state.get("members") or [state]
    os.makedirs(folder, exist_ok=True)
    for name, values, member in zip(names, configs, members):
        if name is None:
            continue
        cfg = _config(values).to_dict()
        path = os.path.join(folder, f"{name}.pt")
        torch.save({"config": cfg, "model": member["model"]}, path + ".tmp")
        os.replace(path + ".tmp", path)


def node_name() -> str:
    """Host name plus Ray node id prefix: nodes on one machine (tests, laptops) stay distinct."""
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    return f"{socket.gethostname()}:{node_id[:8]}"
