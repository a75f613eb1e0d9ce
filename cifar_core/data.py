"""CIFAR-10 as uint8 tensors: found on disk, decoded once, cached, and subset by seed.

`load_cifar10(data_dir)` accepts two layouts under the data directory:

* image folders `train/<class>/*` and `test/<class>/*` (the 10 CIFAR-10 class names; label = index
  in sorted order), e.g. `tar xzf cifar10-jpeg.tar.gz -C DIR`. Decoding 60 000 images takes
  seconds, so the result is cached as one tensor file named after a fingerprint of the files
  (relative path, size, mtime_ns): adding, removing or touching an image rebuilds it. The cache
  lives in `cache_dir`, else $CIFAR_CORE_CACHE, else DATA/.cifar_core_cache/, else
  ~/.cache/cifar_core/; it is written atomically and built by one process at a time.
* torchvision's `cifar-10-batches-py/` pickles, read directly (already a fast binary format, so
  not cached; only arrays may be unpickled); `download=True` lets torchvision fetch them.

`CifarData.to_numpy()` / `from_numpy()` carry the tensors through Ray's object store without a
copy; `holdout()` carves the fixed, stratified validation split out of the training split, and
`subset()` draws the seeded, stratified training subset a trial asks for from what is left.

The pieces live below this module, which re-exports them (imports run one way, no cycle):
`cifar_core.layout` (class names, layouts, `resolve_data_dir`, `check_data_dir`; no torch),
`cifar_core.errors` (DataError; no torch), `cifar_core.dataset` (CifarData) and
`cifar_core.sources` (the readers of both layouts).
"""
from __future__ import annotations

import dataclasses

import torch

from .dataset import CifarData
from .errors import DataError
from .layout import (BATCHES, CACHE_VERSION, CLASSES, DEFAULT_DATA_DIR, SPLITS, check_data_dir,
                     resolve_data_dir)
from .sources import download_batches, load_batches, load_image_folders

__all__ = ["BATCHES", "CACHE_VERSION", "CLASSES", "DEFAULT_DATA_DIR", "HOLDOUT_SEED", "SPLITS",
           "TRAIN_EVAL_SEED", "TRAIN_EVAL_SIZE", "CifarData", "DataError", "check_data_dir",
           "holdout", "holdout_index", "load_cifar10", "resolve_data_dir", "subset", "synthetic",
           "train_eval_index"]


def load_cifar10(data_dir=None, *, download: bool = False, cache_dir=None) -> CifarData:
    """Both CIFAR-10 splits from `data_dir` (image folders first, else torchvision's pickles)."""
    root = check_data_dir(data_dir, download=download)
    if (root / "train").is_dir():
        return load_image_folders(root, cache_dir)
    if download and not (root / BATCHES).is_dir():
        download_batches(root)
    if (root / BATCHES).is_dir():
        return load_batches(root / BATCHES)
    raise DataError(f"data dir {root}: torchvision's download left no {BATCHES}/")


def subset(data: CifarData, fraction: float, seed: int) -> CifarData:
    """The training split cut to `fraction` of every class (seeded, original order); test whole.

    Each class keeps round(fraction * count) samples, at least one.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"data_fraction={fraction!r} must be in (0, 1]")
    if fraction == 1:
        return data
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for label in torch.unique(data.train_y).tolist():
        index = torch.nonzero(data.train_y == label).squeeze(1)
        count = max(1, round(fraction * len(index)))
        kept.append(index[torch.randperm(len(index), generator=generator)[:count]])
    keep = torch.cat(kept).sort().values
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])


HOLDOUT_SEED = 4_711  # one fixed draw: every trial of a run holds out the very same images


def holdout_index(labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) sorted row indices: `size` rows held out, stratified by class, seeded.

    Class c gives round(size * n_c / n) rows (largest remainders settle the rounding, so balanced
    classes give equal shares when size divides evenly) and keeps at least one training image.
    """
    n = len(labels)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < n:
        raise DataError(f"val_size={size!r} is not allowed; use an integer in [0, {n}) "
                        f"(the training split has {n} images)")
    classes, counts = torch.unique(labels, return_counts=True)
    shares = _shares(counts, size)
    if (shares >= counts).any():
        label = classes[shares >= counts][0].item()
        raise DataError(f"val_size={size} leaves class {label} no training image; "
                        f"use a smaller val_size")
    generator = torch.Generator().manual_seed(HOLDOUT_SEED)
    held = []
    for label, share in zip(classes.tolist(), shares.tolist()):
        index = torch.nonzero(labels == label).squeeze(1)
        held.append(index[torch.randperm(len(index), generator=generator)[:share]])
    held = torch.cat(held).sort().values
    kept = torch.ones(n, dtype=torch.bool)
    kept[held] = False
    return torch.nonzero(kept).squeeze(1), held


def _shares(counts: torch.Tensor, size: int) -> torch.Tensor:
    """size split over classes in proportion to counts, whole numbers summing to size."""
    exact = size * counts.double() / counts.sum()
    shares = exact.floor().long()
    extra = torch.argsort(exact - shares, descending=True, stable=True)[:size - int(shares.sum())]
    shares[extra] += 1
    return shares


def holdout(data: CifarData, size: int) -> tuple[CifarData, torch.Tensor, torch.Tensor]:
    """(data without the held-out training images, their images, their labels); test untouched.

    The validation split a search selects on: never trained on, the same for every trial.
    """
    kept, held = holdout_index(data.train_y, size)
    if size == 0:
        return data, data.train_x[held], data.train_y[held]
    train = dataclasses.replace(data, train_x=data.train_x[kept], train_y=data.train_y[kept])
    return train, data.train_x[held], data.train_y[held]


TRAIN_EVAL_SIZE = 10_000  # images of the training split re-scored in eval mode every epoch
TRAIN_EVAL_SEED = 20_231  # one fixed draw, so every trial on the same images scores the same ones


def train_eval_index(n_train: int, size: int = TRAIN_EVAL_SIZE) -> torch.Tensor:
    """A fixed, seeded choice of `size` rows (all when fewer) of a trial's training images.

    Accuracy and loss on them in eval mode (no dropout, no augmentation) measure what the model
    fits, free of the train-mode noise that dropout and augmentation add to `train_acc`.
    """
    if n_train <= size:
        return torch.arange(n_train)
    generator = torch.Generator().manual_seed(TRAIN_EVAL_SEED)
    return torch.randperm(n_train, generator=generator)[:size].sort().values


def synthetic(n_train: int = 512, n_test: int = 256, seed: int = 0, *, size: int = 32) -> CifarData:
    """Tiny learnable fake data for tests: a smooth colour pattern per class plus pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(len(CLASSES), 3, 4, 4, generator=generator)
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    patterns = 48 + 160 * patterns

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=generator)]
        noise = 40 * torch.randn(n, 3, size, size, generator=generator)
        return (patterns[y] + noise).clamp(0, 255).round().to(torch.uint8), y

    return CifarData(*split(n_train), *split(n_test))
