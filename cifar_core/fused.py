"""Fused trials: M configs that share model and transform train as one stacked network.

HFTA-style: the members' convolutions run as one grouped convolution (groups=M, activations laid
out (B, M*C, H, W) through the conv block) and their linear layers as one batched matmul. Each
member keeps what `fit(cfg_k)` alone would use: leaf weights built as TrainState.create builds
them, optimiser, penalty, data subset, shuffle order, augmentation and dropout draws. The leaves
are stacked each step (61k numbers a member), so every member keeps an ordinary torch.optim
optimiser and the summed loss gives each exactly its own gradient; its metrics equal its solo
run's up to float rounding. Dropout: on CPU, F.dropout multiplies by bernoulli_(1-p)/(1-p) drawn
from the global RNG; a member's dropout generator starts where its solo run's global RNG stands
after building the model, so it draws the same masks. (On CUDA the solo run's fused kernel draws
differently: there the masks agree in distribution only.)

Members whose shuffle and augmentation streams are identical (same seed and data fraction: a
grid's group) form a lockstep group: the group draws each batch once, and when the whole stack
shares one batch the first convolution runs dense over all members' filters instead of grouped
over M copies. On CPU a stack of 4 trains ~1.5-1.9x more configurations per second than solo
trials (benchmarks/), which is why sweep.grid fuses 4 by default.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .augment import test_batch, train_batch
from .config import EpochResult, TrialConfig
from .data import CifarData, holdout, subset
from .models import pool_before_relu
from .train import (_CHECK_EVERY, EVAL_BATCH, TrainState, _on_device, autocast_context,
                    flush_denormals, penalty, resolve_device, train_eval_split, tune_allocator)

SHARED = ("model", "transform", "epochs", "batch_size", "data_fraction", "final_relu")


def check_fusable(cfgs: list[TrialConfig]) -> list[TrialConfig]:
    """cfgs, if they can train as one stack: ValueError naming the first key they differ in."""
    cfgs = list(cfgs)
    if not cfgs:
        raise ValueError("fused trials need at least one config")
    for key in SHARED:
        values = sorted({str(getattr(c, key)) for c in cfgs})
        if len(values) > 1:
            raise ValueError(f"fused trials must share {key}; got {', '.join(values)}")
    return cfgs


@dataclass
class FusedState:
    """One TrainState per member, its dropout stream, and its status ("ok" or "diverged")."""

    members: list[TrainState]
    drop_rngs: list[torch.Generator]
    status: list[str]

    @classmethod
    def create(cls, cfgs: list[TrialConfig], device: torch.device) -> "FusedState":
        members, drops = [], []
        for cfg in cfgs:
            members.append(TrainState.create(cfg, device))  # seeds the global RNG, builds weights
            drops.append(_dropout_rng(cfg, device))
        return cls(members, drops, ["ok"] * len(cfgs))

    def live(self, epochs: int) -> list[int]:
        """Members still training: not diverged and short of `epochs`."""
        return [k for k, (m, s) in enumerate(zip(self.members, self.status))
                if s == "ok" and m.epoch < epochs]

    def state_dict(self) -> dict:
        return {"members": [
            {"model": m.model.state_dict(), "optimiser": m.optimiser.state_dict(),
             "order_rng": m.order_rng.get_state(), "aug_rng": m.aug_rng.get_state(),
             "drop_rng": d.get_state(), "epoch": m.epoch, "status": s}
            for m, d, s in zip(self.members, self.drop_rngs, self.status)]}

    def load_state_dict(self, state: dict) -> None:
        saved = state["members"]
        if len(saved) != len(self.members):
            raise ValueError(f"checkpoint holds {len(saved)} members; this stack {len(self.members)}")
        for m, drop, s in zip(self.members, self.drop_rngs, saved):
            m.model.load_state_dict(s["model"])
            m.optimiser.load_state_dict(s["optimiser"])
            for rng, key in ((m.order_rng, "order_rng"), (m.aug_rng, "aug_rng"), (drop, "drop_rng")):
                rng.set_state(s[key].cpu())  # map_location may have moved the states
            m.epoch = int(s["epoch"])
        self.status = [s["status"] for s in saved]


def _dropout_rng(cfg: TrialConfig, device: torch.device) -> torch.Generator:
    """The stream the solo run's dropout draws from: the global RNG right after build_model."""
    if device.type == "cpu":
        return torch.Generator().set_state(torch.get_rng_state())
    return torch.Generator(device=device).manual_seed(cfg.seed)  # in distribution only (see top)


def fit_fused(cfgs: list[TrialConfig], data: CifarData, device=None, *, threads: int | None = None,
              state: FusedState | None = None, channels_last: bool = True,
              amp: str | None = None, val_size: int = 0) -> Iterator[list[EpochResult | None]]:
    """Train the members as one stack; per epoch a list with member k's result at k.

    A member whose loss turns NaN/inf gets a last result with status "diverged" and leaves the
    stack while the others go on; from then on (and for members already done) its entry is None.
    seconds and train_seconds are the stack's; images_per_second counts the member's own images.
    val_size: as in fit (one hold-out for the whole stack; the subsets come from what it leaves).
    """
    flush_denormals()  # as fit: before any op, so worker threads inherit it
    cfgs = check_fusable(cfgs)
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    tune_allocator()
    subsets, val = _splits(cfgs, data, val_size, device)
    sets = [subsets[_subset_key(c)] for c in cfgs]
    evals = {"test": (sets[0].test_x, sets[0].test_y), "val": val,
             "train_eval": {key: train_eval_split(subset_) for key, subset_ in subsets.items()}}
    state = state or FusedState.create(cfgs, device)
    assert len(state.members) == len(cfgs), "state and cfgs hold different numbers of members"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = functools.partial(autocast_context, device, amp)  # amp="bf16": as in fit
    while live := state.live(cfgs[0].epochs):
        start = time.perf_counter()
        train = _train_epoch(state, cfgs, sets, live, fmt, autocast)
        train_seconds = time.perf_counter() - start
        ok = [k for k in live if train[k]["finite"]]
        scores = _scores(state, cfgs, evals, ok, fmt, autocast)
        yield [_result(state, k, train[k], scores.get(k), start, train_seconds)
               if k in live else None for k in range(len(cfgs))]


def _splits(cfgs: list[TrialConfig], data: CifarData, val_size: int, device: torch.device
            ) -> tuple[dict[tuple, CifarData], tuple[torch.Tensor, torch.Tensor] | None]:
    """One on-device copy per distinct training subset (all data: just one), drawn from what the
    hold-out leaves, and the hold-out (images, labels) on device, or None when val_size is 0."""
    train, val_x, val_y = holdout(data, val_size)
    subsets: dict[tuple, CifarData] = {}
    for c in cfgs:
        if _subset_key(c) not in subsets:
            subsets[_subset_key(c)] = _on_device(subset(train, c.data_fraction, c.seed), device)
    return subsets, ((val_x.to(device), val_y.to(device)) if val_size else None)


def _scores(state: FusedState, cfgs, evals: dict, ok: list[int], fmt, autocast
            ) -> dict[int, dict]:
    """Member k in ok -> {split: (loss, acc)} for test, val (when held out) and train_eval."""
    transform = cfgs[0].transform
    tests = _evaluate(state, transform, *evals["test"], ok, fmt, autocast)
    vals = _evaluate(state, transform, *evals["val"], ok, fmt, autocast) if evals["val"] else {}
    fits = {}
    for key, pair in evals["train_eval"].items():  # each member re-scored on its own images
        ks = [k for k in ok if _subset_key(cfgs[k]) == key]
        fits.update(_evaluate(state, transform, *pair, ks, fmt, autocast))
    return {k: {"test": tests.get(k), "val": vals.get(k), "train_eval": fits.get(k)} for k in ok}


def _subset_key(cfg: TrialConfig) -> tuple:
    """Configs with equal keys train on the same subset (the seed only picks a partial one)."""
    return cfg.data_fraction, cfg.seed if cfg.data_fraction < 1 else None


def _result(state: FusedState, k: int, train: dict, scores: dict | None, start: float,
            train_seconds: float) -> EpochResult:
    """Member k's EpochResult for the epoch just trained; advances its epoch and status."""
    member = state.members[k]
    member.epoch += 1
    state.status[k] = "ok" if train["finite"] else "diverged"
    metrics = {}
    for name in ("test", "val", "train_eval"):  # nan: no hold-out, or the member diverged
        loss, acc = (scores or {}).get(name) or (math.nan, math.nan)
        metrics.update({f"{name}_loss": loss, f"{name}_acc": acc})
    return EpochResult(
        epoch=member.epoch, train_loss=train["loss"], train_penalty=train["penalty"],
        train_acc=train["acc"], **metrics,
        seconds=time.perf_counter() - start, train_seconds=train_seconds,
        images_per_second=train["images"] / max(train_seconds, 1e-9), status=state.status[k])


def _train_epoch(state: FusedState, cfgs, sets, live: list[int], fmt, autocast
                 ) -> dict[int, dict]:
    """One epoch of the live members; each leaves at the check that finds its loss NaN/inf."""
    n, batch = len(sets[live[0]].train_y), cfgs[live[0]].batch_size
    assert all(len(sets[k].train_y) == n for k in live), "members' subsets differ in size"
    groups = _lockstep(state, sets, live)
    orders = {}
    for group in groups:  # one shuffle per group; the others' streams advance with it
        order = torch.randperm(n, generator=state.members[group[0]].order_rng)
        _follow(state, group, "order_rng")
        orders.update({k: order.to(sets[k].train_x.device) for k in group})
    sums = {k: torch.zeros(3, dtype=torch.float64, device=sets[k].train_x.device) for k in live}
    going = list(live)
    for step, i in enumerate(range(0, n, batch)):
        batches = _batches(state, cfgs, sets, [[k for k in g if k in going] for g in groups],
                           orders, slice(i, i + batch))
        for k, stats in zip(going, _train_step(state, cfgs, going, batches, fmt, autocast)):
            sums[k] += stats
        if step % _CHECK_EVERY == 0:
            going = [k for k in going if torch.isfinite(sums[k][:2]).all()]
            if not going:
                break
    return {k: _summary(sums[k], n) for k in live}


def _lockstep(state: FusedState, sets, live: list[int]) -> list[list[int]]:
    """Live members grouped by identical data and shuffle/augmentation streams (same seed and
    data fraction, same epoch): a group draws its batches once and every member trains on them,
    exactly as each would alone. Checked on the generator states, not inferred from configs."""
    groups: dict[tuple, list[int]] = {}
    for k in live:
        m = state.members[k]
        key = (id(sets[k]), m.epoch, bytes(m.order_rng.get_state().cpu().numpy()),
               bytes(m.aug_rng.get_state().cpu().numpy()))
        groups.setdefault(key, []).append(k)
    return list(groups.values())


def _follow(state: FusedState, group: list[int], stream: str) -> None:
    """Set the group's other members' `stream` generator to where its first member's stands."""
    lead = getattr(state.members[group[0]], stream).get_state()
    for k in group[1:]:
        getattr(state.members[k], stream).set_state(lead)


def _batches(state: FusedState, cfgs, sets, groups: list[list[int]], orders: dict, rows: slice
             ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Member k -> its (augmented images, labels) for this step, drawn once per lockstep group."""
    out = {}
    for group in filter(None, groups):
        k = group[0]
        idx = orders[k][rows]
        batch = (train_batch(sets[k].train_x[idx], cfgs[k].transform, state.members[k].aug_rng),
                 sets[k].train_y[idx])
        _follow(state, group, "aug_rng")
        out.update({j: batch for j in group})
    return out


def _summary(sums: torch.Tensor, n: int) -> dict:
    loss, pen, hits = sums.tolist()
    finite = math.isfinite(loss) and math.isfinite(pen)
    return {"loss": loss / n, "penalty": pen / n, "acc": hits / n, "images": n, "finite": finite}


def _train_step(state: FusedState, cfgs, ks: list[int], batches: dict, fmt, autocast
                ) -> list[torch.Tensor]:
    """One optimiser step of members ks on their own batches: per member (loss, penalty, hits)·B."""
    ys = [batches[k][1] for k in ks]
    members = [state.members[k] for k in ks]
    stacked = _stack([m.model for m in members])
    with autocast():
        out = _forward(members[0].model, stacked, _stacked_input([batches[k][0] for k in ks], fmt),
                       [state.drop_rngs[k] for k in ks]).float()
    losses = [F.cross_entropy(o, y) for o, y in zip(out, ys)]
    regs = [penalty(m.model, cfgs[k]) for m, k in zip(members, ks)]
    for m in members:
        m.optimiser.zero_grad(set_to_none=True)
    (sum(losses) + sum(regs)).backward()
    for m in members:
        m.optimiser.step()
    return [torch.stack([loss.detach() * len(y), reg.detach() * len(y), (o.argmax(1) == y).sum()])
            .double() for loss, reg, o, y in zip(losses, regs, out, ys)]


def _stack(models: list[nn.Module]) -> list[torch.Tensor]:
    """Each parameter of the M members stacked along a new first dimension (autograd-connected)."""
    return [torch.stack(ps) for ps in zip(*(model.parameters() for model in models))]


def _stacked_input(xs: list[torch.Tensor], fmt) -> torch.Tensor:
    """The members' batches as one conv input: (B, C, H, W) when every member has the very same
    batch (a lockstep group; the first convolution then runs dense over all members' filters),
    else (B, M*C, H, W) for a grouped first convolution."""
    if all(x is xs[0] for x in xs):
        return xs[0].contiguous(memory_format=fmt)
    return torch.stack(xs, dim=1).flatten(1, 2).contiguous(memory_format=fmt)


def _forward(template: nn.Module, stacked: list[torch.Tensor], x: torch.Tensor,
             drops: list | None = None) -> torch.Tensor:
    """(M, B, classes) logits of M SeedNets shaped like `template`, from their stacked
    parameters, on x = one shared batch (B, C, H, W) or M stacked ones (B, M*C, H, W); dropout
    masks come from `drops` (None: eval mode). Like SeedNet.forward, each max-pool runs before
    the ReLU ahead of it (same values, 4x less ReLU work)."""
    m, params = len(stacked[0]), iter(stacked)

    def conv_layer(layer, x):
        if isinstance(layer, nn.Conv2d):
            weight, bias = next(params).flatten(0, 1), next(params).flatten()
            # a shared input (B, C_in, H, W) feeds all M filter banks at once: a dense conv,
            # ~2x cheaper than the grouped one over M copies of the input (benchmarks/)
            groups = 1 if x.shape[1] == layer.in_channels else m
            return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation,
                            groups=groups)
        if isinstance(layer, nn.ReLU):
            return F.relu_(x)  # in place: conv and pool backward need their inputs, not this
        assert isinstance(layer, nn.MaxPool2d), f"cannot fuse {layer}"
        return layer(x)

    x = pool_before_relu(template.conv_block, x, conv_layer)
    h = x.reshape(x.shape[0], m, -1).transpose(0, 1)  # (M, B, C*H*W): each member's flatten(1)
    for layer in template.linear_block:
        if isinstance(layer, nn.Linear):
            weight, bias = next(params), next(params)
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        elif isinstance(layer, nn.Dropout):
            h = h * _dropout_masks(h, layer.p, drops) if drops is not None else h
        else:
            assert isinstance(layer, nn.ReLU), f"cannot fuse {layer}"
            h = layer(h)
    return h


def _dropout_masks(h: torch.Tensor, p: float, drops: list[torch.Generator]) -> torch.Tensor:
    """Member k's scaled keep-mask drawn from drops[k] as F.dropout draws it on CPU."""
    return torch.stack([torch.empty(h.shape[1:], dtype=h.dtype, device=h.device)
                        .bernoulli_(1 - p, generator=g).div_(1 - p) for g in drops])


@torch.no_grad()
def _evaluate(state: FusedState, transform: str, images: torch.Tensor, labels: torch.Tensor,
              ks: list[int], fmt, autocast, batch: int = EVAL_BATCH
              ) -> dict[int, tuple[float, float]]:
    """Member k -> (mean loss, accuracy) over images/labels shared by ks, in eval mode."""
    if not ks:
        return {}
    models = [state.members[k].model for k in ks]
    stacked = _stack(models)
    loss, hits = [0.0] * len(ks), [0.0] * len(ks)
    for i in range(0, len(labels), batch):
        x = test_batch(images[i:i + batch], transform)
        y = labels[i:i + batch]
        with autocast():
            outs = _forward(models[0], stacked, x.contiguous(memory_format=fmt)).float()
        for j, out in enumerate(outs):
            loss[j] += F.cross_entropy(out, y, reduction="sum").item()
            hits[j] += (out.argmax(1) == y).sum().item()
    n = len(labels)
    return {k: (loss[j] / n, hits[j] / n) for j, k in enumerate(ks)}
