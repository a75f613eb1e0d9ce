"""The reference the one training loop is checked against: a plain per-model loop.

This is the loop cifar_core.fit ran before it became a stack of one (cifar_core.train): the
model's own forward (nn modules, F.dropout drawing from the global RNG), one optimiser step per
batch. tests/test_fused.py checks that every member of a stack, and the stack of one, trains as
this loop does; benchmarks/one_loop.py times the two.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Iterator

import torch
import torch.nn.functional as F

from cifar_core.augment import eval_batch, train_batch
from cifar_core.config import EpochResult, TrialConfig
from cifar_core.data import CifarData, holdout, subset
from cifar_core.train import (_CHECK_EVERY, EVAL_BATCH, TrainState, _on_device, autocast_context,
                              penalty, resolve_device, train_eval_split)


def reference_fit(cfg: TrialConfig, data: CifarData, device=None, *, threads: int | None = None,
        state: TrainState | None = None, channels_last: bool = True,
        amp: str | None = None, val_size: int = 0) -> Iterator[EpochResult]:
    """cifar_core.fit as a plain per-model loop: model(x), F.dropout on the global RNG.

    A NaN/inf loss ends training with a last result whose status is "diverged". channels_last is
    the default: on this CPU it trains the seed net ~35% faster than NCHW (benchmarks/).
    amp="bf16" runs forward passes under bf16 autocast (opt-in, for GPUs; weights stay fp32).
    val_size > 0 holds out that many training images (data.holdout: stratified, the same for
    every trial), never trains on them and scores them every epoch as val_loss / val_acc.
    """
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    data, val = trial_splits(data, cfg, val_size, device)
    state = state or TrainState.create(cfg, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    state.model.to(memory_format=fmt)
    autocast = functools.partial(autocast_context, device, amp)
    splits = {"test": (data.test_x, data.test_y), "train_eval": train_eval_split(data), "val": val}
    while state.epoch < cfg.epochs:
        start = time.perf_counter()
        train = _train_epoch(state, cfg, data, fmt, autocast)
        train_seconds = time.perf_counter() - start
        scores = _scores(state.model, cfg, splits, fmt, autocast, train["finite"])
        state.epoch += 1
        yield EpochResult(
            epoch=state.epoch, train_loss=train["loss"], train_penalty=train["penalty"],
            train_acc=train["acc"], **scores,
            seconds=time.perf_counter() - start, train_seconds=train_seconds,
            images_per_second=train["images"] / max(train_seconds, 1e-9),
            status="ok" if train["finite"] else "diverged")
        if not train["finite"]:
            return


def trial_splits(data: CifarData, cfg: TrialConfig, val_size: int, device: torch.device
                 ) -> tuple[CifarData, tuple[torch.Tensor, torch.Tensor] | None]:
    """The trial's training subset, drawn from what the hold-out leaves, and the hold-out
    (images, labels), both on `device`; no hold-out (None) when val_size is 0."""
    train, val_x, val_y = holdout(data, val_size)
    val = (val_x.to(device), val_y.to(device)) if val_size else None
    return _on_device(subset(train, cfg.data_fraction, cfg.seed), device), val


def _scores(model: torch.nn.Module, cfg: TrialConfig, splits: dict, fmt, autocast,
            finite: bool) -> dict[str, float]:
    """<split>_loss and <split>_acc for each split; nan for a missing split or a diverged epoch."""
    scores = {}
    for name, split in splits.items():
        pair = _evaluate(model, cfg, *split, fmt, autocast) if finite and split else None
        loss, acc = pair or (math.nan, math.nan)
        scores.update({f"{name}_loss": loss, f"{name}_acc": acc})
    return scores


def _train_epoch(state: TrainState, cfg: TrialConfig, data: CifarData, fmt, autocast) -> dict:
    model, opt = state.model, state.optimiser
    model.train()
    n = len(data.train_y)
    order = torch.randperm(n, generator=state.order_rng).to(data.train_x.device)
    sums = torch.zeros(3, dtype=torch.float64, device=data.train_x.device)  # loss, penalty, hits
    for step, i in enumerate(range(0, n, cfg.batch_size)):
        idx = order[i:i + cfg.batch_size]
        x = train_batch(data.train_x[idx], cfg.transform, state.aug_rng).contiguous(memory_format=fmt)
        y = data.train_y[idx]
        with autocast():
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        reg = penalty(model, cfg)
        opt.zero_grad(set_to_none=True)
        (loss + reg).backward()
        opt.step()
        sums += torch.stack([loss.detach() * len(y), reg.detach() * len(y),
                             (out.argmax(1) == y).sum()]).double()
        if step % _CHECK_EVERY == 0 and not torch.isfinite(sums[:2]).all():
            break
    loss, pen, hits = sums.tolist()
    finite = math.isfinite(loss) and math.isfinite(pen)
    return {"loss": loss / n, "penalty": pen / n, "acc": hits / n, "images": n, "finite": finite}


@torch.no_grad()
def _evaluate(model: torch.nn.Module, cfg: TrialConfig, images: torch.Tensor,
              labels: torch.Tensor, fmt, autocast) -> tuple[float, float]:
    """(mean loss, accuracy) over images/labels in eval mode (no dropout, no augmentation)."""
    model.eval()
    loss = hits = 0.0
    for i in range(0, len(labels), EVAL_BATCH):
        x = eval_batch(images[i:i + EVAL_BATCH], cfg.transform).contiguous(memory_format=fmt)
        y = labels[i:i + EVAL_BATCH]
        with autocast():
            out = model(x).float()
        loss += F.cross_entropy(out, y, reduction="sum").item()
        hits += (out.argmax(1) == y).sum().item()
    return loss / len(labels), hits / len(labels)
