"""The one training loop: `fit(cfg, data, device)` yields an EpochResult per epoch.

The data path is tensors, not a DataLoader: the uint8 dataset sits on the trial's device, each
batch is gathered by index, augmented and normalised there in one pass (cifar_core.augment).
Everything a resumed trial needs (model, optimiser, RNG streams, epoch) lives in `TrainState`,
so a checkpoint is `state.state_dict()` and a resume is `state.load_state_dict(...)`.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from .augment import test_batch, train_batch
from .config import EpochResult, TrialConfig
from .data import CifarData, holdout, subset, train_eval_index
from .models import build_model

# Test images per evaluation batch. Small enough that a fused stack's first activations (250 x 24
# x 30 x 30 floats, 22 MB) stay in cache: evaluating a 4-member stack on 10 000 images takes
# 0.83-1.13 s at 250 vs 1.11-1.56 s at 1 000 (benchmarks/, one thread, two runs).
EVAL_BATCH = 250
_CHECK_EVERY = 20  # batches between divergence checks (each check syncs the device)


ALLOCATOR_ENV = "CIFAR_CORE_ALLOCATOR"  # "default" leaves glibc's malloc settings alone
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def allocator_opted_out() -> bool:
    """CIFAR_CORE_ALLOCATOR=default: leave glibc's malloc alone, in this process and its workers."""
    return os.environ.get(ALLOCATOR_ENV, "") == "default"


def allocator_process_env() -> dict[str, str]:
    """Environment for processes that train off their main thread (a Ray Tune trial runs in a
    thread): glibc reads it when the process starts, so every thread allocates from the main heap
    that tune_allocator keeps. sweep gives it to its Ray workers; empty when opted out."""
    return {} if allocator_opted_out() else {"MALLOC_ARENA_MAX": "1"}


@functools.cache
def tune_allocator() -> bool:
    """Keep freed activation buffers in the process instead of handing them back to the kernel.

    A training step on CPU allocates and frees the same few large activation tensors (up to
    ~22 MB) every batch. glibc serves those by mmap and returns them on free, so every step
    page-faults its activations in again (aten::fill_ of a fresh buffer ran at ~2.5 GB/s). With
    the mmap threshold at its 32 MB maximum and trimming off, they are reused from the heap;
    benchmarks/ measures the effect. Once per process, glibc only; True when applied. The
    process keeps its peak heap (tens of MB for these nets) until it exits.

    That holds for the main heap only. A thread other than the main one gets its own glibc arena
    made of 64 MB sub-heaps that are unmapped when they empty, so a step run off the main thread
    faulted ~6 500 pages back in (88-107 vs 70 ms a step for a 4-member stack). glibc fixes a
    thread's arena at its first malloc, so a process that trains off its main thread (a Ray
    worker) needs allocator_process_env() in its environment from the start.
    """
    if allocator_opted_out() or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                    and libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on this CPU thread (flush-to-zero + denormals-are-zero).

    Weights that an L1/L2 penalty or a tiny learning rate drive towards zero end up multiplied
    into subnormal products (< 1.2e-38), which x86 CPUs compute ~10-100x slower: in the first full
    grid the L2 stacks slowed from 16 s to 101 s an epoch, and a forward + backward with
    1e-20-scaled weights takes 210-250 ms instead of 26-34 ms (benchmarks/ prints it). Values
    that small are below float32's normal range and carry no signal for these nets. Returns
    False where the CPU has no such mode. The mode is per thread and new threads copy it from
    their creator, so call it before the calling thread's first multi-threaded op (fit and
    fit_fused do it first thing).
    """
    return torch.set_flush_denormal(True)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else CPU, unless the caller names one."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@dataclass
class TrainState:
    """Model, optimiser and the RNG streams of one trial; `epoch` counts finished epochs."""

    model: torch.nn.Module
    optimiser: torch.optim.Optimizer
    order_rng: torch.Generator  # CPU: the shuffle order of each epoch
    aug_rng: torch.Generator  # on the device: per-image augmentation parameters
    epoch: int = 0

    @classmethod
    def create(cls, cfg: TrialConfig, device: torch.device) -> "TrainState":
        torch.manual_seed(cfg.seed)  # weights and dropout masks
        model = build_model(cfg).to(device)
        order = torch.Generator().manual_seed(cfg.seed)
        aug = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        return cls(model, build_optimiser(cfg, model), order, aug)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                "order_rng": self.order_rng.get_state(), "aug_rng": self.aug_rng.get_state(),
                "torch_rng": torch.get_rng_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.order_rng.set_state(state["order_rng"])
        self.aug_rng.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])


def build_optimiser(cfg: TrialConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam or plain SGD (no momentum), as in the seed."""
    # The fused (one-kernel) update: same arithmetic, ~3x cheaper than the per-tensor loop on
    # CPU (0.27 vs 0.84 ms a step for this net, ~2% of a step).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    if cfg.optimiser == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, fused=fused)


def penalty(model: torch.nn.Module, cfg: TrialConfig) -> torch.Tensor:
    """λ·Σ|w| (l1) or λ·Σw² (l2) over every parameter of this trial's own model; 0 for none."""
    params = list(model.parameters())
    if cfg.regulariser == "l1":
        return cfg.lam * sum(p.abs().sum() for p in params)
    if cfg.regulariser == "l2":
        return cfg.lam * sum(p.pow(2).sum() for p in params)
    return params[0].new_zeros(())


def fit(cfg: TrialConfig, data: CifarData, device=None, *, threads: int | None = None,
        state: TrainState | None = None, channels_last: bool = True,
        amp: str | None = None, val_size: int = 0) -> Iterator[EpochResult]:
    """Train cfg.epochs epochs (continuing from `state.epoch`), yielding one result each.

    A NaN/inf loss ends training with a last result whose status is "diverged". channels_last is
    the default: on this CPU it trains the seed net ~35% faster than NCHW (benchmarks/).
    amp="bf16" runs forward passes under bf16 autocast (opt-in, for GPUs; weights stay fp32).
    val_size > 0 holds out that many training images (data.holdout: stratified, the same for
    every trial), never trains on them and scores them every epoch as val_loss / val_acc.
    """
    flush_denormals()  # first: worker threads started by the ops below inherit the mode
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    tune_allocator()
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


def _on_device(data: CifarData, device: torch.device) -> CifarData:
    if data.train_x.device == device:
        return data
    return CifarData(*(t.to(device) for t in (data.train_x, data.train_y, data.test_x, data.test_y)))


def autocast_context(device: torch.device, amp: str | None):
    """bf16 autocast for amp="bf16", else a no-op; any other value is a ValueError naming it."""
    if amp in (None, "none", "fp32"):
        return contextlib.nullcontext()
    if amp != "bf16":
        raise ValueError(f"amp={amp!r} is not allowed; choose none or bf16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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


def train_eval_split(data: CifarData) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the fixed training images re-scored in eval mode each epoch."""
    index = train_eval_index(len(data.train_y)).to(data.train_x.device)
    return data.train_x[index], data.train_y[index]


@torch.no_grad()
def _evaluate(model: torch.nn.Module, cfg: TrialConfig, images: torch.Tensor,
              labels: torch.Tensor, fmt, autocast) -> tuple[float, float]:
    """(mean loss, accuracy) over images/labels in eval mode (no dropout, no augmentation)."""
    model.eval()
    loss = hits = 0.0
    for i in range(0, len(labels), EVAL_BATCH):
        x = test_batch(images[i:i + EVAL_BATCH], cfg.transform).contiguous(memory_format=fmt)
        y = labels[i:i + EVAL_BATCH]
        with autocast():
            out = model(x).float()
        loss += F.cross_entropy(out, y, reduction="sum").item()
        hits += (out.argmax(1) == y).sum().item()
    return loss / len(labels), hits / len(labels)
