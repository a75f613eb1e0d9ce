"""The one training loop: `fit_fused(cfgs, data, device)` trains a stack of configurations and
`fit(cfg, data, device)` is a stack of one; both yield per epoch.

Each member keeps what it would use alone: leaf weights, optimiser, penalty, data subset, shuffle
order, augmentation and dropout draws (its TrainState); the stack runs as one network
(cifar_core.fused), and a stack of one takes views of its weights, so a single configuration
pays nothing for it. The data path is tensors, not a DataLoader: the uint8 dataset sits on the
trial's device, each batch is gathered by index, augmented and normalised there in one pass
(cifar_core.augment). A checkpoint is `state.state_dict()`, a resume `state.load_state_dict(...)`.

Dropout: on CPU, F.dropout multiplies by bernoulli_(1-p)/(1-p) drawn from the global RNG; a
member's dropout generator starts where the global RNG stands after building its model, so the
stack draws the masks a plain per-model loop would (tests/reference_loop.py is that loop, and
tests/test_fused.py checks the stack against it). On CUDA the masks agree in distribution only.

Members whose shuffle and augmentation streams are identical (same seed and data fraction: a
grid's group) form a lockstep group: the group draws each batch once. Process-wide settings
(threads, flush-to-zero, malloc) are the caller's: cifar_core.process.setup_process.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from .augment import eval_batch, train_batch
from .config import EpochResult, TrialConfig
from .data import CifarData, holdout, subset, train_eval_index
from .fused import check_fusable, forward, stack_parameters, stacked_input
from .models import build_model

# Test images per evaluation batch. Small enough that a fused stack's first activations (250 x 24
# x 30 x 30 floats, 22 MB) stay in cache (benchmarks/ compared batch sizes).
EVAL_BATCH = 250
EVAL_BATCH_ACCELERATOR = 2000
_CHECK_EVERY = 20  # batches between divergence checks (each check syncs the device)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else CPU, unless the caller names one."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@dataclass
class TrainState:
    """Model, optimiser and the RNG streams of one configuration; `epoch` counts finished epochs."""

    model: torch.nn.Module
    optimiser: torch.optim.Optimizer
    order_rng: torch.Generator  # CPU: the shuffle order of each epoch
    aug_rng: torch.Generator  # on the device: per-image augmentation parameters
    drop_rng: torch.Generator  # dropout masks
    epoch: int = 0

    @classmethod
    def create(cls, cfg: TrialConfig, device: torch.device) -> "TrainState":
        torch.manual_seed(cfg.seed)  # weights
        model = build_model(cfg).to(device)
        order = torch.Generator().manual_seed(cfg.seed)
        aug = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        return cls(model, build_optimiser(cfg, model), order, aug, _dropout_rng(cfg, device))

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                "order_rng": self.order_rng.get_state(), "aug_rng": self.aug_rng.get_state(),
                "drop_rng": self.drop_rng.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        # a checkpoint of the plain loop (before the one loop) kept dropout in the global RNG
        state = {"drop_rng": state.get("torch_rng"), **state}
        for rng, key in ((self.order_rng, "order_rng"), (self.aug_rng, "aug_rng"),
                         (self.drop_rng, "drop_rng")):
            _restore_rng(rng, state[key], key, int(state["epoch"]))
        self.epoch = int(state["epoch"])


def _restore_rng(rng: torch.Generator, saved: torch.Tensor, name: str, epoch: int) -> None:
    """Set `rng` to a checkpointed state. States are CPU byte tensors whatever map_location did;
    a state saved on another device type (CPU and CUDA generators differ in size) cannot be
    restored: the stream is re-seeded from its own position and the epoch, with a warning."""
    saved = saved.cpu()
    if saved.numel() == rng.get_state().numel():
        rng.set_state(saved)
        return
    import warnings

    seed = (int(saved.to(torch.int64).sum()) * 1_000_003 + epoch) % 2**63
    warnings.warn(f"checkpoint's {name} was saved on another device type; re-seeded it "
                  f"(the resumed trial draws a different but equally random stream)", stacklevel=3)
    rng.manual_seed(seed)


def _dropout_rng(cfg: TrialConfig, device: torch.device) -> torch.Generator:
    """The stream a plain loop's dropout draws from: the global RNG right after build_model."""
    if device.type == "cpu":
        return torch.Generator().set_state(torch.get_rng_state())
    return torch.Generator(device=device).manual_seed(cfg.seed)  # in distribution only (see top)


@dataclass
class FusedState:
    """The stack: one TrainState per member and its status ("ok" or "diverged")."""

    members: list[TrainState]
    status: list[str]

    @classmethod
    def create(cls, cfgs: list[TrialConfig], device: torch.device) -> "FusedState":
        return cls([TrainState.create(cfg, device) for cfg in cfgs], ["ok"] * len(cfgs))

    def live(self, epochs: int) -> list[int]:
        """Members still training: not diverged and short of `epochs`."""
        return [k for k, (m, s) in enumerate(zip(self.members, self.status))
                if s == "ok" and m.epoch < epochs]

    def state_dict(self) -> dict:
        return {"members": [dict(m.state_dict(), status=s)
                            for m, s in zip(self.members, self.status)]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("members") or [dict(state, status="ok")]  # or one TrainState's
        if len(saved) != len(self.members):
            raise ValueError(f"checkpoint holds {len(saved)} members; this stack {len(self.members)}")
        for member, s in zip(self.members, saved):
            member.load_state_dict(s)
        self.status = [s["status"] for s in saved]


def build_optimiser(cfg: TrialConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam or plain SGD (no momentum), as in the seed."""
    # The fused (one-kernel) update: same arithmetic, ~3x cheaper than the per-tensor loop on
    # CPU (0.27 vs 0.84 ms a step for this net, ~2% of a step).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    if cfg.optimiser == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, fused=fused)


def penalty(model: torch.nn.Module, cfg: TrialConfig) -> torch.Tensor:
    """λ·Σ|w| (l1) or λ·Σw² (l2) over every parameter of this trial's own model; 0 for none.

    One multi-tensor norm over all parameters (torch._foreach_norm, as clip_grad_norm_ uses it)
    instead of two ops and an add per parameter: a handful of kernels a step, not dozens."""
    params = list(model.parameters())
    if cfg.regulariser == "l1":
        return cfg.lam * torch.stack(torch._foreach_norm(params, 1)).sum()
    if cfg.regulariser == "l2":
        return cfg.lam * torch.stack(torch._foreach_norm(params, 2)).square().sum()
    return params[0].new_zeros(())


def fit(cfg: TrialConfig, data: CifarData, device=None, *, state: TrainState | None = None,
        channels_last: bool = True, amp: str | None = None, val_size: int = 0
        ) -> Iterator[EpochResult]:
    """Train cfg.epochs epochs (continuing from `state.epoch`), yielding one result each: the
    stack of one of fit_fused.

    A NaN/inf loss or penalty ends training with a last result whose status is "diverged".
    channels_last is the default (faster on CPU: benchmarks/). amp="bf16" runs forward passes
    under bf16 autocast (opt-in, for GPUs; weights stay fp32). val_size > 0 holds out that many
    training images (data.holdout: stratified, the same for every trial), never trains on them
    and scores them every epoch as val_loss / val_acc.
    """
    stack = FusedState([state], ["ok"]) if state is not None else None
    for (result,) in fit_fused([cfg], data, device, state=stack, channels_last=channels_last,
                               amp=amp, val_size=val_size):
        yield result


def fit_fused(cfgs: list[TrialConfig], data: CifarData, device=None, *,
              state: FusedState | None = None, channels_last: bool = True,
              amp: str | None = None, val_size: int = 0) -> Iterator[list[EpochResult | None]]:
    """Train the members as one stack; per epoch a list with member k's result at k.

    A member whose loss turns NaN/inf gets a last result with status "diverged" and leaves the
    stack while the others go on; from then on (and for members already done) its entry is None.
    seconds and train_seconds are the stack's; images_per_second counts the member's own images.
    val_size: as in fit (one hold-out for the whole stack; the subsets come from what it leaves).
    channels_last, amp: as in fit.
    """
    cfgs = check_fusable(cfgs)
    device = resolve_device(device)
    subsets, val = _splits(cfgs, data, val_size, device)
    sets = [subsets[_subset_key(c)] for c in cfgs]
    evals = {"test": (sets[0].test_x, sets[0].test_y), "val": val,
             "train_eval": {key: train_eval_split(subset_) for key, subset_ in subsets.items()}}
    state = state or FusedState.create(cfgs, device)
    assert len(state.members) == len(cfgs), "state and cfgs hold different numbers of members"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = functools.partial(autocast_context, device, amp)
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
    stacked = stack_parameters([m.model for m in members])
    with autocast():
        out = forward(members[0].model, stacked, stacked_input([batches[k][0] for k in ks], fmt),
                       [state.members[k].drop_rng for k in ks]).float()
    losses = [F.cross_entropy(o, y) for o, y in zip(out, ys)]
    regs = [penalty(m.model, cfgs[k]) for m, k in zip(members, ks)]
    for m in members:
        m.optimiser.zero_grad(set_to_none=True)
    (sum(losses) + sum(regs)).backward()
    for m in members:
        m.optimiser.step()
    return [torch.stack([loss.detach() * len(y), reg.detach() * len(y), (o.argmax(1) == y).sum()])
            .double() for loss, reg, o, y in zip(losses, regs, out, ys)]


@torch.no_grad()
def _evaluate(state: FusedState, transform: str, images: torch.Tensor, labels: torch.Tensor,
              ks: list[int], fmt, autocast, batch: int | None = None
              ) -> dict[int, tuple[float, float]]:
    """Member k -> (mean loss, accuracy) over images/labels shared by ks, in eval mode. Sums stay
    on the device; one host transfer per evaluation. Batches: EVAL_BATCH on CPU (cache-sized),
    EVAL_BATCH_ACCELERATOR elsewhere (a GPU wants large batches)."""
    if not ks:
        return {}
    batch = batch or (EVAL_BATCH if images.device.type == "cpu" else EVAL_BATCH_ACCELERATOR)
    models = [state.members[k].model for k in ks]
    stacked = stack_parameters(models)
    sums = torch.zeros(2, len(ks), dtype=torch.float64, device=images.device)  # loss, hits
    for i in range(0, len(labels), batch):
        x = eval_batch(images[i:i + batch], transform)
        y = labels[i:i + batch]
        with autocast():
            outs = forward(models[0], stacked, x.contiguous(memory_format=fmt)).float()
        losses = F.cross_entropy(outs.transpose(1, 2), y.expand(len(ks), -1), reduction="none")
        sums[0] += losses.sum(1, dtype=torch.float64)
        sums[1] += (outs.argmax(2) == y).sum(1)
    (loss, hits), n = sums.tolist(), len(labels)
    return {k: (loss[j] / n, hits[j] / n) for j, k in enumerate(ks)}


def autocast_context(device: torch.device, amp: str | None):
    """bf16 autocast for amp="bf16", else a no-op; any other value is a ValueError naming it."""
    if amp in (None, "none", "fp32"):
        return contextlib.nullcontext()
    if amp != "bf16":
        raise ValueError(f"amp={amp!r} is not allowed; choose none or bf16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _on_device(data: CifarData, device: torch.device) -> CifarData:
    if data.train_x.device == device:
        return data
    return CifarData(*(t.to(device) for t in (data.train_x, data.train_y, data.test_x, data.test_y)))


def train_eval_split(data: CifarData) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the fixed training images re-scored in eval mode each epoch."""
    index = train_eval_index(len(data.train_y)).to(data.train_x.device)
    return data.train_x[index], data.train_y[index]
